package activities

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.temporal.io/sdk/temporal"

	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/policy"
)

// MoveBatchInput names one batch. BatchID is decided by the workflow and
// recorded in its history; it is the batch's idempotency key.
type MoveBatchInput struct {
	Table   string
	JobID   string
	BatchID string
	Cutoff  time.Time
	// After, when set, is a lower bound (inclusive): a backfill window.
	After time.Time `json:",omitzero"`
	Limit int
	// Cursor, when set, starts the batch after this (time, id) key (logs):
	// each batch loop carries the last key it moved, so a batch never
	// rescans the index entries of rows already moved (dead until vacuum).
	Cursor *Key `json:",omitempty"`
	// Entry is the table's policy entry in force (nil: the built-in table
	// of that name).
	Entry *policy.Table `json:",omitempty"`
	// Pace: after it commits, the batch rests Pace × its lock time
	// (at most maxRest) before it returns (workflows.ArchiveInput.Pace).
	Pace float64 `json:",omitempty"`
	// MaxLoad and CriticalLoad are the load controller's thresholds in
	// force (absolute: the workflow resolved a relative one), nil: none.
	MaxLoad      *policy.Load `json:",omitempty"`
	CriticalLoad *policy.Load `json:",omitempty"`
}

// maxRest bounds a paced batch's rest.
const maxRest = 10 * time.Second

// Key is a position in a live table's (time, id) order.
type Key struct {
	TS time.Time
	ID string
}

// MoveBatchResult is what the batch moved, as the ledger records it.
type MoveBatchResult struct {
	BatchID   string
	RowsMoved int64
	// RowsMerged counts archive rows this batch updated instead of
	// inserting (metrics: late samples merged into an existing aggregate).
	RowsMerged  int64
	RowsDeleted int64
	Bytes       int64
	MinTS       *time.Time
	MaxTS       *time.Time
	// Replayed is true when the batch had already committed on an earlier
	// attempt: nothing moved this time and the recorded result is returned.
	Replayed bool
	// More is true when eligible rows may remain after this batch.
	More bool
	// TxMillis is how long the batch's transaction held its locks, for the
	// workflow's lock-time budget; ReplicaWaitMillis how long it waited
	// for replicas to catch up and logical slots to release WAL first.
	TxMillis          int64 `json:",omitempty"`
	ReplicaWaitMillis int64 `json:",omitempty"`
	// Last is the (time, id) key of the last row moved (logs), the next
	// batch's cursor.
	Last *Key `json:",omitempty"`
	// The load controller: LoadRestMillis is how long the batch rested
	// before it began, and Load the signal past --max-load that made it
	// ("active 5.2 > 3.0"); LoadSkipped, that the load stayed past it and
	// the batch did not run; StoppedAtLoad, the signal past
	// --critical-load that stops the run (the batch did not run).
	LoadRestMillis int64  `json:",omitempty"`
	Load           string `json:",omitempty"`
	LoadSkipped    bool   `json:",omitempty"`
	StoppedAtLoad  string `json:",omitempty"`
}

// MoveBatch moves up to Limit rows older than Cutoff from the live table to
// its archive in one transaction (docs/design.md):
//  1. claim the batch id in the ledger (a committed duplicate returns its
//     recorded result; a concurrent one waits on the key);
//  2. lock the oldest eligible rows with SKIP LOCKED, delete them and insert
//     them into the archive in one server-side statement (a downsample
//     batch, serialised on an advisory lock, deletes a key range without
//     row locks: deleteRange);
//  3. record counts, bytes and the time range in the ledger row; commit.
func (a *Activities) MoveBatch(ctx context.Context, in MoveBatchInput) (MoveBatchResult, error) {
	t, err := entryFor(in.Table, in.Entry)
	if err != nil {
		return MoveBatchResult{}, err
	}
	if err := policy.ValidateBatchSize(in.Limit); err != nil {
		return MoveBatchResult{}, invalid("move batch", err)
	}
	move, ok := movers[modeOf(t)]
	if !ok {
		return MoveBatchResult{}, invalid("move batch", fmt.Errorf("table %s is archived by its own steps (mode %s), not in batches", t.Name, modeOf(t)))
	}
	load, err := a.loadGate(ctx, t.Name, in.MaxLoad, in.CriticalLoad)
	if err != nil {
		return MoveBatchResult{}, err
	}
	if load.Skip {
		return MoveBatchResult{BatchID: in.BatchID, More: true, LoadRestMillis: load.Rested.Milliseconds(), Load: load.Reason,
			LoadSkipped: true, StoppedAtLoad: load.Stop}, nil
	}
	waited, err := a.waitForReplicas(ctx)
	if err != nil {
		return MoveBatchResult{}, err
	}
	slotWait, err := a.waitForSlots(ctx)
	if err != nil {
		return MoveBatchResult{}, err
	}
	waited += slotWait
	ctx, span := a.tracer().Start(ctx, "archive.batch", trace.WithAttributes(
		attribute.String("archive.table", t.Name), attribute.String("archive.batch_id", in.BatchID), attribute.Int("archive.limit", in.Limit)))
	defer span.End()
	res, err := a.runBatch(ctx, t, move, in)
	res.ReplicaWaitMillis = waited.Milliseconds()
	res.LoadRestMillis, res.Load = load.Rested.Milliseconds(), load.Reason
	span.SetAttributes(attribute.Int64("archive.rows", res.RowsMoved), attribute.Int64("archive.rows_deleted", res.RowsDeleted),
		attribute.Int64("archive.bytes", res.Bytes), attribute.Bool("archive.replayed", res.Replayed))
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return res, err
	}
	if !res.Replayed {
		aggregated := int64(0)
		if modeOf(t) == policy.ModeDownsample {
			aggregated = res.RowsDeleted
		}
		a.Metrics.Batch(ctx, t.Name, res.RowsMoved+res.RowsMerged, res.RowsDeleted, aggregated, res.Bytes, time.Duration(res.TxMillis)*time.Millisecond, in.Limit)
		rest(ctx, in.Pace, res.TxMillis)
	}
	return res, nil
}

// rest waits pace × the batch's lock time, leaving the server to the
// application (a cancelled context ends it: the batch has committed).
func rest(ctx context.Context, pace float64, txMillis int64) {
	d := min(time.Duration(pace*float64(txMillis))*time.Millisecond, maxRest)
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// runBatch runs one mover under the ledger protocol, creating a missing
// partition once if the rows need one, and calls AfterCommit.
func (a *Activities) runBatch(ctx context.Context, t policy.Table, move mover, in MoveBatchInput) (MoveBatchResult, error) {
	res, err := a.moveOnce(ctx, t, move, in)
	if isMissingPartition(err) {
		// A row older than the partitions EnsurePartitions made (a late
		// import since): make them and try once more.
		if _, perr := ensurePartitions(ctx, a.DB, t, in.After, in.Cutoff); perr != nil {
			return MoveBatchResult{}, perr
		}
		res, err = a.moveOnce(ctx, t, move, in)
	}
	if err != nil {
		var appErr *temporal.ApplicationError
		if errors.As(err, &appErr) {
			return MoveBatchResult{}, err // already says what and why
		}
		return MoveBatchResult{}, fmt.Errorf("move batch %s of %s: %w", in.BatchID, t.Live, err)
	}
	if a.AfterCommit != nil {
		if err := a.AfterCommit(ctx, res); err != nil {
			return MoveBatchResult{}, err
		}
	}
	return res, nil
}

func (a *Activities) moveOnce(ctx context.Context, t policy.Table, move mover, in MoveBatchInput) (MoveBatchResult, error) {
	return a.ledgerStep(ctx, t, in, "rows", 0, func(ctx context.Context, tx pgx.Tx, s shape) (moved, error) {
		if s.planned {
			return moved{}, invalid("move batch", fmt.Errorf("the archive table %s does not exist (dropped during the run?)", t.Archive))
		}
		var err error
		if s.holds, err = activeHolds(ctx, tx, t); err != nil {
			return moved{}, err
		}
		return move(ctx, tx, s, in)
	})
}

// ledgerStep runs one batch step in one transaction under the ledger
// protocol shared by archive and restore batches: claim the batch id in
// archive_batches (a batch id already there answers with what it recorded),
// lock both tables, read their shape, run the step, check its counts and
// commit. kind is the ledger row's kind; exportID, when not zero, the export
// the step restores.
func (a *Activities) ledgerStep(ctx context.Context, t policy.Table, in MoveBatchInput, kind string, exportID int64,
	step func(ctx context.Context, tx pgx.Tx, s shape) (moved, error)) (MoveBatchResult, error) {
	res := MoveBatchResult{BatchID: in.BatchID}
	began := time.Now()
	tx, err := a.DB.Begin(ctx)
	if err != nil {
		return res, err
	}
	defer func() { _ = tx.Rollback(ctx) }()

	var exp *int64
	if exportID != 0 {
		exp = &exportID
	}
	var claimed bool
	err = tx.QueryRow(ctx, `
		INSERT INTO archive_batches (batch_id, job_id, table_name, cutoff, batch_limit, kind, export_id)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (batch_id) DO NOTHING
		RETURNING true`, in.BatchID, in.JobID, t.Live, in.Cutoff, in.Limit, kind, exp).Scan(&claimed)
	if errors.Is(err, pgx.ErrNoRows) {
		return a.recorded(ctx, tx, t, in)
	}
	if err != nil {
		return res, fmt.Errorf("claim %s batch: %w", kind, err)
	}
	// Lock both tables in the mode the batch's DELETE and INSERT take
	// anyway, before reading their definitions: a column added meanwhile
	// either committed before (and is read) or waits for this batch. ONLY:
	// adding a column locks the parent; and LOCK on a parent would check
	// privileges on every partition, which the worker need not have.
	if _, err := tx.Exec(ctx, fmt.Sprintf(`LOCK TABLE ONLY %s, ONLY %s IN ROW EXCLUSIVE MODE`, catalog.QuoteName(t.Live), catalog.QuoteName(t.Archive))); err != nil {
		return res, fmt.Errorf("lock %s and %s: %w", t.Live, t.Archive, err)
	}
	s, err := inspect(ctx, tx, t)
	if err != nil {
		return res, err
	}
	m, err := step(ctx, tx, s)
	if err != nil {
		return res, err
	}
	if m.inserted+m.merged != m.expected {
		return res, fmt.Errorf("%w (inserted %d + merged %d, expected %d)", errCountMismatch, m.inserted, m.merged, m.expected)
	}
	if err := tx.Commit(ctx); err != nil {
		return res, fmt.Errorf("commit: %w", err)
	}
	res.RowsMoved, res.RowsMerged, res.RowsDeleted, res.Bytes, res.More, res.Last = m.inserted, m.merged, m.deleted, m.bytes, m.more, m.last
	res.MinTS, res.MaxTS = utc(m.minTS), utc(m.maxTS)
	res.TxMillis = time.Since(began).Milliseconds()
	return res, nil
}

// recorded answers a batch id that is already in the ledger, with the
// cursor the batch reached, so that its loop goes on from there.
func (a *Activities) recorded(ctx context.Context, tx pgx.Tx, t policy.Table, in MoveBatchInput) (MoveBatchResult, error) {
	res := MoveBatchResult{BatchID: in.BatchID, Replayed: true}
	var table, job string
	var limit int64
	var lastTS *time.Time
	var lastKey *string
	err := tx.QueryRow(ctx, `
		SELECT table_name, job_id::text, batch_limit, rows_moved, rows_merged, rows_deleted, bytes, min_ts, max_ts, last_ts, last_key
		FROM archive_batches WHERE batch_id = $1`, in.BatchID).
		Scan(&table, &job, &limit, &res.RowsMoved, &res.RowsMerged, &res.RowsDeleted, &res.Bytes, &res.MinTS, &res.MaxTS, &lastTS, &lastKey)
	if err != nil {
		return res, fmt.Errorf("read recorded batch: %w", err)
	}
	if table != t.Live || job != in.JobID {
		return res, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("batch id %s is already recorded for job %s on %s, not job %s on %s", in.BatchID, job, table, in.JobID, t.Live),
			ErrInvalidInput, nil)
	}
	res.MinTS, res.MaxTS = utc(res.MinTS), utc(res.MaxTS)
	res.More = res.RowsDeleted >= limit && limit > 0
	if lastTS != nil {
		res.Last = &Key{TS: lastTS.UTC()}
		if lastKey != nil {
			res.Last.ID = *lastKey
		}
	}
	return res, nil
}

// isMissingPartition reports PostgreSQL's "no partition of relation found for
// row" (SQLSTATE 23514 raised by partition routing).
func isMissingPartition(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23514" && pgErr.ConstraintName == ""
}

// moved is what one table's batch statement reports.
type moved struct {
	inserted, merged, expected, deleted, bytes int64
	minTS, maxTS                               *time.Time
	more                                       bool
	last                                       *Key
}

// A mover moves one batch inside the transaction that claimed its ledger
// row, with statements built from the tables' checked shape, and writes
// its figures into that row.
type mover func(ctx context.Context, tx pgx.Tx, s shape, in MoveBatchInput) (moved, error)

// movers are per mode, never per table.
var movers = map[string]mover{
	policy.ModeMove:       moveRows,
	policy.ModeDownsample: downsampleRows,
}

// moveRows moves rows as they are: every live column, listed from the
// catalogue, into the archive with the batch id.
func moveRows(ctx context.Context, tx pgx.Tx, s shape, in MoveBatchInput) (moved, error) {
	b := newBatchSQL(s, in)
	sql := fmt.Sprintf(`
WITH %s,
moved AS (
    %s
    RETURNING %s, pg_column_size(l.*) AS archiver_row_bytes, %s AS archiver_ts, %s AS archiver_key
), ins AS (
    INSERT INTO %s (%s, archive_batch_id)
    SELECT %s, %s FROM moved
    RETURNING 1
)%s`,
		b.selectBatch(), b.deleteBatch(),
		catalog.QuoteAll("l.", s.copy), b.tsExpr("l."), b.keyExpr("l."),
		catalog.QuoteName(s.archive.Name), catalog.QuoteAll("", s.copy),
		catalog.QuoteAll("", s.copy), b.arg(in.BatchID),
		b.recordTotals("(SELECT count(*) FROM ins)", "0", "count(*)")) // every deleted row is inserted once
	return b.run(ctx, tx, sql)
}

// recordEmpty marks a batch that found nothing to move as committed with
// zero rows (the ledger row was claimed with zeros already).
func recordEmpty(ctx context.Context, tx pgx.Tx, batchID string) error {
	_, err := tx.Exec(ctx, `UPDATE archive_batches SET committed_at = now() WHERE batch_id = $1`, batchID)
	return err
}

func lastOf(maxTS *time.Time, key *string) *Key {
	if maxTS == nil {
		return nil
	}
	k := &Key{TS: maxTS.UTC()}
	if key != nil {
		k.ID = *key
	}
	return k
}
