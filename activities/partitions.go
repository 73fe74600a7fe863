package activities

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

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
}

// EnsurePartitions creates the missing monthly partitions between the oldest
// eligible row and the cut-off. Concurrent callers serialise on an advisory
// lock, so two workers never race to create the same partition.
func (a *Activities) EnsurePartitions(ctx context.Context, in EnsurePartitionsInput) (EnsurePartitionsResult, error) {
	t, err := tableFor(in.Table)
	if err != nil {
		return EnsurePartitionsResult{}, err
	}
	if err := preflight(ctx, a.DB, t); err != nil {
		return EnsurePartitionsResult{}, err
	}
	created, oldest, err := ensurePartitions(ctx, a.DB, t, in.After, in.Cutoff)
	if err != nil {
		return EnsurePartitionsResult{}, err
	}
	if a.Metrics != nil {
		a.Metrics.Remaining(t.Name, estimateEligible(ctx, a.DB, t, in.After, in.Cutoff))
	}
	return EnsurePartitionsResult{Created: created, Oldest: utc(oldest)}, nil
}

type querier interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func ensurePartitions(ctx context.Context, db querier, t policy.Table, after, cutoff time.Time) ([]string, *time.Time, error) {
	oldest, err := oldestEligible(ctx, db, t, after, cutoff)
	if err != nil || oldest == nil {
		return nil, oldest, err
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("ensure partitions of %s: %w", t.Archive, err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	// Creating a partition locks the parent; never queue behind long
	// readers. Partitions are made as the worker role, so that they have
	// one owner whichever worker login made them (retention drops them).
	if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '5s'; SET LOCAL ROLE `+WorkerRole); err != nil {
		return nil, nil, fmt.Errorf("ensure partitions of %s: %w", t.Archive, err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('archiver.partitions.' || $1))`, t.Archive); err != nil {
		return nil, nil, fmt.Errorf("lock partitions of %s: %w", t.Archive, err)
	}
	existing, err := partitionNames(ctx, tx, t)
	if err != nil {
		return nil, nil, err
	}
	var created []string
	for _, m := range months(*oldest, cutoff) {
		name := PartitionName(t, m)
		if existing[name] {
			continue
		}
		if _, err := tx.Exec(ctx, createPartitionSQL(t, m)); err != nil {
			return nil, nil, overlapError(err, name)
		}
		created = append(created, name)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, nil, fmt.Errorf("ensure partitions of %s: %w", t.Archive, err)
	}
	return created, oldest, nil
}

// oldestEligible reads the oldest timestamp in [after, cutoff) (an index seek).
func oldestEligible(ctx context.Context, db querier, t policy.Table, after, cutoff time.Time) (*time.Time, error) {
	var oldest *time.Time
	sql := fmt.Sprintf(`SELECT min(%[1]s) FROM %[2]s WHERE %[1]s < $1 AND %[1]s >= $2`,
		pgx.Identifier{t.TimeColumn}.Sanitize(), pgx.Identifier{t.Live}.Sanitize())
	if err := db.QueryRow(ctx, sql, cutoff, after).Scan(&oldest); err != nil {
		return nil, fmt.Errorf("find oldest eligible row of %s: %w", t.Live, err)
	}
	return oldest, nil
}

// estimateEligible is the planner's estimate of the rows in [after,
// cutoff): free, unlike a count over a 100M-row backlog (0 if unknown).
func estimateEligible(ctx context.Context, db querier, t policy.Table, after, cutoff time.Time) int64 {
	var plan []byte
	sql := fmt.Sprintf(`EXPLAIN (FORMAT JSON) SELECT 1 FROM %[2]s WHERE %[1]s < $1 AND %[1]s >= $2`,
		pgx.Identifier{t.TimeColumn}.Sanitize(), pgx.Identifier{t.Live}.Sanitize())
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

// partitionNames lists the partitions attached to the archive table.
func partitionNames(ctx context.Context, db interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}, t policy.Table) (map[string]bool, error) {
	rows, err := db.Query(ctx, `
		SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = to_regclass($1)`, t.Archive)
	if err != nil {
		return nil, fmt.Errorf("list partitions of %s: %w", t.Archive, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list partitions of %s: %w", t.Archive, err)
	}
	out := make(map[string]bool, len(names))
	for _, n := range names {
		out[n] = true
	}
	return out, nil
}

// months lists the first instant (UTC) of every month from the one holding
// from up to the one holding the last instant before until.
func months(from, until time.Time) []time.Time {
	last := until.UTC().Add(-time.Microsecond)
	if last.Before(from) {
		return nil
	}
	m := monthStart(from)
	end := monthStart(last)
	var out []time.Time
	for !m.After(end) {
		out = append(out, m)
		m = m.AddDate(0, 1, 0)
	}
	return out
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
// in UTC, so the session time zone cannot shift them.
func createPartitionSQL(t policy.Table, month time.Time) string {
	next := month.AddDate(0, 1, 0)
	return fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s PARTITION OF %s FOR VALUES FROM ('%s') TO ('%s')`,
		pgx.Identifier{PartitionName(t, month)}.Sanitize(), pgx.Identifier{t.Archive}.Sanitize(),
		month.Format("2006-01-02 15:04:05+00"), next.Format("2006-01-02 15:04:05+00"))
}
