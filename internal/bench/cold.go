package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/client"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/policy"
	"github.com/mockupaws/archiver/migrations"
	"github.com/mockupaws/archiver/workflows"
)

// The cold archive's goal: the worker's peak RSS while it exports a
// partition of several million rows.
const coldRSSGoalMB = 200

// rssOfWorker says what worker_peak_rss_mb is on the cold lines.
const rssOfWorker = "worker: the real worker binary, a fresh process for this run alone; VmHWM of /proc/PID/status read after the run"

// The cold workloads' months: the partition exported as Parquet, the one
// exported as CSV (both past the retention of the bench's entry) and the
// attached one restored by batches (within it).
var (
	coldParquetMonth = time.Date(2023, 1, 1, 0, 0, 0, 0, time.UTC)
	coldCSVMonth     = time.Date(2023, 2, 1, 0, 0, 0, 0, time.UTC)
	coldRestoreMonth = time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)
)

// coldWorkloads measures the cold archive on one database of its own,
// whose scenario_logs_archive gets monthly partitions made server-side (no
// clone: each step starts where the one before left off, in this order):
//   - cold_export (parquet): an archive run whose entry exports the
//     partition of --cold-rows rows past retention, then drops it;
//   - cold_export (csv): the same for a second partition as gzip CSV;
//   - cold_restore from export: RestoreWorkflow over the Parquet
//     partition's month (RestoreExport: download, COPY, checksum, insert);
//   - cold_restore from archive: RestoreWorkflow over the attached
//     partition of --cold-restore-rows rows (RestoreBatch, the entry's
//     batch size).
//
// Each runs on a fresh worker process, whose peak RSS is reported.
func (b *bench) coldWorkloads(ctx context.Context, emit func(Result)) error {
	if b.o.coldRows == 0 {
		return nil
	}
	name := fmt.Sprintf("bench_cold_%d", time.Now().Unix())
	if err := b.exec(ctx, "CREATE DATABASE "+name); err != nil {
		return err
	}
	b.dbs = append(b.dbs, name)
	url := b.dbURL(name)
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return err
	}
	defer pool.Close()
	logs, err := policy.Lookup("logs")
	if err != nil {
		return err
	}
	if err := b.seedCold(ctx, pool, logs); err != nil {
		return fmt.Errorf("seed the cold archive: %w", err)
	}
	parquet, err := b.coldExport(ctx, pool, name, logs, coldParquetMonth, policy.ExportParquet)
	if err != nil {
		return err
	}
	emit(parquet)
	if b.o.coldCSV {
		r, err := b.coldExport(ctx, pool, name, logs, coldCSVMonth, policy.ExportCSV)
		if err != nil {
			return err
		}
		emit(r)
	}
	r, err := b.coldRestore(ctx, pool, name, exportEntry(logs, coldParquetMonth, policy.ExportParquet), coldParquetMonth, int64(b.o.coldRows), true)
	if err != nil {
		return err
	}
	emit(r)
	if b.o.coldRestoreRows > 0 {
		r, err := b.coldRestore(ctx, pool, name, exportEntry(logs, coldParquetMonth, policy.ExportParquet), coldRestoreMonth, int64(b.o.coldRestoreRows), false)
		if err != nil {
			return err
		}
		emit(r)
	}
	return nil
}

// exportEntry is the logs entry with an export in format and a retention
// that expires month's partition (at the bench's as-of) and no later one.
func exportEntry(logs policy.Table, month time.Time, format string) policy.Table {
	upper := month.AddDate(0, 1, 0)
	logs.Retention = time.Duration(asOf.Sub(upper)/policy.Day) * policy.Day // the limit falls just after upper
	logs.Export = &policy.Export{Prefix: "bench-cold/" + format, Format: format}
	return logs
}

// coldPreview is a pool of log-like words the previews are cut from:
// text that compresses like real log lines, not a repeated token.
const coldPreview = `request accepted from upstream gateway; retrying call after 503 from inventory service, ` +
	`backoff 200ms; timeout waiting for SQS batch of 10 messages on queue orders-ingest; token budget exceeded, ` +
	`truncating prompt to 4096 tokens; PII redacted from payload (email, phone); lambda cold start in eu-west-1, ` +
	`init 812ms; scenario step completed with status ok; cache miss for key user-profile, loaded from postgres in 14ms; ` +
	`rate limit reached for tenant, request deferred; schema validation failed on field amount: expected decimal; ` +
	`connection reset by peer while streaming response; batch committed, 500 rows, lag 2.1s; `

// seedColdSQL fills a standalone table (%s) with rows $3..$4 of $5 spread
// evenly over the month starting at $1 ($2 seconds long), in time order as
// archiving leaves them, with archive batches of 10,000 rows. $6 makes a
// partition's ids, hashes and batches its own.
const seedColdSQL = `
INSERT INTO %s (id, scenario_id, received_at, message_hash, message_preview, source, size_bytes, has_pii, token_count, sqs_blocks, archived_at, archive_batch_id)
SELECT gen_random_uuid(),
       ('00000000-0000-4000-8000-' || lpad((g %% 50)::text, 12, '0'))::uuid,
       $1::timestamptz + ((g - 1) * ($2::float8 / $5::float8)) * interval '1 second',
       encode(sha256(($6::text || '/' || g)::bytea), 'hex'),
       CASE WHEN g %% 7 = 3 THEN NULL
            ELSE 'scenario ' || g %% 50 || ' req=' || left(md5($6::text || '/' || g), 12) || ': ' || substr($7::text, (1 + (g * 7919) %% 500)::int, (20 + (g * 31) %% 220)::int) END,
       (ARRAY['api','sqs','lambda','batch'])[g %% 4 + 1], 200 + g %% 1800, g %% 17 = 0, 50 + g %% 400, 1 + g %% 4,
       $1::timestamptz + interval '400 days' + (g / 10000) * interval '2 seconds',
       md5('bench batch ' || $6::text || '/' || g / 10000)::uuid
FROM generate_series($3::bigint, $4::bigint) g`

// seedCold makes the schema, the archive partitions of the cold workloads
// and the worker's INSERT on the live table (restores need it).
func (b *bench) seedCold(ctx context.Context, pool *pgxpool.Pool, logs policy.Table) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	_, _, err = migrations.Up(ctx, conn.Conn())
	conn.Release()
	if err != nil {
		return err
	}
	type part struct {
		month time.Time
		rows  int
	}
	parts := []part{{coldParquetMonth, b.o.coldRows}}
	if b.o.coldCSV {
		parts = append(parts, part{coldCSVMonth, b.o.coldRows})
	}
	if b.o.coldRestoreRows > 0 {
		parts = append(parts, part{coldRestoreMonth, b.o.coldRestoreRows})
	}
	t0 := time.Now()
	var names []string
	for _, p := range parts {
		t1 := time.Now()
		name, err := seedArchivePartition(ctx, pool, logs, p.month, p.rows)
		if err != nil {
			return err
		}
		names = append(names, name)
		fmt.Fprintf(os.Stderr, "bench: seeded %s with %d rows in %.1f s\n", name, p.rows, time.Since(t1).Seconds())
	}
	// Old partitions are vacuumed (hint bits set, visibility map) and on
	// disk: the runs neither pay for that nor share the disk with a
	// checkpoint.
	if err := parallel(len(names), func(i int) error {
		_, err := pool.Exec(ctx, `VACUUM (ANALYZE) `+pgx.Identifier{names[i]}.Sanitize())
		return err
	}); err != nil {
		return err
	}
	for _, s := range []string{`ANALYZE`, `GRANT INSERT ON scenario_logs TO ` + activities.WorkerRole, `CHECKPOINT`} {
		if _, err := pool.Exec(ctx, s); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "bench: cold archive seeded in %.1f s\n", time.Since(t0).Seconds())
	return nil
}

// seedCopySQL adds a copy of the rows of %[1]s before $3, shifted $1
// seconds later, with ids of their own and batches ($2) of their own.
const seedCopySQL = `
INSERT INTO %[1]s (id, scenario_id, received_at, message_hash, message_preview, source, size_bytes, has_pii, token_count, sqs_blocks, archived_at, archive_batch_id)
SELECT gen_random_uuid(), scenario_id, received_at + $1::float8 * interval '1 second', message_hash, message_preview, source,
       size_bytes, has_pii, token_count, sqs_blocks, archived_at + $1::float8 * interval '1 second', md5(archive_batch_id::text || '/' || $2::text)::uuid
FROM %[1]s WHERE received_at < $3`

// seedCopies is how many copies of a generated fifth make a large
// partition: copying a row costs a third of generating it.
const seedCopies = 5

// seedArchivePartition builds month's partition of the archive as a
// standalone table, its indexes (two at once), hands it to the worker role
// as the archive's partitions are, and attaches it. The rows are made
// server-side, two statements at a time: INSERT ... SELECT generate_series
// of the first fifth of the month (a partition of 1M rows or more), then
// that fifth copied into the four after it with new ids and batches.
func seedArchivePartition(ctx context.Context, pool *pgxpool.Pool, logs policy.Table, month time.Time, rows int) (string, error) {
	name := activities.PartitionName(logs, month)
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := pool.Exec(ctx, `CREATE TABLE `+ident+` (LIKE `+catalog.QuoteName(logs.Archive)+` INCLUDING DEFAULTS)`); err != nil {
		return "", err
	}
	t0 := time.Now()
	span := month.AddDate(0, 1, 0).Sub(month).Seconds()
	copies, base := 1, rows
	if rows >= 1_000_000 {
		copies, base = seedCopies, rows/seedCopies
	}
	generated := rows - (copies-1)*base // the first fifth and the remainder
	const conns = 2
	err := parallel(conns, func(i int) error {
		from, to := int64(generated)*int64(i)/conns+1, int64(generated)*int64(i+1)/conns
		_, err := pool.Exec(ctx, fmt.Sprintf(seedColdSQL, ident), month, span, from, to, rows, name, strings.Repeat(coldPreview, 2))
		return err
	})
	if err == nil && copies > 1 {
		step := float64(base) * span / float64(rows)
		upTo := month.Add(time.Duration(step * float64(time.Second)))
		err = parallel(conns, func(i int) error {
			for j := 1 + i; j < copies; j += conns {
				if _, err := pool.Exec(ctx, fmt.Sprintf(seedCopySQL, ident), float64(j)*step, strconv.Itoa(j), upTo); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err != nil {
		return "", fmt.Errorf("generate %s: %w", name, err)
	}
	t1 := time.Now()
	idx := []string{
		`SET maintenance_work_mem = '256MB'; CREATE UNIQUE INDEX ` + pgx.Identifier{name + "_pkey"}.Sanitize() + ` ON ` + ident + ` (id, received_at)`,
		`SET maintenance_work_mem = '256MB'; CREATE INDEX ` + pgx.Identifier{name + "_scenario_id_received_at_idx"}.Sanitize() + ` ON ` + ident + ` (scenario_id, received_at)`,
	}
	if err := parallel(len(idx), func(i int) error { _, err := pool.Exec(ctx, idx[i]); return err }); err != nil {
		return "", fmt.Errorf("index %s: %w", name, err)
	}
	t2 := time.Now()
	for _, s := range []string{
		`ALTER TABLE ` + ident + ` ADD CONSTRAINT ` + pgx.Identifier{name + "_pkey"}.Sanitize() + ` PRIMARY KEY USING INDEX ` + pgx.Identifier{name + "_pkey"}.Sanitize(),
		`ALTER TABLE ` + ident + ` OWNER TO ` + activities.WorkerRole,
		fmt.Sprintf(`ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM ('%s') TO ('%s')`, catalog.QuoteName(logs.Archive), ident,
			month.Format(time.RFC3339), month.AddDate(0, 1, 0).Format(time.RFC3339)),
	} {
		if _, err := pool.Exec(ctx, s); err != nil {
			return "", fmt.Errorf("attach %s: %w", name, err)
		}
	}
	fmt.Fprintf(os.Stderr, "bench: %s: rows %.1f s, indexes %.1f s, attach %.1f s\n", name, t1.Sub(t0).Seconds(), t2.Sub(t1).Seconds(), time.Since(t2).Seconds())
	return name, nil
}

// parallel runs f(0..n-1) at once and returns the first error.
func parallel(n int, f func(i int) error) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = f(i) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// coldExport runs an archive run whose entry exports month's partition in
// format before retention drops it, on a fresh worker process, and reports
// the export: rows, the object's bytes, the ApplyRetention activity's
// seconds (the export is all it does here), the step times and the
// worker's peak RSS.
func (b *bench) coldExport(ctx context.Context, pool *pgxpool.Pool, db string, logs policy.Table, month time.Time, format string) (Result, error) {
	r := Result{Workload: "cold_export", Format: format, Rows: int64(b.o.coldRows), RSSOf: rssOfWorker, RSSGoalMB: coldRSSGoalMB, WorkerEnv: b.o.workerEnv}
	entry := exportEntry(logs, month, format)
	if err := entry.Validate(); err != nil {
		return r, err
	}
	part := activities.PartitionName(entry, month)
	if err := pool.QueryRow(ctx, `SELECT pg_table_size($1::regclass)`, part).Scan(&r.SourceBytes); err != nil {
		return r, err
	}
	dir := filepath.Join(b.dir, "export-"+format)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return r, err
	}
	in := workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf, Policy: []policy.Table{entry}}
	var res workflows.ArchiveResult
	var id string
	var smp *sampler
	r.LoadAvg = []float64{loadAvg()}
	rss, err := b.withWorker(ctx, b.dbURL(db), "", []string{"ARCHIVE_EXPORT_DIR=" + dir}, func(queue string, pid int) error {
		id = "bench-" + queue
		smp = startSampler(ctx, pool, db, pid, dir, classifyExport)
		secs, err := b.execute(ctx, queue, id, workflows.ArchiveWorkflowName, in, &res)
		smp.stop()
		r.RunSeconds = round(secs)
		return err
	})
	r.LoadAvg = append(r.LoadAvg, loadAvg())
	if err != nil {
		return r, fmt.Errorf("cold export (%s): %w", format, err)
	}
	tr := res.Tables[0]
	if tr.Status != workflows.StatusCompleted || tr.Retention == nil || len(tr.Retention.Exports) != 1 || tr.Retention.ExportedRows != r.Rows {
		return r, fmt.Errorf("cold export (%s): table result %+v, retention %+v: want %d rows exported from %s", format, tr, tr.Retention, r.Rows, part)
	}
	r.Bytes = tr.Retention.ExportedBytes
	spans, err := activitySpans(ctx, b.c, id)
	if err != nil {
		return r, err
	}
	act, ok := lastSpan(spans, "ApplyRetention")
	if !ok {
		return r, fmt.Errorf("cold export (%s): no ApplyRetention in the history", format)
	}
	secs := act.closed.Sub(act.scheduled).Seconds()
	r.Seconds, r.Attempts = round(secs), int(act.attempt)
	r.RowsPerS = round(float64(r.Rows) / secs)
	r.MBPerS = round(float64(r.Bytes) / 1e6 / secs)
	r.SourceMBPerS = round(float64(r.SourceBytes) / 1e6 / secs)
	r.PeakRSSMB = rss
	ok = rss <= coldRSSGoalMB
	r.RSSOK = &ok

	// Where the time goes: each step starts at the first sign of it
	// (a query's start in pg_stat_activity, a file in the export
	// directory, the manifest's timestamps).
	var created, verified, dropped time.Time
	if err := pool.QueryRow(ctx, `SELECT created_at, verified_at, dropped_at FROM archive_exports WHERE partition_name = $1 ORDER BY id DESC LIMIT 1`, part).
		Scan(&created, &verified, &dropped); err != nil {
		return r, fmt.Errorf("read the manifest of %s: %w", part, err)
	}
	upload := "upload"
	if _, seen := smp.first["file:verify"]; !seen {
		upload = "upload_verify" // too quick to see the verify's file
	}
	steps := []step{
		{"detach", act.scheduled}, {"checksum", smp.first["q:checksum"]}, {"batch_counts", smp.first["q:batches"]},
		{"write", smp.first["q:select"]}, {upload, created}, {"verify", smp.first["file:verify"]}, {"drop", verified}, {"", dropped}, {"", act.closed},
	}
	r.Steps, r.RSSSteps = smp.breakdown(steps)
	r.Notes = append(r.Notes, "load_avg: the host's 1-minute load average at the start and end of the run (other work on the host shows in the seconds)",
		fmt.Sprintf("one monthly partition (%s) of scenario_logs_archive, %d rows, exported by retention (ApplyRetention) on a worker process of its own", part, r.Rows),
		"seconds: the ApplyRetention activity (detach, checksum, write, upload, verify, drop; from the history); run_seconds: the whole archive run; bytes and mb_per_s: the object; source_bytes: pg_table_size of the partition",
		"step_ms: detach until the checksum query starts, checksum (count + content hash scan), batch_counts (GROUP BY archive_batch_id scan), write (stream rows into the local file + fsync), upload (PUT), verify (download, SHA-256, footer or CSV count), drop; from pg_stat_activity, the export directory and the manifest; rss_step_mb: the largest VmRSS sampled (every 100 ms) in each")
	if r.Attempts > 1 {
		r.Notes = append(r.Notes, fmt.Sprintf("the activity took %d attempts", r.Attempts))
	}
	fmt.Fprintf(os.Stderr, "bench: cold_export %s %.2f s, worker peak RSS %.1f MB\n", format, secs, rss)
	return r, nil
}

// coldRestore runs RestoreWorkflow over month on a fresh worker process:
// from the export of a dropped partition (fromExport) or from an attached
// archive partition, by batches of the entry's size.
func (b *bench) coldRestore(ctx context.Context, pool *pgxpool.Pool, db string, entry policy.Table, month time.Time, want int64, fromExport bool) (Result, error) {
	r := Result{Workload: "cold_restore", From: "archive", Rows: want, RSSOf: rssOfWorker, RSSGoalMB: coldRSSGoalMB, WorkerEnv: b.o.workerEnv}
	if fromExport {
		r.From, r.Format = "export", policy.ExportParquet
	}
	dir := filepath.Join(b.dir, "restore-"+r.From)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return r, err
	}
	req := workflows.RestoreRequest{Table: "logs", Policy: &entry, After: month, Before: month.AddDate(0, 1, 0)}
	var res workflows.RestoreResult
	var id string
	var smp *sampler
	var secs float64
	budget := time.Duration(0)
	if !fromExport {
		budget = b.o.coldRestoreBudget
	}
	spent := false
	r.LoadAvg = []float64{loadAvg()}
	rss, err := b.withWorker(ctx, b.dbURL(db), "", []string{"ARCHIVE_EXPORT_DIR=" + dir}, func(queue string, pid int) error {
		id = "bench-restore-" + queue
		smp = startSampler(ctx, pool, db, pid, dir, classifyRestore)
		defer smp.stop()
		t0 := time.Now()
		run, err := b.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: queue}, workflows.RestoreWorkflowName, req)
		if err != nil {
			return err
		}
		done := make(chan error, 1)
		go func() { done <- run.Get(ctx, &res) }()
		var over <-chan time.Time
		if budget > 0 {
			over = time.After(budget)
		}
		select {
		case err = <-done:
		case <-over:
			// The budget is spent: the restore stops here, and what it
			// committed so far is what is measured.
			spent = true
			err = b.c.TerminateWorkflow(ctx, id, "", "bench: --cold-restore-budget spent")
			<-done
		}
		secs = time.Since(t0).Seconds()
		return err
	})
	r.LoadAvg = append(r.LoadAvg, loadAvg())
	if err != nil {
		return r, fmt.Errorf("cold restore from %s: %w", r.From, err)
	}
	got := res.RowsFromArchive
	if fromExport {
		got = res.RowsFromExports
	}
	if spent {
		var batches int
		if err := pool.QueryRow(ctx, `SELECT COALESCE(sum(rows_moved), 0), count(*) FILTER (WHERE rows_moved > 0) FROM archive_batches WHERE kind = 'restore' AND export_id IS NULL AND cutoff = $1`, req.Before).
			Scan(&got, &batches); err != nil {
			return r, err
		}
		res.Batches = batches
		r.Rows = got
	}
	var live int64
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM scenario_logs WHERE received_at >= $1 AND received_at < $2`, req.After, req.Before).Scan(&live); err != nil {
		return r, err
	}
	if (!spent && got != want) || live != got {
		return r, fmt.Errorf("cold restore from %s: restored %d rows (%d live in the window), want %d: %+v", r.From, got, live, want, res)
	}
	if !fromExport {
		complete := !spent
		r.WindowRows, r.Complete = want, &complete
	}
	r.RunSeconds, r.Batches, r.PeakRSSMB = round(secs), res.Batches, rss
	ok := rss <= coldRSSGoalMB
	r.RSSOK = &ok
	spans, err := activitySpans(ctx, b.c, id)
	if err != nil {
		return r, err
	}
	if fromExport {
		act, found := lastSpan(spans, "RestoreExport")
		if !found {
			return r, fmt.Errorf("cold restore: no RestoreExport in the history")
		}
		secs = act.closed.Sub(act.scheduled).Seconds()
		r.Attempts = int(act.attempt)
		var bytes int64
		if err := pool.QueryRow(ctx, `SELECT bytes FROM archive_exports WHERE partition_name = $1 ORDER BY id DESC LIMIT 1`, activities.PartitionName(entry, month)).Scan(&bytes); err != nil {
			return r, err
		}
		r.Bytes, r.MBPerS = bytes, round(float64(bytes)/1e6/secs)
		r.Steps, r.RSSSteps = smp.breakdown([]step{
			{"download", act.scheduled}, {"load", smp.first["q:copy"]}, {"checksum", smp.first["q:checksum"]}, {"insert", smp.first["q:insert"]}, {"", act.closed},
		})
		r.Notes = append(r.Notes, "from: the Parquet export of the partition cold_export dropped (RestoreExport); seconds: that activity; run_seconds: the whole RestoreWorkflow",
			"step_ms: download (GET + SHA-256 to a local file), load (Parquet decoded to CSV, COPY into a temp table), checksum (count + content hash of the temp table), insert (into scenario_logs, mark restored, ledger; commit); rss_step_mb: the largest VmRSS sampled in each")
	} else {
		ms, _, err := batchTimes(ctx, b.c, id)
		if err != nil {
			return r, err
		}
		var held float64
		for _, m := range ms {
			held += m
		}
		r.P50BatchMS, r.P99BatchMS = percentile(ms, 0.5), percentile(ms, 0.99)
		r.TemporalShare = round(max(0, 1-held/1000/secs))
		r.Notes = append(r.Notes, fmt.Sprintf("from: an attached archive partition (%s, window_rows rows) by RestoreBatch, %d rows a batch (the entry's); seconds: the whole RestoreWorkflow", activities.PartitionName(entry, month), entry.BatchSize))
		if spent {
			r.Notes = append(r.Notes, fmt.Sprintf("complete:false: stopped after --cold-restore-budget %s; rows are those restored by then (committed batches), rows_per_s their rate; --cold-restore-budget 0 restores the whole window", budget))
		}
	}
	r.Seconds = round(secs)
	r.RowsPerS = round(float64(r.Rows) / secs)
	fmt.Fprintf(os.Stderr, "bench: cold_restore from %s %.2f s, worker peak RSS %.1f MB\n", r.From, secs, rss)
	return r, nil
}

// classifyExport names the export's queries in pg_stat_activity.
func classifyExport(q string) string {
	switch {
	case strings.Contains(q, "sum(('x' || left(md5("):
		return "checksum"
	case strings.Contains(q, "jsonb_object_agg(b, n)"):
		return "batches"
	case strings.HasPrefix(strings.TrimSpace(q), "SELECT") && strings.Contains(q, "FROM ONLY"):
		return "select"
	}
	return ""
}

// classifyRestore names a restore's queries in pg_stat_activity.
func classifyRestore(q string) string {
	switch {
	case strings.HasPrefix(strings.TrimSpace(q), "COPY archiver_restore_stage"):
		return "copy"
	case strings.Contains(q, "sum(('x' || left(md5("):
		return "checksum"
	case strings.Contains(q, "WITH ins AS"):
		return "insert"
	}
	return ""
}

// sampler watches a run every 100 ms: the worker's VmRSS, the first start
// of each kind of query on the database (pg_stat_activity), and the first
// sight of each kind of file in the worker's export directory.
type sampler struct {
	cancel context.CancelFunc
	done   chan struct{}
	rss    []rssSample
	first  map[string]time.Time // "q:<kind>" (query_start), "file:<kind>"
}

type rssSample struct {
	at time.Time
	mb float64
}

func startSampler(ctx context.Context, pool *pgxpool.Pool, db string, pid int, dir string, classify func(string) string) *sampler {
	ctx, cancel := context.WithCancel(ctx)
	s := &sampler{cancel: cancel, done: make(chan struct{}), first: map[string]time.Time{}}
	see := func(kind string, at time.Time) {
		if prev, ok := s.first[kind]; !ok || at.Before(prev) {
			s.first[kind] = at
		}
	}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			now := time.Now()
			if mb := vmRSS(pid); mb > 0 {
				s.rss = append(s.rss, rssSample{now, mb})
			}
			if entries, err := os.ReadDir(dir); err == nil {
				for _, e := range entries {
					if kind, ok := strings.CutPrefix(e.Name(), "archiver-"); ok {
						kind, _, _ = strings.Cut(kind, "-")
						see("file:"+kind, now)
					}
				}
			}
			if rows, err := pool.Query(ctx, `SELECT query_start, query FROM pg_stat_activity
				WHERE datname = $1 AND state = 'active' AND pid <> pg_backend_pid() AND query_start IS NOT NULL`, db); err == nil {
				for rows.Next() {
					var at time.Time
					var q string
					if rows.Scan(&at, &q) == nil {
						if kind := classify(q); kind != "" {
							see("q:"+kind, at)
						}
					}
				}
				rows.Close()
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *sampler) stop() {
	s.cancel()
	<-s.done
}

// step is a named step starting at start; a step ends where the next
// (later) one starts. A step never seen (zero start) is left out; an
// unnamed one only ends the step before it.
type step struct {
	name  string
	start time.Time
}

// breakdown returns each step's milliseconds and the largest VmRSS sampled
// during it.
func (s *sampler) breakdown(steps []step) (map[string]int64, map[string]float64) {
	var seen []step
	for _, st := range steps {
		if !st.start.IsZero() {
			seen = append(seen, st)
		}
	}
	sort.SliceStable(seen, func(i, j int) bool { return seen[i].start.Before(seen[j].start) })
	ms, rss := map[string]int64{}, map[string]float64{}
	for i := 0; i+1 < len(seen); i++ {
		st := seen[i]
		if st.name == "" {
			continue
		}
		end := seen[i+1].start
		ms[st.name] += end.Sub(st.start).Milliseconds()
		for _, r := range s.rss {
			if !r.at.Before(st.start) && r.at.Before(end) {
				rss[st.name] = max(rss[st.name], r.mb)
			}
		}
	}
	return ms, rss
}

// loadAvg is the host's 1-minute load average (/proc/loadavg): the cold
// lines carry it at their start and end, since other work on the host
// shows in their seconds.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	v, _ := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	return v
}

// vmRSS reads a process's current resident set in MB.
func vmRSS(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return round(kb / 1024)
		}
	}
	return 0
}

// span is one activity of a workflow's history: when it was scheduled (its
// first attempt starts at once on the bench's idle worker), its last
// attempt's start, and its close.
type span struct {
	typ                        string
	scheduled, started, closed time.Time
	attempt                    int32
}

// activitySpans reads the activities of a workflow run from its history.
func activitySpans(ctx context.Context, c client.Client, workflowID string) ([]span, error) {
	byScheduled := map[int64]*span{}
	var order []int64
	iter := c.GetWorkflowHistory(ctx, workflowID, "", false, 0)
	for iter.HasNext() {
		ev, err := iter.Next()
		if err != nil {
			return nil, err
		}
		at := ev.GetEventTime().AsTime()
		switch {
		case ev.GetActivityTaskScheduledEventAttributes() != nil:
			byScheduled[ev.GetEventId()] = &span{typ: ev.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName(), scheduled: at}
			order = append(order, ev.GetEventId())
		case ev.GetActivityTaskStartedEventAttributes() != nil:
			a := ev.GetActivityTaskStartedEventAttributes()
			if s := byScheduled[a.GetScheduledEventId()]; s != nil {
				s.started, s.attempt = at, a.GetAttempt()
			}
		case ev.GetActivityTaskCompletedEventAttributes() != nil:
			if s := byScheduled[ev.GetActivityTaskCompletedEventAttributes().GetScheduledEventId()]; s != nil {
				s.closed = at
			}
		}
	}
	var out []span
	for _, id := range order {
		if s := byScheduled[id]; !s.closed.IsZero() {
			out = append(out, *s)
		}
	}
	return out, nil
}

// lastSpan is the last completed activity of type typ.
func lastSpan(spans []span, typ string) (span, bool) {
	for i := len(spans) - 1; i >= 0; i-- {
		if spans[i].typ == typ {
			return spans[i], true
		}
	}
	return span{}, false
}
