package activities

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.temporal.io/sdk/activity"

	"github.com/mockupaws/archiver/internal/policy"
)

// Retention modes: what happens to an archive partition past retention.
const (
	RetentionDrop   = "drop"   // detached, then dropped
	RetentionDetach = "detach" // detached and kept as a plain table (for export by hand)
)

// RetentionInput asks for the partitions of Table wholly older than Before.
type RetentionInput struct {
	Table  string
	Before time.Time
	Mode   string
	DryRun bool
}

// RetentionResult names the partitions removed (or, in a dry run, that
// would be).
type RetentionResult struct {
	Mode       string
	Partitions []string `json:",omitempty"`
}

// lockTimeout bounds how long a detach waits for its lock; on timeout it
// gives way to the queries in front and tries again, up to detachAttempts.
const (
	lockTimeout    = "2s"
	detachAttempts = 5
)

// ApplyRetention detaches (and by default drops) every monthly archive
// partition whose upper bound is at or before Before. It uses
// DETACH PARTITION ... CONCURRENTLY, which takes only a SHARE UPDATE
// EXCLUSIVE lock on the parent and cannot run inside a transaction block, so
// it runs here, statement by statement, with a short lock_timeout: a drop
// never holds or queues an ACCESS EXCLUSIVE lock behind long queries. A
// detach a crash interrupted is finished with DETACH ... FINALIZE.
func (a *Activities) ApplyRetention(ctx context.Context, in RetentionInput) (RetentionResult, error) {
	t, err := tableFor(in.Table)
	if err != nil {
		return RetentionResult{}, err
	}
	mode := in.Mode
	if mode == "" {
		mode = RetentionDrop
	}
	if mode != RetentionDrop && mode != RetentionDetach {
		return RetentionResult{}, invalid("apply retention", fmt.Errorf("mode %q: want drop or detach", mode))
	}
	parts, err := expiredPartitions(ctx, a.DB, t, in.Before)
	if err != nil {
		return RetentionResult{}, err
	}
	out := RetentionResult{Mode: mode}
	if in.DryRun {
		for _, p := range parts {
			out.Partitions = append(out.Partitions, p.name)
		}
		return out, nil
	}
	conn, err := a.DB.Acquire(ctx)
	if err != nil {
		return out, fmt.Errorf("apply retention to %s: %w", t.Archive, err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SET lock_timeout = '`+lockTimeout+`'; SET ROLE `+WorkerRole); err != nil {
		return out, fmt.Errorf("apply retention to %s: %w", t.Archive, err)
	}
	defer conn.Exec(context.Background(), `RESET lock_timeout; RESET ROLE`) //nolint:errcheck // the connection goes back to the pool either way
	for _, p := range parts {
		how := "CONCURRENTLY"
		if p.detachPending {
			how = "FINALIZE"
		}
		detach := fmt.Sprintf(`ALTER TABLE %s DETACH PARTITION %s %s`,
			pgx.Identifier{t.Archive}.Sanitize(), pgx.Identifier{p.name}.Sanitize(), how)
		if err := withLockRetries(ctx, func() error { _, err := conn.Exec(ctx, detach); return err }); err != nil {
			return out, fmt.Errorf("detach %s: %w", p.name, err)
		}
		if mode == RetentionDrop {
			drop := fmt.Sprintf(`DROP TABLE IF EXISTS %s`, pgx.Identifier{p.name}.Sanitize())
			if err := withLockRetries(ctx, func() error { _, err := conn.Exec(ctx, drop); return err }); err != nil {
				return out, fmt.Errorf("drop %s: %w", p.name, err)
			}
		}
		out.Partitions = append(out.Partitions, p.name)
		if activity.IsActivity(ctx) {
			activity.RecordHeartbeat(ctx, len(out.Partitions))
		}
	}
	return out, nil
}

// withLockRetries retries f while it fails on lock_timeout (SQLSTATE 55P03),
// waiting a little longer each time.
func withLockRetries(ctx context.Context, f func() error) error {
	var err error
	for i := 0; i < detachAttempts; i++ {
		if err = f(); err == nil {
			return nil
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "55P03" {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(i+1) * time.Second):
		}
	}
	return fmt.Errorf("still waiting for a lock after %d attempts: %w", detachAttempts, err)
}

type partition struct {
	name          string
	upper         time.Time
	detachPending bool
}

var rangeBound = regexp.MustCompile(`^FOR VALUES FROM \('([^']+)'\) TO \('([^']+)'\)$`)

// parseBound reads a timestamptz partition bound as pg_get_expr prints it,
// in the session's time zone (an offset of hours, or hours and minutes),
// and returns it in UTC.
func parseBound(s string) (time.Time, error) {
	for _, layout := range []string{"2006-01-02 15:04:05.999999-07", "2006-01-02 15:04:05.999999-07:00", "2006-01-02 15:04:05.999999-07:00:00"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("partition bound %q is not a timestamp", s)
}

// expiredPartitions lists the range partitions of t's archive whose upper
// bound is at or before before, oldest first. DEFAULT and MINVALUE/MAXVALUE
// partitions are never expired.
func expiredPartitions(ctx context.Context, db querier, t policy.Table, before time.Time) ([]partition, error) {
	rows, err := db.Query(ctx, `
		SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), i.inhdetachpending
		FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = to_regclass($1)`, t.Archive)
	if err != nil {
		return nil, fmt.Errorf("list partitions of %s: %w", t.Archive, err)
	}
	defer rows.Close()
	var out []partition
	for rows.Next() {
		var name, bound string
		var pending bool
		if err := rows.Scan(&name, &bound, &pending); err != nil {
			return nil, fmt.Errorf("list partitions of %s: %w", t.Archive, err)
		}
		m := rangeBound.FindStringSubmatch(bound)
		if m == nil {
			continue
		}
		upper, err := parseBound(m[2])
		if err != nil {
			continue // not a bound this archiver writes; leave it alone
		}
		if !upper.After(before) {
			out = append(out, partition{name: name, upper: upper, detachPending: pending})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].upper.Before(out[j].upper) })
	return out, nil
}
