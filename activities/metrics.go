package activities

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// moveMetrics aggregates whole UTC days of samples into daily rows and
// deletes the samples, in the batch's transaction. A batch is the oldest
// eligible day and the days after it while their samples fit in Limit (at
// least one day, however large): a day is never split across batches.
//
// Metric batches take a transaction-level advisory lock, so two workers never
// aggregate the same day at once (SKIP LOCKED would let them split one).
// Late samples for a day already aggregated merge into its row: counts add
// up, the average is recomputed from the exact sums, min and max widen.
func moveMetrics(ctx context.Context, tx pgx.Tx, in MoveBatchInput) (moved, error) {
	var m moved
	cutoff := DayStart(in.Cutoff) // never half a day (the workflow passes a day boundary already)
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('archiver.batches.scenario_metrics'))`); err != nil {
		return m, fmt.Errorf("lock metric batches: %w", err)
	}
	// Start at the window's lower bound, or after the last day this loop
	// moved: never walk the index entries of samples already deleted.
	lower := DayStart(in.After)
	if in.Cursor != nil && in.Cursor.TS.After(lower) {
		lower = in.Cursor.TS
	}
	var oldest *time.Time
	if err := tx.QueryRow(ctx, `SELECT min(timestamp) FROM scenario_metrics WHERE timestamp < $1 AND timestamp >= $2`, cutoff, lower).Scan(&oldest); err != nil {
		return m, fmt.Errorf("find oldest sample: %w", err)
	}
	if oldest == nil {
		return m, recordEmpty(ctx, tx, in.BatchID)
	}
	from := DayStart(*oldest)
	until := cutoff
	// The first sample past Limit: the batch ends at the start of its day.
	var next time.Time
	err := tx.QueryRow(ctx, `
		SELECT timestamp FROM scenario_metrics
		WHERE timestamp >= $1 AND timestamp < $2
		ORDER BY timestamp OFFSET $3 LIMIT 1`, from, cutoff, in.Limit).Scan(&next)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		// Everything left fits in this batch.
	case err != nil:
		return m, fmt.Errorf("plan metric batch: %w", err)
	default:
		until = DayStart(next)
		if !until.After(from) {
			until = from.Add(24 * time.Hour) // one day larger than Limit: take the whole day
		}
	}
	err = tx.QueryRow(ctx, moveMetricsSQL, in.BatchID, from, until).
		Scan(&m.inserted, &m.merged, &m.expected, &m.deleted, &m.bytes, &m.minTS, &m.maxTS)
	if errors.Is(err, pgx.ErrNoRows) {
		return m, fmt.Errorf("ledger row of batch vanished inside its transaction")
	}
	m.more = until.Before(cutoff)
	m.last = &Key{TS: until}
	return m, err
}

// recordEmpty marks a batch that found nothing to move as committed with
// zero rows (the ledger row was claimed with zeros already).
func recordEmpty(ctx context.Context, tx pgx.Tx, batchID string) error {
	_, err := tx.Exec(ctx, `UPDATE archive_batches SET committed_at = now() WHERE batch_id = $1`, batchID)
	return err
}

// DayStart is the start of t's UTC day.
func DayStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

// moveMetricsSQL: $1 batch id, $2..$3 the day range [from, until). It
// returns aggregates created, aggregates merged into, groups expected, samples deleted, bytes, and
// the sample time range, and records them in the ledger row.
//
// value is AVG rounded to the column's 6 decimals; extra_data keeps min,
// max and the exact sum, from which a merge recomputes the average without
// compounding rounding. The aggregate's id is derived from its group key, so
// it is the same whichever batch writes it; a merged row keeps the batch id
// that created it.
const moveMetricsSQL = `
WITH moved AS (
    DELETE FROM scenario_metrics m
    WHERE m.timestamp >= $2 AND m.timestamp < $3
    RETURNING m.*, pg_column_size(m.*) AS row_bytes
), agg AS (
    SELECT scenario_id, metric_type, metric_name, unit,
           date_trunc('day', timestamp, 'UTC') AS day,
           count(*) AS n, sum(value) AS total, min(value) AS lo, max(value) AS hi
    FROM moved
    GROUP BY 1, 2, 3, 4, 5
), ins AS (
    INSERT INTO scenario_metrics_archive AS a
        (id, scenario_id, timestamp, metric_type, metric_name, value, unit, extra_data,
         archive_batch_id, is_aggregated, aggregation_period, sample_count)
    SELECT md5(concat_ws('|', scenario_id, metric_type, metric_name, unit, 'day', day))::uuid,
           scenario_id, day, metric_type, metric_name, round(total / n, 6), unit,
           jsonb_build_object('min', lo, 'max', hi, 'sum', total),
           $1, true, 'day', n
    FROM agg
    ON CONFLICT (scenario_id, metric_type, metric_name, unit, aggregation_period, timestamp)
    DO UPDATE SET
        sample_count = a.sample_count + EXCLUDED.sample_count,
        value = round(((a.extra_data->>'sum')::numeric + (EXCLUDED.extra_data->>'sum')::numeric)
                      / (a.sample_count + EXCLUDED.sample_count), 6),
        extra_data = a.extra_data || jsonb_build_object(
            'min', LEAST((a.extra_data->>'min')::numeric, (EXCLUDED.extra_data->>'min')::numeric),
            'max', GREATEST((a.extra_data->>'max')::numeric, (EXCLUDED.extra_data->>'max')::numeric),
            'sum', (a.extra_data->>'sum')::numeric + (EXCLUDED.extra_data->>'sum')::numeric,
            'merged_batches', COALESCE((a.extra_data->>'merged_batches')::int, 0) + 1),
        archived_at = now()
    RETURNING (archive_batch_id = $1) AS fresh
), totals AS (
    SELECT (SELECT count(*) FILTER (WHERE fresh) FROM ins) AS inserted,
           (SELECT count(*) FILTER (WHERE NOT fresh) FROM ins) AS merged,
           (SELECT count(*) FROM agg) AS expected,
           count(*) AS deleted,
           COALESCE(sum(row_bytes), 0)::bigint AS bytes,
           min(timestamp) AS min_ts,
           max(timestamp) AS max_ts
    FROM moved
)
UPDATE archive_batches ab
SET rows_moved = t.inserted, rows_merged = t.merged, rows_deleted = t.deleted, bytes = t.bytes,
    min_ts = t.min_ts, max_ts = t.max_ts, committed_at = now()
FROM totals t
WHERE ab.batch_id = $1
RETURNING t.inserted, t.merged, t.expected, t.deleted, t.bytes, t.min_ts, t.max_ts`
