package activities

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/policy"
)

// EnsurePartitionsInput asks for the monthly archive partitions that rows
// older than Cutoff will go to.
type EnsurePartitionsInput struct {
	Table  string
	Cutoff time.Time
	After  time.Time `json:",omitempty"` // a backfill window's lower bound
}

// WorkerRole is the least-privilege role of migrations/003_worker_role.sql:
// it owns the archive tables and their partitions.
const WorkerRole = "archiver_worker"

// EnsurePartitionsResult names the partitions this call created.
type EnsurePartitionsResult struct {
	Created []string
	// Oldest is the oldest eligible row's timestamp (nil: nothing eligible).
	Oldest *time.Time
	// Reattached names orphaned partitions (detached, never dropped) that
	// were attached again because rows of their month are to be archived.
	Reattached []string `json:",omitempty"`
}

// EnsurePartitions runs the preflight checks, then creates the missing
// monthly partitions for the months that hold eligible rows. Concurrent
// callers serialise on an advisory lock, so two workers never race to create
// the same partition.
func (a *Activities) EnsurePartitions(ctx context.Context, in EnsurePartitionsInput) (EnsurePartitionsResult, error) {
	t, err := tableFor(in.Table)
	if err != nil {
		return EnsurePartitionsResult{}, err
	}
	if _, err := preflight(ctx, a.DB, t); err != nil {
		return EnsurePartitionsResult{}, err
	}
	res, err := ensurePartitions(ctx, a.DB, t, in.After, in.Cutoff)
	if err != nil {
		return EnsurePartitionsResult{}, err
	}
	if a.Metrics != nil {
		a.Metrics.Remaining(t.Name, estimateEligible(ctx, a.DB, t, in.After, in.Cutoff))
	}
	res.Oldest = utc(res.Oldest)
	return res, nil
}

type querier interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func ensurePartitions(ctx context.Context, db querier, t policy.Table, after, cutoff time.Time) (EnsurePartitionsResult, error) {
	var res EnsurePartitionsResult
	needed, err := monthsWithRows(ctx, db, t, after, cutoff)
	if err != nil || len(needed) == 0 {
		return res, err
	}
	res.Oldest = &needed[0].oldest
	tx, err := db.Begin(ctx)
	if err != nil {
		return res, fmt.Errorf("ensure partitions of %s: %w", t.Archive, err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	// Creating a partition locks the parent; never queue behind long
	// readers. Partitions are made as the worker role, so that they have
	// one owner whichever worker login made them (retention drops them).
	if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '5s'; SET LOCAL ROLE `+WorkerRole); err != nil {
		return res, fmt.Errorf("ensure partitions of %s: %w", t.Archive, err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('archiver.partitions.' || $1))`, t.Archive); err != nil {
		return res, fmt.Errorf("lock partitions of %s: %w", t.Archive, err)
	}
	existing, err := partitionsByName(ctx, tx, t)
	if err != nil {
		return res, err
	}
	orphans, err := orphanPartitions(ctx, tx, t)
	if err != nil {
		return res, err
	}
	for _, n := range needed {
		name := PartitionName(t, n.month)
		if _, ok := existing[name]; ok {
			continue
		}
		if _, ok := orphans[name]; ok {
			// Detached but never dropped (a drop that a lock timeout or a
			// crash interrupted): its rows are archived rows of this month.
			// Attach it again rather than lose the month; retention decides
			// its fate at the end of the run.
			if _, err := tx.Exec(ctx, attachPartitionSQL(t, n.month)); err != nil {
				return res, fmt.Errorf("attach the orphaned partition %s again: %w (rename or drop it, then run again)", name, err)
			}
			res.Reattached = append(res.Reattached, name)
			continue
		}
		if _, err := tx.Exec(ctx, createPartitionSQL(t, n.month)); err != nil {
			return res, overlapError(err, name)
		}
		res.Created = append(res.Created, name)
	}
	// CREATE TABLE IF NOT EXISTS skips a name that some other table holds:
	// check that every month needed really has its partition now.
	have, err := partitionsByName(ctx, tx, t)
	if err != nil {
		return res, err
	}
	for _, n := range needed {
		name := PartitionName(t, n.month)
		if p, ok := have[name]; !ok || p.lower == nil || !p.lower.Equal(n.month) {
			return res, invalid("ensure partitions", fmt.Errorf("%s exists but is not the partition of %s for %s (a table of that name made by hand?): rename it, then run again",
				name, t.Archive, n.month.Format("2006-01")))
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return res, fmt.Errorf("ensure partitions of %s: %w", t.Archive, err)
	}
	return res, nil
}

// monthWithRows is a UTC month that holds eligible rows, and the oldest.
type monthWithRows struct {
	month, oldest time.Time
}

// monthsWithRows lists the UTC months holding rows in [after, cutoff),
// oldest first, by skipping from one month's first row to the next month's
// (an index seek per month that has rows): one row dated 1900 costs one
// partition, not one for every month since.
func monthsWithRows(ctx context.Context, db querier, t policy.Table, after, cutoff time.Time) ([]monthWithRows, error) {
	sql := fmt.Sprintf(`
		WITH RECURSIVE m AS (
		    SELECT (SELECT min(%[1]s) FROM %[2]s WHERE %[1]s < $1::timestamptz AND %[1]s >= $2::timestamptz)::timestamptz AS first
		    UNION ALL
		    SELECT (SELECT min(l.%[1]s) FROM %[2]s l
		            WHERE l.%[1]s >= (date_trunc('month', m.first, 'UTC') AT TIME ZONE 'UTC' + interval '1 month') AT TIME ZONE 'UTC'
		              AND l.%[1]s < $1::timestamptz)::timestamptz
		    FROM m WHERE m.first IS NOT NULL
		)
		SELECT first FROM m WHERE first IS NOT NULL`,
		catalog.Quote(t.TimeColumn), catalog.Quote(t.Live))
	rows, err := db.Query(ctx, sql, cutoff, after)
	if err != nil {
		return nil, fmt.Errorf("find the months holding eligible rows of %s: %w", t.Live, err)
	}
	firsts, err := pgx.CollectRows(rows, pgx.RowTo[time.Time])
	if err != nil {
		return nil, fmt.Errorf("find the months holding eligible rows of %s: %w", t.Live, err)
	}
	out := make([]monthWithRows, len(firsts))
	for i, f := range firsts {
		out[i] = monthWithRows{month: monthStart(f), oldest: f.UTC()}
	}
	return out, nil
}

// estimateEligible is the planner's estimate of the rows in [after,
// cutoff): free, unlike a count over a 100M-row backlog (0 if unknown).
func estimateEligible(ctx context.Context, db querier, t policy.Table, after, cutoff time.Time) int64 {
	var plan []byte
	sql := fmt.Sprintf(`EXPLAIN (FORMAT JSON) SELECT 1 FROM %[2]s WHERE %[1]s < $1::timestamptz AND %[1]s >= $2::timestamptz`,
		catalog.Quote(t.TimeColumn), catalog.Quote(t.Live))
	if err := db.QueryRow(ctx, sql, cutoff, after).Scan(&plan); err != nil {
		return 0
	}
	var p []struct {
		Plan struct {
			Rows float64 `json:"Plan Rows"`
		}
	}
	if json.Unmarshal(plan, &p) != nil || len(p) == 0 {
		return 0
	}
	return int64(p[0].Plan.Rows)
}

// partition is one partition of an archive table. Its bounds are read as
// timestamps by the server (nil when it has no timestamp range bound: a
// DEFAULT partition or one made by hand with MINVALUE), never parsed from
// text by the worker.
type partition struct {
	name          string
	isDefault     bool
	lower, upper  *time.Time
	detachPending bool
	// orphan: not attached at all (see orphanPartitions).
	orphan bool
}

// partitionsSQL: pg_get_expr prints a bound in the session's DateStyle and
// time zone; the server casts its own text back to timestamptz under the
// same settings, so the worker gets typed values whatever they are.
const partitionsSQL = `
SELECT c.relname, i.inhdetachpending, pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT',
       b.m[1]::timestamptz, b.m[2]::timestamptz
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
CROSS JOIN LATERAL (SELECT regexp_match(pg_get_expr(c.relpartbound, c.oid),
                    '^FOR VALUES FROM \(''([^'']+)''\) TO \(''([^'']+)''\)$') AS m) b
WHERE i.inhparent = to_regclass($1)
ORDER BY 1`

// archivePartitions lists the partitions attached to t's archive table
// (including one whose detach is pending).
func archivePartitions(ctx context.Context, db interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}, t policy.Table) ([]partition, error) {
	rows, err := db.Query(ctx, partitionsSQL, t.Archive)
	if err != nil {
		return nil, fmt.Errorf("list partitions of %s: %w", t.Archive, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (partition, error) {
		var p partition
		err := r.Scan(&p.name, &p.detachPending, &p.isDefault, &p.lower, &p.upper)
		if p.lower != nil {
			l, u := p.lower.UTC(), p.upper.UTC()
			p.lower, p.upper = &l, &u
		}
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("list partitions of %s: %w", t.Archive, err)
	}
	return out, nil
}

// partitionsByName maps t's archive partitions by name.
func partitionsByName(ctx context.Context, db interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}, t policy.Table) (map[string]partition, error) {
	parts, err := archivePartitions(ctx, db, t)
	if err != nil {
		return nil, err
	}
	out := make(map[string]partition, len(parts))
	for _, p := range parts {
		out[p.name] = p
	}
	return out, nil
}

// retentionKeptComment marks a partition that retention detached and kept
// on purpose (ARCHIVE_RETENTION_MODE=detach); such a table is not an orphan.
const retentionKeptComment = "archiver: detached by retention and kept (ARCHIVE_RETENTION_MODE=detach)"

// orphanPartitions finds tables that carry the name of one of t's monthly
// partitions but are attached to nothing: a partition whose detach
// completed but whose drop did not (a lock timeout, a killed worker). Only
// tables owned by the archive table's owner count, and not those retention
// kept on purpose. It maps each name to its month.
func orphanPartitions(ctx context.Context, db interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}, t policy.Table) (map[string]time.Time, error) {
	rows, err := db.Query(ctx, `
		SELECT c.relname
		FROM pg_class c, pg_class a
		WHERE a.oid = to_regclass($1)
		  AND c.relnamespace = a.relnamespace AND c.relowner = a.relowner
		  AND c.relkind = 'r' AND NOT c.relispartition
		  AND left(c.relname, length(a.relname) + 2) = a.relname || '_y'
		  AND obj_description(c.oid, 'pg_class') IS DISTINCT FROM $2`, t.Archive, retentionKeptComment)
	if err != nil {
		return nil, fmt.Errorf("look for orphaned partitions of %s: %w", t.Archive, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("look for orphaned partitions of %s: %w", t.Archive, err)
	}
	pattern := regexp.MustCompile(`^` + regexp.QuoteMeta(t.Archive) + `_y(\d{4})m(\d{2})$`)
	out := map[string]time.Time{}
	for _, n := range names {
		m := pattern.FindStringSubmatch(n)
		if m == nil {
			continue
		}
		y, _ := strconv.Atoi(m[1])
		mo, _ := strconv.Atoi(m[2])
		if mo < 1 || mo > 12 {
			continue
		}
		month := time.Date(y, time.Month(mo), 1, 0, 0, 0, 0, time.UTC)
		if PartitionName(t, month) == n {
			out[n] = month
		}
	}
	return out, nil
}

func monthStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

// PartitionName is the monthly partition's name: <archive>_yYYYYmMM.
func PartitionName(t policy.Table, month time.Time) string {
	return fmt.Sprintf("%s_y%04dm%02d", t.Archive, month.Year(), int(month.Month()))
}

// createPartitionSQL is DDL, which takes no parameters: the identifiers come
// from the policy and are quoted; the bounds are formatted from time values,
// in UTC and ISO order, so no session setting can shift them.
func createPartitionSQL(t policy.Table, month time.Time) string {
	return fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s PARTITION OF %s FOR VALUES %s`,
		catalog.Quote(PartitionName(t, month)), catalog.Quote(t.Archive), monthBounds(month))
}

// attachPartitionSQL attaches an orphaned monthly partition again. A table
// detached CONCURRENTLY keeps a CHECK constraint equal to its bounds, so
// PostgreSQL skips the validation scan.
func attachPartitionSQL(t policy.Table, month time.Time) string {
	return fmt.Sprintf(`ALTER TABLE %s ATTACH PARTITION %s FOR VALUES %s`,
		catalog.Quote(t.Archive), catalog.Quote(PartitionName(t, month)), monthBounds(month))
}

func monthBounds(month time.Time) string {
	next := month.AddDate(0, 1, 0)
	return fmt.Sprintf(`FROM ('%s') TO ('%s')`, month.Format("2006-01-02 15:04:05+00"), next.Format("2006-01-02 15:04:05+00"))
}
