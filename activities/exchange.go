package activities

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/policy"
)

// Partition exchange (docs/design.md): where the live table is partitioned
// by RANGE on its time column and a whole live partition, spanning exactly
// one archive partition's period, lies before the cut-off, it moves as one
// unit instead of row by row:
//
//  1. claim a ledger row (kind 'partition', the partition's oid, where it
//     was);
//  2. prove from the catalogue that the ATTACH below will succeed
//     (exchange_proof.go); if not, nothing is detached;
//  3. DETACH PARTITION … CONCURRENTLY from the live table (FINALIZE when a
//     crash left it pending); PostgreSQL adds a CHECK constraint equal to its
//     bounds, so the attach below needs no validation scan;
//  4. add the archive columns with constant defaults (archived_at, the
//     batch id): no rewrite; give it the archive's name and schema (an
//     empty archive partition holding that name is removed first); build
//     the archive's indexes on it (only it is locked);
//  5. in one transaction: drop the foreign keys it kept from the live
//     table (recorded in the ledger row: an archived row must neither follow
//     a cascade nor hold back the application's deletes), give it the
//     archive's owner, and ATTACH PARTITION to the archive (which then only
//     links the indexes);
//  6. complete the ledger row with the partition's rows and bytes.
//
// Each step is recognised from the catalogue (where the oid is attached,
// which columns it has), so a retry or a crash at any step resumes forward
// and the partition is never lost or counted twice. A step that fails for
// good after the detach puts the partition back into the live table
// (returnPartition), and its ledger row becomes 'returned': the partition
// is never left in neither table. Every DDL step runs under a lock_timeout
// and is timed: the longest is reported.

// ExchangeCandidate is a live partition that can move whole.
type ExchangeCandidate struct {
	Partition string // schema-qualified name, as regclass prints it
	OID       uint32
	Lower     time.Time
	Upper     time.Time
	// BatchID is set for an exchange an earlier run left unfinished: it
	// resumes under its own ledger row.
	BatchID string `json:",omitempty"`
}

// ListExchangeableInput asks for the live partitions of Table that lie
// wholly in [After, Cutoff).
type ListExchangeableInput struct {
	Table  string
	Entry  *policy.Table `json:",omitempty"`
	Cutoff time.Time
	After  time.Time `json:",omitzero"`
}

// ListExchangeableResult lists the candidates, and why the others in range
// move by batches instead.
type ListExchangeableResult struct {
	Candidates []ExchangeCandidate `json:",omitempty"`
	Skipped    []string            `json:",omitempty"`
}

// ListExchangeable runs the preflight checks batches run (EnsurePartitions)
// and finds the live partitions that can be exchanged whole. Exchanges an
// earlier run left unfinished that this one does not resume (the table no
// longer qualifies) are put back into the live table first.
func (a *Activities) ListExchangeable(ctx context.Context, in ListExchangeableInput) (ListExchangeableResult, error) {
	t, err := entryFor(in.Table, in.Entry)
	if err != nil {
		return ListExchangeableResult{}, err
	}
	if _, err := preflight(ctx, a.DB, t); err != nil {
		if serr := a.settleExchanges(ctx, t, nil, "the preflight refuses "+t.Live); serr != nil {
			// Retried: the refusal stands once the partitions are back.
			return ListExchangeableResult{}, fmt.Errorf("%s; and the unfinished exchanges could not be undone: %w", errorText(err), serr)
		}
		return ListExchangeableResult{}, err
	}
	out, err := listExchangeable(ctx, a.DB, t, in.After, in.Cutoff)
	if err != nil {
		return out, err
	}
	resumed := map[string]bool{}
	for _, c := range out.Candidates {
		if c.BatchID != "" {
			resumed[c.BatchID] = true
		}
	}
	return out, a.settleExchanges(ctx, t, resumed, "the entry no longer exchanges this partition")
}

func listExchangeable(ctx context.Context, db catalog.Querier, t policy.Table, after, cutoff time.Time) (ListExchangeableResult, error) {
	var out ListExchangeableResult
	if t.ModeOf() != policy.ModeMove {
		return out, nil
	}
	s, err := inspect(ctx, db, t)
	if err != nil {
		return out, err
	}
	if s.live.Kind != catalog.Partitioned {
		return out, nil
	}
	var byTime bool
	if err := db.QueryRow(ctx, `
		SELECT p.partstrat = 'r' AND p.partnatts = 1 AND a.attname = $2
		FROM pg_partitioned_table p JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
		WHERE p.partrelid = $1::regclass`, catalog.QuoteName(t.Live), t.TimeColumn).Scan(&byTime); err != nil {
		return out, fmt.Errorf("read the partition key of %s: %w", t.Live, err)
	}
	if !byTime {
		return out, nil // partitioned by something else: batches
	}
	// What keeps every partition from being attached to the archive.
	why, err := columnsBlocker(ctx, db, t, s, s.live.OID, false)
	if err != nil {
		return out, err
	}
	if why != "" {
		out.Skipped = append(out.Skipped, why)
		return out, nil
	}
	var member bool
	if err := db.QueryRow(ctx, `
		SELECT pg_has_role(CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $2) THEN $2 ELSE current_user END,
		                   (SELECT relowner FROM pg_class WHERE oid = $1::regclass), 'USAGE')`, catalog.QuoteName(t.Live), WorkerRole).Scan(&member); err != nil {
		return out, fmt.Errorf("check ownership of %s: %w", t.Live, err)
	}
	rows, err := db.Query(ctx, `
		SELECT c.oid::regclass::text, c.oid::int8, c.relkind = 'p', pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT',
		       b.m[1]::timestamptz, b.m[2]::timestamptz, i.inhdetachpending
		FROM pg_inherits i
		JOIN pg_class c ON c.oid = i.inhrelid
		CROSS JOIN LATERAL (SELECT regexp_match(pg_get_expr(c.relpartbound, c.oid),
		                    '^FOR VALUES FROM \(''([^'']+)''\) TO \(''([^'']+)''\)$') AS m) b
		WHERE i.inhparent = $1::regclass
		ORDER BY 5 NULLS LAST`, catalog.QuoteName(t.Live))
	if err != nil {
		return out, fmt.Errorf("list the partitions of %s: %w", t.Live, err)
	}
	type livePart struct {
		name           string
		oid            int64
		sub, isDefault bool
		lower, upper   *time.Time
		detachPending  bool
	}
	parts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (livePart, error) {
		var p livePart
		return p, r.Scan(&p.name, &p.oid, &p.sub, &p.isDefault, &p.lower, &p.upper, &p.detachPending)
	})
	if err != nil {
		return out, fmt.Errorf("list the partitions of %s: %w", t.Live, err)
	}
	// Exchanges an earlier run left unfinished come first: their partition
	// may be detached already, no longer listed under the live table. One
	// that could not be attached any more is not resumed (and is put back).
	resumed, err := unfinishedExchanges(ctx, db, t)
	if err != nil {
		return out, err
	}
	for _, c := range resumed {
		reason := ""
		if len(t.Where) > 0 {
			reason = whereReason
		} else if reason, err = attachBlocker(ctx, db, t, s, c.OID, c.Lower); err != nil {
			return out, err
		}
		if reason != "" {
			out.Skipped = append(out.Skipped, fmt.Sprintf("%s: %s (its unfinished exchange is undone)", c.Partition, reason))
			continue
		}
		out.Candidates = append(out.Candidates, c)
	}
	// Partitions an exchange had to put back move by batches from then on.
	returned := map[int64]string{}
	rrows, err := db.Query(ctx, `
		SELECT partition_oid::int8, COALESCE(note, '') FROM archive_batches
		WHERE table_name = $1 AND kind = 'partition' AND state = 'returned' AND partition_oid IS NOT NULL`, t.Live)
	if err != nil {
		return out, fmt.Errorf("find the returned exchanges of %s: %w", t.Live, err)
	}
	var roid int64
	var note string
	if _, err := pgx.ForEachRow(rrows, []any{&roid, &note}, func() error { returned[roid] = note; return nil }); err != nil {
		return out, fmt.Errorf("find the returned exchanges of %s: %w", t.Live, err)
	}
	holds, err := activeHolds(ctx, db, t)
	if err != nil {
		return out, err
	}
	for _, p := range parts {
		if slices.ContainsFunc(resumed, func(c ExchangeCandidate) bool { return int64(c.OID) == p.oid }) {
			continue
		}
		if p.isDefault || p.lower == nil || p.upper.After(cutoff) || !after.IsZero() && p.lower.Before(after) {
			continue // not wholly eligible: its rows move by batches
		}
		lo, hi := p.lower.UTC(), p.upper.UTC()
		if note, ok := returned[p.oid]; ok {
			out.Skipped = append(out.Skipped, fmt.Sprintf("%s: an earlier exchange put it back (%s)", p.name, note))
			continue
		}
		switch {
		case len(t.Where) > 0:
			out.Skipped = append(out.Skipped, p.name+": "+whereReason)
			continue
		case overlapsHold(holds, lo, hi):
			out.Skipped = append(out.Skipped, p.name+": a restore holds part of it (its other rows move by batches)")
			continue
		case p.sub:
			out.Skipped = append(out.Skipped, p.name+": sub-partitioned")
			continue
		case !lo.Equal(periodStart(t, lo)) || !hi.Equal(periodEnd(t, lo)):
			out.Skipped = append(out.Skipped, fmt.Sprintf("%s: its bounds are not one archive %s", p.name, t.PartitionSpan()))
			continue
		case !member:
			out.Skipped = append(out.Skipped, fmt.Sprintf("%s: %s is not a member of the owner of %s (GRANT that role TO %s to exchange whole partitions)", p.name, WorkerRole, t.Live, WorkerRole))
			continue
		}
		why, err := attachBlocker(ctx, db, t, s, uint32(p.oid), lo)
		if err != nil {
			return out, err
		}
		if why != "" {
			out.Skipped = append(out.Skipped, p.name+": "+why)
			continue
		}
		out.Candidates = append(out.Candidates, ExchangeCandidate{Partition: p.name, OID: uint32(p.oid), Lower: lo, Upper: hi})
	}
	return out, nil
}

// whereReason: an entry with conditions keeps some rows of a partition
// live, and an exchange moves a partition whole or not at all.
const whereReason = "the entry's where conditions keep some of its rows live, and an exchange would move them all: its due rows move by batches"

// unfinishedExchanges lists the exchanges of t's live table that an
// earlier run claimed and did not complete, oldest first.
func unfinishedExchanges(ctx context.Context, db catalog.Querier, t policy.Table) ([]ExchangeCandidate, error) {
	pending, err := db.Query(ctx, `
		SELECT batch_id::text, partition_oid::int8, COALESCE(partition_name, ''), min_ts, max_ts
		FROM archive_batches WHERE table_name = $1 AND kind = 'partition' AND state = 'exchanging'
		ORDER BY min_ts`, t.Live)
	if err != nil {
		return nil, fmt.Errorf("find unfinished exchanges of %s: %w", t.Live, err)
	}
	out, err := pgx.CollectRows(pending, func(r pgx.CollectableRow) (ExchangeCandidate, error) {
		var c ExchangeCandidate
		var oid int64
		err := r.Scan(&c.BatchID, &oid, &c.Partition, &c.Lower, &c.Upper)
		c.OID, c.Lower, c.Upper = uint32(oid), c.Lower.UTC(), c.Upper.UTC()
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("find unfinished exchanges of %s: %w", t.Live, err)
	}
	return out, nil
}

// ExchangeInput names one live partition to exchange under BatchID.
type ExchangeInput struct {
	Table     string
	Entry     *policy.Table `json:",omitempty"`
	JobID     string
	BatchID   string
	Partition ExchangeCandidate
}

// ExchangeStep is one DDL step and how long it held its lock.
type ExchangeStep struct {
	Step   string
	Millis int64
}

// ExchangeResult is what the exchange moved, as the ledger records it.
type ExchangeResult struct {
	BatchID   string
	Partition string // its name in the archive
	Rows      int64
	Bytes     int64
	MinTS     *time.Time `json:",omitempty"`
	MaxTS     *time.Time `json:",omitempty"`
	Replayed  bool       `json:",omitempty"`
	Steps     []ExchangeStep
	// LongestLockMillis is the longest any step held a lock.
	LongestLockMillis int64
}

// ExchangePartition moves one live partition to the archive whole.
func (a *Activities) ExchangePartition(ctx context.Context, in ExchangeInput) (ExchangeResult, error) {
	res := ExchangeResult{BatchID: in.BatchID}
	t, err := entryFor(in.Table, in.Entry)
	if err != nil {
		return res, err
	}
	if _, err := ensureArchiveTable(ctx, a.DB, t); err != nil {
		return res, err
	}
	if done, err := a.claimExchange(ctx, t, in, &res); err != nil || done {
		return res, err
	}
	conn, err := a.DB.Acquire(ctx)
	if err != nil {
		return res, err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SET lock_timeout = '`+lockTimeout+`'; SET ROLE `+WorkerRole); err != nil {
		return res, fmt.Errorf("exchange %s: %w", in.Partition.Partition, err)
	}
	defer conn.Exec(context.Background(), `RESET lock_timeout; RESET ROLE`) //nolint:errcheck // back to the pool either way
	// An entry that no longer exchanges gets its partition back.
	switch {
	case t.ModeOf() != policy.ModeMove:
		return res, a.giveBack(ctx, conn, t, in, &res, "the entry's mode is "+t.ModeOf())
	case len(t.Where) > 0:
		return res, a.giveBack(ctx, conn, t, in, &res, whereReason)
	}
	oid := in.Partition.OID
	target := PartitionName(t, in.Partition.Lower)
	step := ""
	for range 8 { // each pass takes one step forward; 6 suffice
		st, err := exchangeState(ctx, conn, t, oid, in.BatchID)
		if err != nil {
			return res, err
		}
		var sql string
		var run func() error
		switch {
		case st.where == "live" && st.detachPending:
			step, sql = "detach-finalize", fmt.Sprintf(`ALTER TABLE %s DETACH PARTITION %s FINALIZE`, catalog.QuoteName(t.Live), st.ident)
		case st.where == "live":
			// Nothing leaves the live table that could not be attached to
			// the archive.
			why, err := a.attachProof(ctx, conn, t, oid, in.Partition.Lower)
			if err != nil {
				return res, err
			}
			if why != "" {
				return res, a.giveBack(ctx, conn, t, in, &res, why)
			}
			step, sql = "detach", fmt.Sprintf(`ALTER TABLE %s DETACH PARTITION %s CONCURRENTLY`, catalog.QuoteName(t.Live), st.ident)
			if st.liveHasDefault {
				// PostgreSQL refuses CONCURRENTLY beside a DEFAULT partition:
				// a plain detach, instant, under the lock_timeout.
				sql = fmt.Sprintf(`ALTER TABLE %s DETACH PARTITION %s`, catalog.QuoteName(t.Live), st.ident)
			}
		case st.where == "archive":
			return res, a.completeExchange(ctx, t, in, st.ident, &res)
		case !st.hasArchiveColumns:
			// Constant defaults: no rewrite. The CHECK constraint equal to
			// the archive bound lets ATTACH skip its validation scan (a
			// concurrent detach adds one itself; a plain one does not);
			// validating it scans this table, which nobody uses any more.
			step = "add-archive-columns"
			sql = fmt.Sprintf(`ALTER TABLE %[1]s ADD COLUMN IF NOT EXISTS archived_at timestamptz NOT NULL DEFAULT %[2]s,
				ADD COLUMN IF NOT EXISTS archive_batch_id uuid NOT NULL DEFAULT %[3]s,
				ADD CONSTRAINT %[4]s CHECK (%[5]s >= %[6]s AND %[5]s < %[7]s);
				ALTER TABLE %[1]s ALTER COLUMN archived_at DROP DEFAULT, ALTER COLUMN archive_batch_id DROP DEFAULT`,
				st.ident, quoteLiteral(st.claimedAt.UTC().Format("2006-01-02 15:04:05.999999+00")), quoteLiteral(in.BatchID),
				catalog.Quote(boundsConstraint(oid)), catalog.Quote(t.TimeColumn),
				quoteLiteral(in.Partition.Lower.Format("2006-01-02 15:04:05+00")), quoteLiteral(in.Partition.Upper.Format("2006-01-02 15:04:05+00")))
		case st.name != target || st.schema != st.archiveSchema:
			step = "rename"
			sql = ""
			if st.schema != st.archiveSchema {
				sql += fmt.Sprintf(`ALTER TABLE %s SET SCHEMA %s; `, st.ident, catalog.Quote(st.archiveSchema))
			}
			if st.name != target {
				sql += fmt.Sprintf(`ALTER TABLE %s RENAME TO %s`, catalog.Quote(st.archiveSchema)+"."+catalog.Quote(st.name), catalog.Quote(target))
			}
			// An empty archive partition of the period (made by an earlier
			// run's batches, or emptied by a restore) gives up its name
			// first.
			run = func() error {
				if err := dropEmptyArchivePartition(ctx, conn, t, in.Partition.Lower, oid); err != nil {
					return err
				}
				_, err := conn.Exec(ctx, sql)
				return err
			}
		case len(st.missingIndexes) > 0:
			// The archive's own indexes, built on the detached table (which
			// only this step locks) before ATTACH, which would otherwise
			// build them holding the archive's partition list.
			step, sql = "index", strings.Join(st.missingIndexes, "; ")
		default:
			step = "attach"
			run = func() error { return a.attach(ctx, conn, t, in, st) }
		}
		if run == nil {
			run = func() error { _, err := conn.Exec(ctx, sql); return err }
		}
		began := time.Now()
		if err := withLockRetries(ctx, run); err != nil {
			if !cannotHeal(err) {
				return res, fmt.Errorf("exchange %s, step %s: %w", in.Partition.Partition, step, err) // a retry goes on from here
			}
			return res, a.giveBack(ctx, conn, t, in, &res, fmt.Sprintf("step %s failed: %s", step, errorText(err)))
		}
		ms := time.Since(began).Milliseconds()
		res.Steps = append(res.Steps, ExchangeStep{Step: step, Millis: ms})
		res.LongestLockMillis = max(res.LongestLockMillis, ms)
		// Kept across attempts: a crash does not forget the longest lock.
		if _, err := a.DB.Exec(ctx, `UPDATE archive_batches SET lock_ms = GREATEST(COALESCE(lock_ms, 0), $2) WHERE batch_id = $1`, in.BatchID, ms); err != nil {
			return res, err
		}
		if activity.IsActivity(ctx) {
			activity.RecordHeartbeat(ctx, step)
		}
		if a.AfterExchangeStep != nil {
			a.AfterExchangeStep(step)
		}
	}
	return res, a.giveBack(ctx, conn, t, in, &res, fmt.Sprintf("the exchange did not converge (last step %s)", step))
}

// boundsConstraint names the CHECK constraint equal to the partition's
// bounds that the exchange adds.
func boundsConstraint(oid uint32) string { return fmt.Sprintf("archiver_bounds_%d", oid) }

// attachProof reads the catalogue again right before the detach: the
// listing ran earlier (and, for a declared entry's first run, before its
// archive table existed).
func (a *Activities) attachProof(ctx context.Context, conn *pgxpool.Conn, t policy.Table, oid uint32, lower time.Time) (string, error) {
	s, err := inspect(ctx, conn, t)
	if err != nil {
		return "", err
	}
	return attachBlocker(ctx, conn, t, s, oid, lower)
}

// attachBlocker says why the live partition oid could not be attached to
// the archive, "" when the catalogue shows nothing in the way.
func attachBlocker(ctx context.Context, db catalog.Querier, t policy.Table, s shape, oid uint32, lower time.Time) (string, error) {
	why, err := columnsBlocker(ctx, db, t, s, oid, true)
	if err != nil || why != "" {
		return why, err
	}
	return partitionBlocker(ctx, db, t, s, oid, lower)
}

// attach drops the foreign keys the detached partition kept from the live
// table (recording their names in the ledger row), gives it the archive's
// owner and attaches it, in one transaction: until it commits, the
// partition is consistent with the tables it referenced (a cascade still
// reaches it), and a failed attach leaves it as it was, ready to go back.
func (a *Activities) attach(ctx context.Context, conn *pgxpool.Conn, t policy.Table, in ExchangeInput, st exchangeStateOf) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if len(st.foreignKeys) > 0 {
		var drops []string
		for _, fk := range st.foreignKeys {
			drops = append(drops, "DROP CONSTRAINT "+catalog.Quote(fk))
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf(`ALTER TABLE %s %s`, st.ident, strings.Join(drops, ", "))); err != nil {
			return fmt.Errorf("drop the foreign keys of %s: %w", st.ident, err)
		}
		if _, err := tx.Exec(ctx, `
			UPDATE archive_batches SET dropped_constraints = ARRAY(SELECT DISTINCT unnest(COALESCE(dropped_constraints, '{}') || $2::text[]) ORDER BY 1)
			WHERE batch_id = $1`, in.BatchID, st.foreignKeys); err != nil {
			return fmt.Errorf("record the foreign keys dropped from %s: %w", st.ident, err)
		}
	}
	if !st.ownedByWorker {
		if _, err := tx.Exec(ctx, fmt.Sprintf(`ALTER TABLE %s OWNER TO %s`, st.ident, WorkerRole)); err != nil {
			return err
		}
	}
	if _, err := tx.Exec(ctx, fmt.Sprintf(`ALTER TABLE %s ATTACH PARTITION %s FOR VALUES %s`, catalog.QuoteName(t.Archive), st.ident, periodBounds(t, in.Partition.Lower))); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// cannotHeal: the server refused a step for a reason a retry does not
// change (a name taken, a constraint violated, a privilege missing), or
// the exchange could not go on. Lock and statement timeouts, deadlocks,
// serialization failures, lost connections and resource shortages heal.
func cannotHeal(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "40001", pgErr.Code == "40P01", pgErr.Code == "55P03", pgErr.Code == "57014",
			strings.HasPrefix(pgErr.Code, "08"), strings.HasPrefix(pgErr.Code, "53"), strings.HasPrefix(pgErr.Code, "57P"):
			return false
		}
		return true
	}
	var appErr *temporal.ApplicationError
	return errors.As(err, &appErr)
}

// giveBack puts the partition back into the live table (returnPartition),
// closes its ledger row as 'returned' with why, and answers with an error
// that says so. If the partition turns out attached to the archive
// already, the exchange is complete instead.
func (a *Activities) giveBack(ctx context.Context, conn *pgxpool.Conn, t policy.Table, in ExchangeInput, res *ExchangeResult, why string) error {
	attached, detached, err := a.returnPartition(ctx, conn, t, in, why)
	if err != nil {
		return fmt.Errorf("%s; and putting %s back into %s failed: %w", why, in.Partition.Partition, t.Live, err)
	}
	if attached != "" {
		return a.completeExchange(ctx, t, in, attached, res)
	}
	if !detached {
		return invalid("exchange", fmt.Errorf("%s was not exchanged: %s; nothing was detached, and its rows move by batches", in.Partition.Partition, why))
	}
	return invalid("exchange", fmt.Errorf("%s was not exchanged: %s; it is back in %s with all its rows, which move by batches", in.Partition.Partition, why, t.Live))
}

// errorText is an error's message without the retry policy an
// application error adds to it.
func errorText(err error) string {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return appErr.Message()
	}
	return err.Error()
}

// claimExchange claims the ledger row, or answers from it when the
// exchange committed before (done), or refuses when it was undone.
func (a *Activities) claimExchange(ctx context.Context, t policy.Table, in ExchangeInput, res *ExchangeResult) (bool, error) {
	var state, kind, note string
	var oid *int64
	err := a.DB.QueryRow(ctx, `
		INSERT INTO archive_batches (batch_id, job_id, table_name, cutoff, batch_limit, kind, state, partition_oid, partition_name, min_ts, max_ts, partition_origin)
		VALUES ($1, $2, $3, $4, 0, 'partition', 'exchanging', $5, $6, $7, $4,
		        (SELECT ARRAY[n.nspname::text, c.relname::text] FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $5::oid))
		ON CONFLICT (batch_id) DO UPDATE
		SET job_id = CASE WHEN archive_batches.state = 'exchanging' THEN EXCLUDED.job_id ELSE archive_batches.job_id END
		RETURNING state, kind, partition_oid::int8, COALESCE(note, '')`, in.BatchID, in.JobID, t.Live, in.Partition.Upper, int64(in.Partition.OID), in.Partition.Partition, in.Partition.Lower).
		Scan(&state, &kind, &oid, &note)
	if err != nil {
		return false, fmt.Errorf("claim exchange of %s: %w", in.Partition.Partition, err)
	}
	if kind != "partition" || oid == nil || uint32(*oid) != in.Partition.OID {
		return false, temporal.NewNonRetryableApplicationError(fmt.Sprintf("batch id %s is already recorded for another batch", in.BatchID), ErrInvalidInput, nil)
	}
	switch state {
	case "returned":
		return false, invalid("exchange", fmt.Errorf("%s was put back into %s (%s): its rows move by batches", in.Partition.Partition, t.Live, note))
	case "done":
	default:
		return false, nil
	}
	res.Replayed = true
	return true, a.DB.QueryRow(ctx, `
		SELECT COALESCE(partition_name, ''), rows_moved, bytes, min_ts, max_ts, COALESCE(lock_ms, 0)
		FROM archive_batches WHERE batch_id = $1`, in.BatchID).Scan(&res.Partition, &res.Rows, &res.Bytes, &res.MinTS, &res.MaxTS, &res.LongestLockMillis)
}

// completeExchange records what the attached partition holds.
func (a *Activities) completeExchange(ctx context.Context, t policy.Table, in ExchangeInput, ident string, res *ExchangeResult) error {
	err := a.DB.QueryRow(ctx, fmt.Sprintf(`
		WITH p AS (
		    SELECT count(*) AS n, min(%[1]s)::timestamptz AS lo, max(%[1]s)::timestamptz AS hi,
		           count(*) FILTER (WHERE archive_batch_id <> $1) AS other
		    FROM %[2]s
		)
		UPDATE archive_batches b
		SET state = 'done', rows_moved = p.n, rows_deleted = p.n, bytes = pg_total_relation_size($2::regclass),
		    min_ts = p.lo, max_ts = p.hi, partition_name = $3, committed_at = now(),
		    lock_ms = GREATEST(COALESCE(b.lock_ms, 0), $4)
		FROM p WHERE b.batch_id = $1 AND p.other = 0
		RETURNING b.rows_moved, b.bytes, b.min_ts, b.max_ts, b.lock_ms`, catalog.Quote(t.TimeColumn), ident),
		in.BatchID, ident, PartitionName(t, in.Partition.Lower), res.LongestLockMillis).
		Scan(&res.Rows, &res.Bytes, &res.MinTS, &res.MaxTS, &res.LongestLockMillis)
	if errors.Is(err, pgx.ErrNoRows) {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("%s holds rows of another batch: not recorded", ident), ErrInvalidInput, nil)
	}
	if err != nil {
		return fmt.Errorf("record exchange of %s: %w", in.Partition.Partition, err)
	}
	res.Partition = PartitionName(t, in.Partition.Lower)
	res.MinTS, res.MaxTS = utc(res.MinTS), utc(res.MaxTS)
	return nil
}

// exchangeState is where an exchanged partition is.
type exchangeStateOf struct {
	where             string // live, archive, or "" (standalone)
	detachPending     bool
	liveHasDefault    bool
	ident             string // quoted, schema-qualified
	name, schema      string
	archiveSchema     string
	ownedByWorker     bool
	hasArchiveColumns bool
	claimedAt         time.Time
	// missingIndexes are CREATE INDEX statements for the archive's plain
	// indexes the detached table has no equivalent of.
	missingIndexes []string
	// foreignKeys are the detached table's own foreign keys.
	foreignKeys []string
}

// errPartitionGone: the table an exchange follows by its oid was dropped.
var errPartitionGone = errors.New("the partition no longer exists")

func exchangeState(ctx context.Context, conn *pgxpool.Conn, t policy.Table, oid uint32, batchID string) (exchangeStateOf, error) {
	var st exchangeStateOf
	var parent *string
	err := conn.QueryRow(ctx, `
		SELECT c.relname, n.nspname, pg_get_userbyid(c.relowner) = $3,
		       (SELECT i.inhparent::regclass::text FROM pg_inherits i WHERE i.inhrelid = c.oid),
		       COALESCE((SELECT i.inhdetachpending FROM pg_inherits i WHERE i.inhrelid = c.oid), false),
		       EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'archive_batch_id' AND NOT a.attisdropped),
		       (SELECT an.nspname FROM pg_class ac JOIN pg_namespace an ON an.oid = ac.relnamespace WHERE ac.oid = $2::regclass),
		       (SELECT committed_at FROM archive_batches WHERE batch_id = $4),
		       EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhrelid
		               WHERE i.inhparent = $5::regclass AND pg_get_expr(p.relpartbound, p.oid) = 'DEFAULT')
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = $1::oid`, int64(oid), catalog.QuoteName(t.Archive), WorkerRole, batchID, catalog.QuoteName(t.Live)).
		Scan(&st.name, &st.schema, &st.ownedByWorker, &parent, &st.detachPending, &st.hasArchiveColumns, &st.archiveSchema, &st.claimedAt, &st.liveHasDefault)
	if errors.Is(err, pgx.ErrNoRows) {
		return st, temporal.NewNonRetryableApplicationError(fmt.Sprintf("the partition being exchanged (oid %d) no longer exists", oid), ErrInvalidInput, errPartitionGone)
	}
	if err != nil {
		return st, fmt.Errorf("read the state of partition %d: %w", oid, err)
	}
	st.ident = catalog.Quote(st.schema) + "." + catalog.Quote(st.name)
	if parent == nil {
		rows, err := conn.Query(ctx, `SELECT conname FROM pg_constraint WHERE conrelid = $1::oid AND contype = 'f' ORDER BY conname`, int64(oid))
		if err != nil {
			return st, fmt.Errorf("read the foreign keys of %s: %w", st.ident, err)
		}
		if st.foreignKeys, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return st, fmt.Errorf("read the foreign keys of %s: %w", st.ident, err)
		}
	}
	if parent == nil && st.hasArchiveColumns {
		if st.missingIndexes, err = missingIndexes(ctx, conn, t, oid, st.ident); err != nil {
			return st, fmt.Errorf("compare the indexes of %s: %w", st.ident, err)
		}
	}
	if parent != nil {
		var liveName, archiveName string
		if err := conn.QueryRow(ctx, `SELECT $1::regclass::text, $2::regclass::text`, catalog.QuoteName(t.Live), catalog.QuoteName(t.Archive)).Scan(&liveName, &archiveName); err != nil {
			return st, err
		}
		switch *parent {
		case liveName:
			st.where = "live"
		case archiveName:
			st.where = "archive"
		default:
			return st, temporal.NewNonRetryableApplicationError(fmt.Sprintf("%s is attached to %s, neither %s nor %s", st.ident, *parent, t.Live, t.Archive), ErrInvalidInput, nil)
		}
	}
	return st, nil
}

// missingIndexes are CREATE INDEX statements for the archive's plain
// indexes that the detached table (oid, quoted as ident) has no
// equivalent of, compared by definition (indexKeysSQL). A unique one is
// the key, which the live partition brings (attachProof made sure).
func missingIndexes(ctx context.Context, conn *pgxpool.Conn, t policy.Table, oid uint32, ident string) ([]string, error) {
	var archiveOID int64
	var on string
	if err := conn.QueryRow(ctx, `
		SELECT c.oid::int8, format(' ON ONLY %I.%I ', n.nspname, c.relname)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1::regclass`, catalog.QuoteName(t.Archive)).Scan(&archiveOID, &on); err != nil {
		return nil, err
	}
	archived, err := indexKeys(ctx, conn, uint32(archiveOID))
	if err != nil {
		return nil, err
	}
	own, err := indexKeys(ctx, conn, oid)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, a := range archived {
		if a.unique || hasIndexKey(own, a.key) {
			continue
		}
		// pg_get_indexdef names the table schema-qualified, each part
		// quoted as format's %I quotes it.
		i := strings.Index(a.def, on)
		if i < 0 {
			return nil, fmt.Errorf("index definition %q", a.def)
		}
		out = append(out, fmt.Sprintf("CREATE INDEX %s ON %s %s", catalog.Quote(exchangeIndexName(oid, a.oid)), ident, a.def[i+len(on):]))
	}
	return out, nil
}

// exchangeIndexName names an index the exchange builds on a detached
// partition (oid) for an archive index: recognisable, so that a
// partition put back into the live table sheds it.
func exchangeIndexName(oid uint32, archiveIndex int64) string {
	return fmt.Sprintf("archiver_ix_%d_%d", oid, archiveIndex)
}

// dropEmptyArchivePartition removes an empty archive partition that holds
// the exchanged partition's period (made by an earlier run's batches, or
// emptied by a restore), so that the exchanged one can take its name:
// detached CONCURRENTLY, then dropped. Anything else holding the name is
// left alone, and the exchange cannot go on.
func dropEmptyArchivePartition(ctx context.Context, conn *pgxpool.Conn, t policy.Table, start time.Time, exchanged uint32) error {
	name := PartitionName(t, start)
	var oid *int64
	var empty bool
	ident := partitionIdent(t, name)
	if err := conn.QueryRow(ctx, `SELECT to_regclass($1)::oid::int8`, ident).Scan(&oid); err != nil || oid == nil || uint32(*oid) == exchanged {
		return err
	}
	// attached, or detached by this function before a crash kept it from
	// the drop (a plain table of the archive's owner, a partition of
	// nothing).
	var attached, pending, detached bool
	if err := conn.QueryRow(ctx, `
		SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = c.oid AND inhparent = a.oid),
		       EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = c.oid AND inhdetachpending),
		       c.relkind = 'r' AND c.relowner = a.relowner AND NOT c.relispartition
		FROM pg_class c, pg_class a WHERE c.oid = $1::oid AND a.oid = $2::regclass`, *oid, catalog.QuoteName(t.Archive)).Scan(&attached, &pending, &detached); err != nil {
		return err
	}
	if !attached && !detached {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("%s already exists and is no partition of %s: the exchanged partition cannot take its name", name, t.Archive), ErrInvalidInput, nil)
	}
	isEmpty := func() error {
		if err := conn.QueryRow(ctx, fmt.Sprintf(`SELECT NOT EXISTS (SELECT 1 FROM %s)`, ident)).Scan(&empty); err != nil {
			return err
		}
		if !empty {
			return temporal.NewNonRetryableApplicationError(fmt.Sprintf("%s already holds archived rows of its period", name), ErrInvalidInput, nil)
		}
		return nil
	}
	if err := isEmpty(); err != nil || !attached {
		if err == nil {
			_, err = conn.Exec(ctx, fmt.Sprintf(`DROP TABLE %s`, ident))
		}
		return err
	}
	how := "CONCURRENTLY"
	if pending {
		how = "FINALIZE"
	}
	if err := withLockRetries(ctx, func() error {
		_, err := conn.Exec(ctx, fmt.Sprintf(`ALTER TABLE %s DETACH PARTITION %s %s`, catalog.QuoteName(t.Archive), ident, how))
		return err
	}); err != nil {
		return fmt.Errorf("detach the empty %s: %w", name, err)
	}
	// A batch may have written to it before the detach: then it goes back.
	if err := isEmpty(); err != nil {
		if _, aerr := conn.Exec(ctx, attachPartitionSQL(t, start)); aerr != nil {
			return errors.Join(err, fmt.Errorf("attach %s again: %w", name, aerr))
		}
		return err
	}
	_, err := conn.Exec(ctx, fmt.Sprintf(`DROP TABLE %s`, ident))
	return err
}
