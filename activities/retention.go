package activities

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/activity"

	"github.com/mockupaws/archiver/internal/catalog"
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
	// Entry is the table's policy entry in force (nil: the built-in table
	// of that name).
	Entry *policy.Table `json:",omitempty"`
}

// RetentionResult names the partitions removed (or, in a dry run, that
// would be), and the exports made of them first.
type RetentionResult struct {
	Mode       string
	Partitions []string `json:",omitempty"`
	// Exports are the s3:// locations the partitions were exported to
	// (entries with an export), in the order of Partitions; "" for an
	// empty partition. ExportedRows and ExportedBytes total them.
	Exports       []string `json:",omitempty"`
	ExportedRows  int64    `json:",omitempty"`
	ExportedBytes int64    `json:",omitempty"`
}

func (r RetentionResult) clone() RetentionResult {
	r.Partitions = append([]string(nil), r.Partitions...)
	r.Exports = append([]string(nil), r.Exports...)
	return r
}

// retentionBeat is retention's heartbeat: what it removed so far (a retry
// goes on from it, and reports it too) and what it is doing now.
type retentionBeat struct {
	Done RetentionResult
	Now  string `json:",omitempty"`
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
	t, err := entryFor(in.Table, in.Entry)
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
	// What earlier attempts of this activity removed (their heartbeats):
	// the result covers the whole step, not only the last attempt.
	if activity.IsActivity(ctx) && activity.HasHeartbeatDetails(ctx) {
		var prev retentionBeat
		if activity.GetHeartbeatDetails(ctx, &prev) == nil && prev.Done.Mode == mode {
			out = prev.Done
		}
	}
	// Heartbeats (some from a keep-alive goroutine) report a copy of what
	// is done, taken after each partition.
	var mu sync.Mutex
	done := out.clone()
	ctx = withBeat(ctx, func(note any) any {
		mu.Lock()
		defer mu.Unlock()
		return retentionBeat{Done: done, Now: fmt.Sprint(note)}
	})
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
	if t.Export != nil {
		if err := settleDropped(ctx, conn, t); err != nil {
			return out, err
		}
	}
	for _, p := range parts {
		if !p.orphan { // an orphan is detached already
			how := "CONCURRENTLY"
			if p.detachPending {
				how = "FINALIZE"
			}
			detach := fmt.Sprintf(`ALTER TABLE %s DETACH PARTITION %s %s`, catalog.QuoteName(t.Archive), partitionIdent(t, p.name), how)
			if err := withLockRetries(ctx, func() error { _, err := conn.Exec(ctx, detach); return err }); err != nil {
				return out, fmt.Errorf("detach %s: %w", p.name, err)
			}
		}
		// Exported after the detach, and dropped only while it still holds
		// exactly the export's rows (dropExported): rows that reached it
		// since (written into the detached table, or moved in by a run
		// that attached it again for late rows of its month) are exported
		// anew first.
		var exp *Export
		if t.Export != nil {
			for round := 1; ; round++ {
				if exp, err = a.exportPartition(ctx, t, p); err != nil {
					return out, fmt.Errorf("export %s before retention (detached and kept; the next run goes on): %w", p.name, err)
				}
				if mode != RetentionDrop {
					break
				}
				why, err := dropExported(ctx, conn, t, p, exp)
				if err != nil {
					return out, fmt.Errorf("drop %s (detached; the next run drops it): %w", p.name, err)
				}
				if why == "" {
					if exp != nil {
						a.exportStep("dropped", exp.Key)
					}
					break
				}
				if round == exportRounds {
					return out, fmt.Errorf("%s changed again after each of %d exports (%s): kept, detached; the next attempt exports it anew", p.name, round, why)
				}
				heartbeat(ctx, fmt.Sprintf("%s changed after its export (%s): exporting it anew", p.name, why))
			}
			loc := ""
			if exp != nil {
				loc = exp.Location()
				out.ExportedRows += exp.Rows
				out.ExportedBytes += exp.Bytes
			}
			out.Exports = append(out.Exports, loc)
		}
		switch {
		case mode == RetentionDrop && t.Export == nil:
			drop := fmt.Sprintf(`DROP TABLE IF EXISTS %s`, partitionIdent(t, p.name))
			if err := withLockRetries(ctx, func() error { _, err := conn.Exec(ctx, drop); return err }); err != nil {
				return out, fmt.Errorf("drop %s (detached; the next run drops it): %w", p.name, err)
			}
		case mode == RetentionDetach:
			// Kept on purpose: not an orphan for later runs to finish.
			mark := fmt.Sprintf(`COMMENT ON TABLE %s IS %s`, partitionIdent(t, p.name), quoteLiteral(retentionKeptComment))
			if _, err := conn.Exec(ctx, mark); err != nil {
				return out, fmt.Errorf("mark %s as kept: %w", p.name, err)
			}
		}
		out.Partitions = append(out.Partitions, p.name)
		mu.Lock()
		done = out.clone()
		mu.Unlock()
		heartbeat(ctx, "removed "+p.name)
	}
	return out, nil
}

// exportRounds bounds how often one attempt exports a partition whose
// rows keep changing before its drop.
const exportRounds = 3

// dropExported drops the detached partition p of t in one transaction
// that first locks it and measures it: only when it holds exactly the rows
// of its verified export exp (none, when exp is nil) does it go, with the
// export marked dropped in the same commit. Otherwise the partition stays,
// exp goes back to uploading (its object is never trusted for the rows the
// partition holds now: exportPartition writes them anew), and why says how
// they differ.
func dropExported(ctx context.Context, conn *pgxpool.Conn, t policy.Table, p partition, exp *Export) (why string, err error) {
	rel := partitionIdent(t, p.name)
	stop := keepAlive(ctx, "drop "+p.name+": checking its rows against its export")
	defer stop()
	err = withLockRetries(ctx, func() error {
		why = ""
		tx, err := conn.Begin(ctx)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback(ctx) }()
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, rel).Scan(&exists); err != nil {
			return err
		}
		if exists {
			if _, err := tx.Exec(ctx, `LOCK TABLE `+rel+` IN ACCESS EXCLUSIVE MODE`); err != nil {
				return err
			}
		}
		now, err := measurePartition(ctx, tx, t, p.name)
		if err != nil {
			return err
		}
		if exp != nil {
			// The manifest as committed, locked: what a restore will hold
			// the object to.
			m, err := scanExport(tx.QueryRow(ctx, `SELECT `+exportColumns+` FROM archive_exports WHERE id = $1 FOR UPDATE`, exp.ID))
			if err != nil {
				return fmt.Errorf("read the export of %s: %w", p.name, err)
			}
			if m.State != ExportVerified {
				return fmt.Errorf("the export of %s is %s, not verified: its partition is kept", p.name, m.State)
			}
			exp = &m
		}
		switch {
		case !now.exists:
			// Dropped by an earlier attempt, or by hand: nothing is left to
			// keep but the export.
		case now.attached:
			return fmt.Errorf("%s was attached to %s again before its drop", p.name, t.Archive)
		default:
			if why = exp.differsFrom(now); why != "" {
				if exp != nil {
					if _, err := tx.Exec(ctx, `UPDATE archive_exports SET state = 'uploading', verified_at = NULL WHERE id = $1 AND state = 'verified'`, exp.ID); err != nil {
						return fmt.Errorf("export %s anew: %w", p.name, err)
					}
				}
				return tx.Commit(ctx)
			}
			if _, err := tx.Exec(ctx, `DROP TABLE `+rel); err != nil {
				return err
			}
		}
		if exp != nil {
			tag, err := tx.Exec(ctx, `UPDATE archive_exports SET state = 'dropped', dropped_at = now() WHERE id = $1 AND state = 'verified'`, exp.ID)
			if err != nil {
				return fmt.Errorf("record the drop of %s: %w", p.name, err)
			}
			if tag.RowsAffected() != 1 {
				return fmt.Errorf("the export of %s is no longer verified", p.name)
			}
		}
		return tx.Commit(ctx)
	})
	return why, err
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

// expiredPartitions lists the monthly partitions of t's archive whose
// upper bound is at or before before, oldest first, and the orphaned ones
// (detached, never dropped) of such months. DEFAULT partitions and those
// without timestamp bounds are never expired.
func expiredPartitions(ctx context.Context, db catalog.Querier, t policy.Table, before time.Time) ([]partition, error) {
	parts, err := archivePartitions(ctx, db, t)
	if err != nil {
		return nil, err
	}
	var out []partition
	for _, p := range parts {
		if p.upper != nil && !p.upper.After(before) {
			out = append(out, p)
		}
	}
	orphans, err := orphanPartitions(ctx, db, t)
	if err != nil {
		return nil, err
	}
	for name, start := range orphans {
		upper := periodEnd(t, start)
		if !upper.After(before) {
			out = append(out, partition{name: name, lower: &start, upper: &upper, orphan: true})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].upper.Before(*out[j].upper) })
	return out, nil
}

// quoteLiteral quotes a constant string for DDL, which takes no parameters.
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
