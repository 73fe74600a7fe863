package activities

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.temporal.io/sdk/activity"

	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/policy"
)

// VacuumInput asks for VACUUM (ANALYZE) of a table's live table after its
// job deleted RowsDeleted rows from it.
type VacuumInput struct {
	Table       string
	Entry       *policy.Table `json:",omitempty"`
	RowsDeleted int64
}

// VacuumResult is what the step did: ran, or why not.
type VacuumResult struct {
	Table string
	// Share is the estimated share of the table's rows the job deleted.
	Share   float64 `json:",omitempty"`
	Ran     bool    `json:",omitempty"`
	Millis  int64   `json:",omitempty"`
	Skipped string  `json:",omitempty"`
	Error   string  `json:",omitempty"`
}

// Note is the one line archive_jobs.vacuum records.
func (v VacuumResult) Note() string {
	switch {
	case v.Error != "":
		return "failed: " + v.Error
	case v.Ran:
		return fmt.Sprintf("ran: VACUUM (ANALYZE) %s after %.1f%% of its rows were deleted, %d ms", v.Table, v.Share*100, v.Millis)
	default:
		return "skipped: " + v.Skipped
	}
}

// vacuumOwnershipSQL lists the relations VACUUM of the table would process
// (the table and, when partitioned, its partitions; pg_partition_tree
// lists nothing for a table that is not partitioned) that the current role
// may not vacuum: PostgreSQL 15 vacuums only what the role owns (or is a
// member of the owner of), or every table for the database owner or a
// superuser; anything else it skips with a WARNING and no error.
const vacuumOwnershipSQL = `
SELECT c.oid::regclass::text, pg_get_userbyid(c.relowner)
FROM (SELECT relid FROM pg_partition_tree(to_regclass($1)) UNION SELECT to_regclass($1)) p
JOIN pg_class c ON c.oid = p.relid
WHERE c.relkind IN ('r', 'p', 'm')
  AND NOT pg_has_role(current_user, c.relowner, 'USAGE')
  AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
  AND NOT pg_has_role(current_user, (SELECT datdba FROM pg_database WHERE datname = current_database()), 'USAGE')
ORDER BY 1`

// rowsBeforeSQL estimates the rows the table had before the job, summed
// over its partitions: pg_class.reltuples, as of the last VACUUM or ANALYZE
// (most often before the run), when known; else the live rows now plus
// those deleted (pg_stat_user_tables.n_live_tup, which lags commits by up
// to seconds).
const rowsBeforeSQL = `
SELECT CASE WHEN bool_and(c.reltuples >= 0) AND sum(c.reltuples) > 0 THEN sum(c.reltuples)
            ELSE COALESCE(sum(s.n_live_tup), 0) + $2 END::bigint
FROM (SELECT relid FROM pg_partition_tree(to_regclass($1)) UNION SELECT to_regclass($1)) p
JOIN pg_class c ON c.oid = p.relid AND c.relkind <> 'p'
LEFT JOIN pg_stat_user_tables s ON s.relid = p.relid`

// VacuumTable runs VACUUM (ANALYZE) on the entry's live table when its job
// deleted more than VacuumShare of the rows it had (see rowsBeforeSQL), so that the space is reusable and the planner's
// statistics describe the table that is left rather than the one before
// the run. VACUUM cannot run in a transaction: it is one statement on a
// pool connection. A role that does not own the table is not let to vacuum
// it (PostgreSQL would only warn and skip): the step says so instead.
func (a *Activities) VacuumTable(ctx context.Context, in VacuumInput) (VacuumResult, error) {
	t, err := entryFor(in.Table, in.Entry)
	if err != nil {
		return VacuumResult{}, err
	}
	res := VacuumResult{Table: t.Live}
	if a.VacuumShare <= 0 {
		res.Skipped = "turned off (ARCHIVE_VACUUM_SHARE=0)"
		return res, nil
	}
	if in.RowsDeleted <= 0 {
		res.Skipped = "no rows deleted"
		return res, nil
	}
	name := catalog.QuoteName(t.Live)
	var before int64
	if err := a.DB.QueryRow(ctx, rowsBeforeSQL, name, in.RowsDeleted).Scan(&before); err != nil {
		return res, fmt.Errorf("vacuum %s: read its row count: %w", t.Live, err)
	}
	res.Share = float64(in.RowsDeleted) / float64(max(before, in.RowsDeleted))
	if res.Share <= a.VacuumShare {
		res.Skipped = fmt.Sprintf("%.1f%% of the rows deleted, not more than ARCHIVE_VACUUM_SHARE=%g (autovacuum's business)", res.Share*100, a.VacuumShare)
		return res, nil
	}
	rows, err := a.DB.Query(ctx, vacuumOwnershipSQL, name)
	if err != nil {
		return res, fmt.Errorf("vacuum %s: read its owners: %w", t.Live, err)
	}
	var notOwned, owners []string
	for rows.Next() {
		var rel, owner string
		if err := rows.Scan(&rel, &owner); err != nil {
			rows.Close()
			return res, fmt.Errorf("vacuum %s: read its owners: %w", t.Live, err)
		}
		notOwned = append(notOwned, rel)
		if !slices.Contains(owners, owner) {
			owners = append(owners, owner)
		}
	}
	if err := rows.Err(); err != nil {
		return res, fmt.Errorf("vacuum %s: read its owners: %w", t.Live, err)
	}
	if len(notOwned) > 0 {
		var role string
		if err := a.DB.QueryRow(ctx, `SELECT current_user`).Scan(&role); err != nil {
			return res, fmt.Errorf("vacuum %s: %w", t.Live, err)
		}
		shown := notOwned[:min(len(notOwned), 3)]
		res.Skipped = fmt.Sprintf("worker role %s does not own %s (owner %s): VACUUM would only warn and skip it; GRANT %s TO %s, or run as the owner",
			role, strings.Join(shown, ", "), strings.Join(owners, ", "), catalog.Quote(owners[0]), catalog.Quote(role))
		if activity.IsActivity(ctx) {
			activity.GetLogger(ctx).Warn("VACUUM (ANALYZE) skipped", "table", t.Live, "share", res.Share, "reason", res.Skipped)
		}
		return res, nil
	}
	stop := keepAlive(ctx, "VACUUM (ANALYZE) "+t.Live)
	defer stop()
	start := time.Now()
	// No arguments: one simple-protocol statement, outside any transaction.
	if _, err := a.DB.Exec(ctx, "VACUUM (ANALYZE) "+name); err != nil {
		return res, fmt.Errorf("VACUUM (ANALYZE) %s: %w", t.Live, err)
	}
	res.Ran, res.Millis = true, time.Since(start).Milliseconds()
	if activity.IsActivity(ctx) {
		activity.GetLogger(ctx).Info("VACUUM (ANALYZE) done", "table", t.Live, "share", res.Share, "millis", res.Millis)
	}
	return res, nil
}
