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
	After time.Time `json:",omitempty"`
	Limit int
	// Cursor, when set, starts the batch after this (time, id) key (logs):
	// each batch loop carries the last key it moved, so a batch never
	// rescans the index entries of rows already moved (dead until vacuum).
	Cursor *Key `json:",omitempty"`
}

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
	// for replicas to catch up first.
	TxMillis          int64 `json:",omitempty"`
	ReplicaWaitMillis int64 `json:",omitempty"`
	// Last is the (time, id) key of the last row moved (logs), the next
	// batch's cursor.
	Last *Key `json:",omitempty"`
}

// MoveBatch moves up to Limit rows older than Cutoff from the live table to
// its archive in one transaction (DESIGN.md §3):
//  1. claim the batch id in the ledger (a committed duplicate returns its
//     recorded result; a concurrent one waits on the key);
//  2. lock the oldest eligible rows with SKIP LOCKED, delete them and insert
//     them into the archive in one server-side statement;
//  3. record counts, bytes and the time range in the ledger row; commit.
func (a *Activities) MoveBatch(ctx context.Context, in MoveBatchInput) (MoveBatchResult, error) {
	t, err := tableFor(in.Table)
	if err != nil {
		return MoveBatchResult{}, err
	}
	if err := policy.ValidateBatchSize(in.Limit); err != nil {
		return MoveBatchResult{}, invalid("move batch", err)
	}
	move, ok := movers[t.Name]
	if !ok {
		return MoveBatchResult{}, invalid("move batch", fmt.Errorf("no batch statement for table %s", t.Name))
	}
	waited, err := a.waitForReplicas(ctx)
	if err != nil {
		return MoveBatchResult{}, err
	}
	ctx, span := a.tracer().Start(ctx, "archive.batch", trace.WithAttributes(
		attribute.String("archive.table", t.Name), attribute.String("archive.batch_id", in.BatchID), attribute.Int("archive.limit", in.Limit)))
	defer span.End()
	res, err := a.runBatch(ctx, t, move, in)
	res.ReplicaWaitMillis = waited.Milliseconds()
	span.SetAttributes(attribute.Int64("archive.rows", res.RowsMoved), attribute.Int64("archive.rows_deleted", res.RowsDeleted),
		attribute.Int64("archive.bytes", res.Bytes), attribute.Bool("archive.replayed", res.Replayed))
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return res, err
	}
	if !res.Replayed {
		aggregated := int64(0)
		if t.Name == "metrics" {
			aggregated = res.RowsDeleted
		}
		a.Metrics.Batch(ctx, t.Name, res.RowsMoved+res.RowsMerged, res.RowsDeleted, aggregated, res.Bytes, time.Duration(res.TxMillis)*time.Millisecond, in.Limit)
	}
	return res, nil
}

// runBatch runs one mover under the ledger protocol, creating a missing
// partition once if the rows need one, and calls AfterCommit.
func (a *Activities) runBatch(ctx context.Context, t policy.Table, move mover, in MoveBatchInput) (MoveBatchResult, error) {
	res, err := a.moveOnce(ctx, t, move, in)
	if isMissingPartition(err) {
		// A row older than the partitions EnsurePartitions made (a late
		// import since): make them and try once more.
		if _, _, perr := ensurePartitions(ctx, a.DB, t, in.After, in.Cutoff); perr != nil {
			return MoveBatchResult{}, perr
		}
		res, err = a.moveOnce(ctx, t, move, in)
	}
	if err != nil {
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
	res := MoveBatchResult{BatchID: in.BatchID}
	began := time.Now()
	tx, err := a.DB.Begin(ctx)
	if err != nil {
		return res, err
	}
	defer func() { _ = tx.Rollback(ctx) }()

	var claimed bool
	err = tx.QueryRow(ctx, `
		INSERT INTO archive_batches (batch_id, job_id, table_name, cutoff, batch_limit)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (batch_id) DO NOTHING
		RETURNING true`, in.BatchID, in.JobID, t.Live, in.Cutoff, in.Limit).Scan(&claimed)
	if errors.Is(err, pgx.ErrNoRows) {
		return a.recorded(ctx, tx, t, in)
	}
	if err != nil {
		return res, fmt.Errorf("claim batch: %w", err)
	}

	m, err := move(ctx, tx, in)
	if err != nil {
		return res, err
	}
	if m.inserted+m.merged != m.expected {
		return res, fmt.Errorf("%w (inserted %d + merged %d, expected %d)", errCountMismatch, m.inserted, m.merged, m.expected)
	}
	res.RowsMerged = m.merged
	res.RowsDeleted, res.Bytes, res.MinTS, res.MaxTS, res.More, res.Last = m.deleted, m.bytes, m.minTS, m.maxTS, m.more, m.last
	res.RowsMoved = m.inserted
	if err := tx.Commit(ctx); err != nil {
		return res, fmt.Errorf("commit: %w", err)
	}
	res.TxMillis = time.Since(began).Milliseconds()
	res.MinTS, res.MaxTS = utc(res.MinTS), utc(res.MaxTS)
	return res, nil
}

// recorded answers a batch id that is already in the ledger.
func (a *Activities) recorded(ctx context.Context, tx pgx.Tx, t policy.Table, in MoveBatchInput) (MoveBatchResult, error) {
	res := MoveBatchResult{BatchID: in.BatchID, Replayed: true}
	var table, job string
	err := tx.QueryRow(ctx, `
		SELECT table_name, job_id::text, rows_moved, rows_merged, rows_deleted, bytes, min_ts, max_ts
		FROM archive_batches WHERE batch_id = $1`, in.BatchID).
		Scan(&table, &job, &res.RowsMoved, &res.RowsMerged, &res.RowsDeleted, &res.Bytes, &res.MinTS, &res.MaxTS)
	if err != nil {
		return res, fmt.Errorf("read recorded batch: %w", err)
	}
	if table != t.Live || job != in.JobID {
		return res, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("batch id %s is already recorded for job %s on %s, not job %s on %s", in.BatchID, job, table, in.JobID, t.Live),
			ErrInvalidInput, nil)
	}
	res.MinTS, res.MaxTS = utc(res.MinTS), utc(res.MaxTS)
	res.More = res.RowsDeleted > 0
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
// row, and writes its figures into that row.
type mover func(ctx context.Context, tx pgx.Tx, in MoveBatchInput) (moved, error)

var movers = map[string]mover{
	"logs":    moveLogs,
	"metrics": moveMetrics,
}

func moveLogs(ctx context.Context, tx pgx.Tx, in MoveBatchInput) (moved, error) {
	var m moved
	cursor := Key{ID: "00000000-0000-0000-0000-000000000000"} // before every row
	if in.Cursor != nil {
		cursor = *in.Cursor
	}
	var lastID *string
	err := tx.QueryRow(ctx, moveLogsSQL, in.BatchID, in.Cutoff, in.Limit, in.After, cursor.TS, cursor.ID).
		Scan(&m.inserted, &m.deleted, &m.bytes, &m.minTS, &m.maxTS, &lastID)
	if err == nil && lastID != nil && m.maxTS != nil {
		m.last = &Key{TS: m.maxTS.UTC(), ID: *lastID}
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return m, fmt.Errorf("ledger row of batch vanished inside its transaction")
	}
	m.expected = m.deleted // every deleted row is inserted once
	// A short batch means none is left that this worker could lock; rows
	// locked by another worker are that worker's to move.
	m.more = m.deleted >= int64(in.Limit)
	return m, err
}

// moveLogsSQL moves log rows as they are. Rows never travel through the
// worker: the DELETE ... RETURNING feeds the INSERT on the server. Bytes are
// the rows' on-disk size in the live table. $5, $6: the cursor. The batch
// is deleted by ctid (a TID scan of rows this statement has just locked)
// rather than by id (a primary-key lookup per row): 14% faster, measured.
const moveLogsSQL = `
WITH batch AS (
    SELECT ctid FROM scenario_logs
    WHERE received_at < $2 AND received_at >= $4
      AND (received_at, id) > ($5::timestamptz, $6::uuid)
    ORDER BY received_at, id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), moved AS (
    DELETE FROM scenario_logs l
    WHERE l.ctid = ANY (ARRAY(SELECT ctid FROM batch))
    RETURNING l.*, pg_column_size(l.*) AS row_bytes
), ins AS (
    INSERT INTO scenario_logs_archive
        (id, scenario_id, received_at, message_hash, message_preview, source,
         size_bytes, has_pii, token_count, sqs_blocks, archive_batch_id)
    SELECT id, scenario_id, received_at, message_hash, message_preview, source,
           size_bytes, has_pii, token_count, sqs_blocks, $1
    FROM moved
    RETURNING 1
), totals AS (
    SELECT (SELECT count(*) FROM ins) AS inserted,
           count(*) AS deleted,
           COALESCE(sum(row_bytes), 0)::bigint AS bytes,
           min(received_at) AS min_ts,
           max(received_at) AS max_ts,
           (SELECT id::text FROM moved ORDER BY received_at DESC, id DESC LIMIT 1) AS last_id
    FROM moved
)
UPDATE archive_batches ab
SET rows_moved = t.inserted, rows_deleted = t.deleted, bytes = t.bytes,
    min_ts = t.min_ts, max_ts = t.max_ts, committed_at = now()
FROM totals t
WHERE ab.batch_id = $1
RETURNING t.inserted, t.deleted, t.bytes, t.min_ts, t.max_ts, t.last_id`
