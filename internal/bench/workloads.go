package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

const logColumns = `id, scenario_id, received_at, message_hash, message_preview, source, size_bytes, has_pii, token_count, sqs_blocks`

// logs: the single-statement bound, the server-side batched bound (same
// batch size and statement shape as ours, a commit per batch) and ours.
func (b *bench) logs(ctx context.Context) (Result, error) {
	r := Result{Workload: "logs", Rows: int64(b.o.logs)}
	cutoff := logsCutoff.Format(time.RFC3339Nano)

	single, err := b.onClone(ctx, "logs_single", "logs", logsCutoff, func(pool *pgxpool.Pool) error {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO scenario_logs_archive (`+logColumns+`, archive_batch_id)
				SELECT `+logColumns+`, '00000000-0000-4000-8000-000000000000' FROM scenario_logs WHERE received_at < $1`, logsCutoff); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `DELETE FROM scenario_logs WHERE received_at < $1`, logsCutoff)
			return err
		})
	})
	if err != nil {
		return r, fmt.Errorf("logs single bound: %w", err)
	}
	batched, err := b.onClone(ctx, "logs_batched", "logs", logsCutoff, func(pool *pgxpool.Pool) error {
		// Our statement's shape: keyset cursor, SKIP LOCKED, delete by
		// ctid, one commit per 10,000-row batch.
		_, err := pool.Exec(ctx, `DO $$
			DECLARE n int; lt timestamptz := '-infinity'; li uuid := '00000000-0000-0000-0000-000000000000';
			BEGIN
			  LOOP
			    WITH batch AS (
			        SELECT ctid FROM scenario_logs
			        WHERE received_at < '`+cutoff+`' AND (received_at, id) > (lt, li)
			        ORDER BY received_at, id LIMIT 10000 FOR UPDATE SKIP LOCKED
			    ), moved AS (
			        DELETE FROM scenario_logs l WHERE l.ctid = ANY (ARRAY(SELECT ctid FROM batch)) RETURNING l.*
			    ), ins AS (
			        INSERT INTO scenario_logs_archive (`+logColumns+`, archive_batch_id)
			        SELECT `+logColumns+`, gen_random_uuid() FROM moved RETURNING received_at, id
			    )
			    SELECT count(*), max(received_at), (array_agg(id ORDER BY received_at DESC, id DESC))[1] INTO n, lt, li FROM ins;
			    COMMIT;
			    EXIT WHEN n = 0;
			  END LOOP;
			END $$`)
		return err
	})
	if err != nil {
		return r, fmt.Errorf("logs batched bound: %w", err)
	}
	client, err := b.onClone(ctx, "logs_client", "logs", logsCutoff, func(pool *pgxpool.Pool) error {
		n, err := logsClientLoop(ctx, pool, logsCutoff)
		if err == nil && n != r.Rows {
			err = fmt.Errorf("moved %d rows, want %d", n, r.Rows)
		}
		return err
	})
	if err != nil {
		return r, fmt.Errorf("logs client bound: %w", err)
	}
	r, err = b.finish(ctx, r, "logs", logsCutoff, single, batched, "")
	if err == nil && client > 0 {
		r.BoundClient = round(float64(r.Rows) / client)
		r.RatioClient = round(r.RowsPerS / r.BoundClient)
	}
	return r, err
}

// metricsWorkload: the bound is one INSERT ... SELECT ... GROUP BY and one
// DELETE in a transaction.
func (b *bench) metricsWorkload(ctx context.Context) (Result, error) {
	r := Result{Workload: "metrics", Rows: int64(b.o.metrics)}
	single, err := b.onClone(ctx, "metrics_single", "metrics", metricsCutoff, func(pool *pgxpool.Pool) error {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `
				INSERT INTO scenario_metrics_archive (id, scenario_id, timestamp, metric_type, metric_name, value, unit, extra_data,
				                                      archive_batch_id, is_aggregated, aggregation_period, sample_count)
				SELECT md5(concat_ws('|', scenario_id, metric_type, metric_name, unit, 'day', date_trunc('day', timestamp, 'UTC')))::uuid,
				       scenario_id, date_trunc('day', timestamp, 'UTC'), metric_type, metric_name, round(avg(value), 6), unit,
				       jsonb_build_object('min', min(value), 'max', max(value), 'sum', sum(value)),
				       '00000000-0000-4000-8000-000000000000', true, 'day', count(*)
				FROM scenario_metrics WHERE timestamp < $1
				GROUP BY scenario_id, metric_type, metric_name, unit, date_trunc('day', timestamp, 'UTC')`, metricsCutoff); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `DELETE FROM scenario_metrics WHERE timestamp < $1`, metricsCutoff)
			return err
		})
	})
	if err != nil {
		return r, fmt.Errorf("metrics single bound: %w", err)
	}
	if b.o.metricsInTimeOrder {
		r.Notes = append(r.Notes, "samples stored in time order (-metrics-in-time-order)")
	}
	return b.finish(ctx, r, "metrics", metricsCutoff, single, 0, "")
}

// onClone clones the seed, creates the partitions (untimed) and times f.
func (b *bench) onClone(ctx context.Context, label, table string, cutoff time.Time, f func(*pgxpool.Pool) error) (float64, error) {
	pool, _, err := b.clone(ctx, label)
	if err != nil {
		return 0, err
	}
	defer pool.Close()
	if err := ensurePartitions(ctx, pool, table, cutoff); err != nil {
		return 0, err
	}
	secs, err := timed(func() error { return f(pool) })
	fmt.Fprintf(os.Stderr, "bench: %s %.2f s\n", label, secs)
	return secs, err
}

// finish runs ours on a clone and fills the result against the bounds.
func (b *bench) finish(ctx context.Context, r Result, table string, cutoff time.Time, single, batched float64, reportsDir string) (Result, error) {
	pool, url, err := b.clone(ctx, table+"_ours")
	if err != nil {
		return r, err
	}
	defer pool.Close()
	if err := ensurePartitions(ctx, pool, table, cutoff); err != nil {
		return r, err
	}
	secs, rss, id, err := b.ours(ctx, url, []string{table}, reportsDir)
	if err != nil {
		return r, err
	}
	fmt.Fprintf(os.Stderr, "bench: %s ours %.2f s\n", table, secs)
	h, err := readHistory(ctx, b.c, id)
	if err != nil {
		return r, err
	}
	ms := h.batchMS
	r.Seconds, r.PeakRSSMB, r.HistoryEvents = round(secs), rss, h.events
	r.RowsPerS = round(float64(r.Rows) / secs)
	r.P50BatchMS, r.P99BatchMS = percentile(ms, 0.5), percentile(ms, 0.99)
	if len(ms) > 0 {
		r.MaxBatchMS = ms[len(ms)-1]
	}
	r.TemporalShare = h.temporalShare(secs)
	if b.o.parallel > 1 {
		r.Parallel = b.o.parallel
	}
	r.BatchActivities = b.o.batchActivities
	if single > 0 {
		r.BoundSingle = round(float64(r.Rows) / single)
		r.RatioSingle = round(r.RowsPerS / r.BoundSingle)
	}
	if batched > 0 {
		r.BoundBatched = round(float64(r.Rows) / batched)
		r.RatioBatched = round(r.RowsPerS / r.BoundBatched)
	}
	var left int64
	live := map[string]string{"logs": "scenario_logs", "metrics": "scenario_metrics"}[table]
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM `+live).Scan(&left); err != nil || left != 0 {
		return r, fmt.Errorf("%s: our run left %d rows (%v)", table, left, err)
	}
	return r, nil
}

// reportsWorkload: the bound is gzip -1 of the same files to disk plus a
// plain PutObject loop; ours is the reports run (compress, multipart upload
// with checksums, verify, finalize, remove).
func (b *bench) reportsWorkload(ctx context.Context) (Result, error) {
	if b.o.reports == 0 {
		return Result{}, nil
	}
	total := int64(b.o.reports) * int64(b.o.reportMB) << 20
	r := Result{Workload: "reports", Bytes: total}
	seed := filepath.Join(b.dir, "seed")
	entries, _ := os.ReadDir(seed)
	outDir := filepath.Join(b.dir, "gz")
	_ = os.MkdirAll(outDir, 0o755)
	bound, err := timed(func() error {
		for _, e := range entries {
			gz := filepath.Join(outDir, e.Name()+".gz")
			if err := sh("sh", "-c", fmt.Sprintf("gzip -1 -c %q > %q", filepath.Join(seed, e.Name()), gz)); err != nil {
				return err
			}
			f, err := os.Open(gz)
			if err != nil {
				return err
			}
			_, err = b.store.Client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(b.store.Bucket()), Key: aws.String("bound/" + e.Name() + ".gz"), Body: f})
			f.Close()
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return r, fmt.Errorf("reports bound: %w", err)
	}
	fmt.Fprintf(os.Stderr, "bench: reports bound (gzip -1 + PutObject) %.2f s\n", bound)
	dir, err := b.linkFiles("reports_ours")
	if err != nil {
		return r, err
	}
	pool, url, err := b.clone(ctx, "reports_ours")
	if err != nil {
		return r, err
	}
	defer pool.Close()
	secs, rss, id, err := b.ours(ctx, url, []string{"reports"}, dir)
	if err != nil {
		return r, err
	}
	_, events, _ := batchTimes(ctx, b.c, id)
	r.Seconds, r.PeakRSSMB, r.HistoryEvents = round(secs), rss, events
	r.MBPerS = round(float64(total) / 1e6 / secs)
	r.BoundSingle = round(float64(total) / 1e6 / bound)
	r.RatioSingle = round(r.MBPerS / r.BoundSingle)
	r.Notes = append(r.Notes, "bound_single is gzip -1 to disk + PutObject, in MB/s")
	return r, nil
}

// bigReport archives one large file alone, to check the worker's memory.
func (b *bench) bigReport(ctx context.Context) (Result, error) {
	if b.o.bigReportMB == 0 {
		return Result{}, nil
	}
	size := int64(b.o.bigReportMB) << 20
	r := Result{Workload: fmt.Sprintf("reports_%dmb_file", b.o.bigReportMB), Bytes: size}
	dir := filepath.Join(b.dir, "big")
	_ = os.MkdirAll(dir, 0o755)
	if err := writeCSV(filepath.Join(dir, "big.csv"), size, 99); err != nil {
		return r, err
	}
	pool, url, err := b.clone(ctx, "big")
	if err != nil {
		return r, err
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `DELETE FROM reports; DELETE FROM scenario_logs; DELETE FROM scenario_metrics`); err != nil {
		return r, err
	}
	if _, err := pool.Exec(ctx, `INSERT INTO reports (id, scenario_id, format, file_path, file_size_bytes, generated_by, created_at)
		VALUES (gen_random_uuid(), gen_random_uuid(), 'csv', 'big.csv', $1, 'bench', $2)`, size, asOf.AddDate(0, -7, 0)); err != nil {
		return r, err
	}
	secs, rss, _, err := b.ours(ctx, url, []string{"reports"}, dir)
	if err != nil {
		return r, err
	}
	r.Seconds, r.PeakRSSMB, r.MBPerS = round(secs), rss, round(float64(size)/1e6/secs)
	return r, nil
}

// nightlyWorkload runs the whole nightly volume through one archive run:
// the three branches in parallel, as the schedule would.
func (b *bench) nightlyWorkload(ctx context.Context) (Result, error) {
	r := Result{Workload: "nightly", Rows: int64(b.o.logs + b.o.metrics), Bytes: int64(b.o.reports) * int64(b.o.reportMB) << 20}
	dir, err := b.linkFiles("nightly")
	if err != nil {
		return r, err
	}
	pool, url, err := b.clone(ctx, "nightly")
	if err != nil {
		return r, err
	}
	defer pool.Close()
	for table, cutoff := range map[string]time.Time{"logs": logsCutoff, "metrics": metricsCutoff} {
		if err := ensurePartitions(ctx, pool, table, cutoff); err != nil {
			return r, err
		}
	}
	secs, rss, id, err := b.ours(ctx, url, []string{"logs", "metrics", "reports"}, dir)
	if err != nil {
		return r, err
	}
	ms, events, err := batchTimes(ctx, b.c, id)
	if err != nil {
		return r, err
	}
	r.Seconds, r.PeakRSSMB, r.HistoryEvents = round(secs), rss, events
	r.P50BatchMS, r.P99BatchMS = percentile(ms, 0.5), percentile(ms, 0.99)
	r.Notes = append(r.Notes, fmt.Sprintf("%d log rows + %d metric samples + %d reports of %d MB in one run", b.o.logs, b.o.metrics, b.o.reports, b.o.reportMB))
	return r, nil
}
