package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/objectstore"
	"github.com/mockupaws/archiver/migrations"
	"github.com/mockupaws/archiver/workflows"
)

type bench struct {
	o        options
	adminURL string
	c        client.Client
	store    *objectstore.Store
	dir      string // files: seed/, runs
	worker   string // binary
	seedDB   string
	dbs      []string
	roles    []string // dropped after the databases
}

func newBench(ctx context.Context, o options) (*bench, error) {
	b := &bench{o: o, adminURL: os.Getenv("ARCHIVER_TEST_ADMIN_URL"), seedDB: fmt.Sprintf("bench_seed_%d", time.Now().Unix())}
	if b.adminURL == "" {
		return nil, fmt.Errorf("ARCHIVER_TEST_ADMIN_URL is not set: run `make bench`, which starts the dev stack")
	}
	c, err := client.Dial(client.Options{HostPort: os.Getenv("TEMPORAL_ADDRESS"), Namespace: os.Getenv("TEMPORAL_NAMESPACE")})
	if err != nil {
		return nil, fmt.Errorf("connect to Temporal: %w", err)
	}
	b.c = c
	if b.dir, err = os.MkdirTemp("", "archiver-bench-"); err != nil {
		return nil, err
	}
	b.worker = filepath.Join(b.dir, "worker")
	if out, err := exec.Command("go", "build", "-o", b.worker, "github.com/mockupaws/archiver/worker").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build worker: %v\n%s", err, out)
	}
	bucket := fmt.Sprintf("bench-%d", time.Now().Unix())
	if b.store, err = objectstore.New(ctx, objectstore.Options{Bucket: bucket, Endpoint: os.Getenv("AWS_ENDPOINT_URL"), Region: "us-east-1"}); err != nil {
		return nil, err
	}
	if _, err := b.store.Client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		return nil, fmt.Errorf("create bucket: %w", err)
	}
	return b, nil
}

func (b *bench) close() {
	b.c.Close()
	if b.o.keep {
		fmt.Fprintf(os.Stderr, "bench: kept %s and databases %v\n", b.dir, append(b.dbs, b.seedDB))
		return
	}
	_ = os.RemoveAll(b.dir)
	ctx := context.Background()
	if admin, err := pgx.Connect(ctx, b.adminURL); err == nil {
		for _, db := range append(b.dbs, b.seedDB) {
			_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{db}.Sanitize()+" WITH (FORCE)")
		}
		for _, role := range b.roles {
			_, _ = admin.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{role}.Sanitize())
		}
		admin.Close(ctx)
	}
	// The bucket keeps its objects (the dev server's folder is throwaway).
}

func (b *bench) dbURL(name string) string {
	return strings.Replace(b.adminURL, "/postgres?", "/"+name+"?", 1)
}

func (b *bench) exec(ctx context.Context, sql string) error {
	admin, err := pgx.Connect(ctx, b.adminURL)
	if err != nil {
		return err
	}
	defer admin.Close(ctx)
	_, err = admin.Exec(ctx, sql)
	return err
}

// seed makes the template database and the report files.
func (b *bench) seed(ctx context.Context) error {
	if err := b.exec(ctx, "CREATE DATABASE "+b.seedDB); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, b.dbURL(b.seedDB))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, _, err := migrations.Up(ctx, conn); err != nil {
		return err
	}
	if err := seedLogs(ctx, conn, b.o.logs); err != nil {
		return err
	}
	daySpan := int64(b.o.metricDays) * 24 * 3600
	order := ""
	if b.o.metricsInTimeOrder {
		order = " ORDER BY 3"
	}
	if _, err := conn.Exec(ctx, `
		INSERT INTO scenario_metrics (id, scenario_id, timestamp, metric_type, metric_name, value, unit, extra_data)
		SELECT gen_random_uuid(), ('00000000-0000-4000-8000-' || lpad((g % 20)::text, 12, '0'))::uuid,
		       $1::timestamptz - ((g::bigint * 7919) % $2::bigint) * interval '1 second' - interval '1 second',
		       (ARRAY['latency','cost','throughput'])[g % 3 + 1], (ARRAY['p50','p95','p99','avg'])[g % 4 + 1],
		       round((100 + (g * 37 % 1000) / 7.0)::numeric, 6), (ARRAY['ms','usd','rps'])[g % 3 + 1], '{}'::jsonb
		FROM generate_series(1, $3::int) g`+order, metricsCutoff, daySpan, b.o.metrics); err != nil {
		return fmt.Errorf("seed metrics: %w", err)
	}
	seedFiles := filepath.Join(b.dir, "seed")
	if err := os.MkdirAll(seedFiles, 0o755); err != nil {
		return err
	}
	for i := 0; i < b.o.reports; i++ {
		name := fmt.Sprintf("report-%03d.csv", i)
		if err := writeCSV(filepath.Join(seedFiles, name), int64(b.o.reportMB)<<20, i); err != nil {
			return err
		}
		if _, err := conn.Exec(ctx, `INSERT INTO reports (id, scenario_id, format, file_path, file_size_bytes, generated_by, created_at)
			VALUES (gen_random_uuid(), gen_random_uuid(), 'csv', $1, $2, 'bench', $3)`, name, b.o.reportMB<<20, asOf.AddDate(0, -7, -i)); err != nil {
			return err
		}
	}
	_, err = conn.Exec(ctx, `ANALYZE`)
	return err
}

// seedLogs inserts n log rows, all older than the cut-off, spread over
// the year before it, into the freshly migrated scenario_logs. It loads
// with the table's indexes dropped and builds them afterwards (bulkLoad),
// which checks that the table ends with the same definitions the
// migrations gave it.
func seedLogs(ctx context.Context, conn *pgx.Conn, n int) error {
	return bulkLoad(ctx, conn, "scenario_logs", func(tx pgx.Tx) error { return insertLogs(ctx, tx, n, false) })
}

// insertLogs is seedLogs' one INSERT ... SELECT generate_series: the rows
// scattered over the heap, or stored in time order (inTimeOrder).
func insertLogs(ctx context.Context, tx pgx.Tx, n int, inTimeOrder bool) error {
	logSpan := int64(365 * 24 * 3600)
	order := ""
	if inTimeOrder {
		order = " ORDER BY 3"
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO scenario_logs (id, scenario_id, received_at, message_hash, message_preview, source, size_bytes, has_pii, token_count, sqs_blocks)
		SELECT gen_random_uuid(), ('00000000-0000-4000-8000-' || lpad((g % 50)::text, 12, '0'))::uuid,
		       $1::timestamptz - ((g::bigint * 7919) % $2::bigint) * interval '1 second' - interval '1 second',
		       encode(sha256(g::text::bytea), 'hex'), 'bench log message number ' || g || ' with some text to be realistic',
		       (ARRAY['api','sqs','lambda','batch'])[g % 4 + 1], 200 + g % 1800, g % 17 = 0, 50 + g % 400, 1 + g % 4
		FROM generate_series(1, $3::int) g`+order, logsCutoff, logSpan, n); err != nil {
		return fmt.Errorf("seed logs: %w", err)
	}
	return nil
}

// writeCSV writes n bytes of CSV-like, compressible text.
func writeCSV(path string, n int64, seed int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 0, 1<<20)
	var written int64
	for i := 0; written < n; i++ {
		buf = fmt.Appendf(buf, "2025-%02d-%02dT%02d:%02d:%02dZ,scenario-%d,latency_ms,%d.%03d,%s\n",
			i%12+1, i%28+1, i%24, i%60, (i*7)%60, (i*seed)%50, (i*31+seed)%997, i%1000, []string{"ok", "ok", "retry", "ok", "timeout"}[i%5])
		if len(buf) >= 1<<20 {
			m := min(int64(len(buf)), n-written)
			if _, err := f.Write(buf[:m]); err != nil {
				return err
			}
			written += m
			buf = buf[:0]
		}
	}
	return nil
}

// clone makes an identical copy of the seeded database.
func (b *bench) clone(ctx context.Context, label string) (*pgxpool.Pool, string, error) {
	name := fmt.Sprintf("bench_%s_%d", label, time.Now().UnixNano()%1e9)
	if err := b.exec(ctx, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", name, b.seedDB)); err != nil {
		return nil, "", fmt.Errorf("clone: %w", err)
	}
	b.dbs = append(b.dbs, name)
	pool, err := pgxpool.New(ctx, b.dbURL(name))
	if err != nil {
		return nil, "", err
	}
	return pool, b.dbURL(name), nil
}

// ensurePartitions creates the archive partitions up front, outside the
// timed part, so that bounds and our run start from the same state.
func ensurePartitions(ctx context.Context, pool *pgxpool.Pool, table string, cutoff time.Time) error {
	_, err := (&activities.Activities{DB: pool}).EnsurePartitions(ctx, activities.EnsurePartitionsInput{Table: table, Cutoff: cutoff})
	return err
}

// timed runs f and returns its seconds.
func timed(f func() error) (float64, error) {
	t0 := time.Now()
	err := f()
	return time.Since(t0).Seconds(), err
}

// ours runs the real archive of tables through Temporal and a worker
// process on db, and returns seconds, the worker's peak RSS and the
// workflow id.
func (b *bench) ours(ctx context.Context, dbURL string, tables []string, reportsDir string) (float64, float64, string, error) {
	in := workflows.ArchiveInput{Tables: tables, AsOf: asOf, Parallel: b.o.parallel, BatchActivities: b.o.batchActivities}
	secs, rss, id, _, err := b.runOurs(ctx, dbURL, in, reportsDir)
	return secs, rss, id, err
}

// runOurs runs one archive run with input in through a worker process.
func (b *bench) runOurs(ctx context.Context, dbURL string, in workflows.ArchiveInput, reportsDir string) (float64, float64, string, workflows.ArchiveResult, error) {
	var res workflows.ArchiveResult
	var secs float64
	var id string
	rss, err := b.withWorker(ctx, dbURL, reportsDir, nil, func(queue string, _ int) error {
		id = "bench-" + queue
		var err error
		secs, err = b.execute(ctx, queue, id, workflows.ArchiveWorkflowName, in, &res)
		if err != nil {
			return fmt.Errorf("our run of %v: %w", in.Tables, err)
		}
		return nil
	})
	if err != nil {
		return 0, 0, "", res, err
	}
	return secs, rss, id, res, nil
}

// withWorker starts a worker process (the real worker binary) on a task
// queue of its own against dbURL, with env added to the bench's, runs f
// with the queue and the worker's pid, and returns the worker's peak RSS
// (VmHWM), read before it stops: the high-water mark of this one process,
// started for this run alone.
func (b *bench) withWorker(ctx context.Context, dbURL, reportsDir string, env []string, f func(queue string, pid int) error) (float64, error) {
	queue := fmt.Sprintf("bench-%d", time.Now().UnixNano())
	w := exec.Command(b.worker)
	w.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "ARCHIVE_TASK_QUEUE="+queue, "ARCHIVE_MAX_REPLICA_LAG=0",
		"REPORTS_DIR="+reportsDir, "REPORTS_ARCHIVE_BUCKET="+b.store.Bucket(), "METRICS_ADDR=")
	w.Env = append(append(w.Env, b.o.workerEnv...), env...)
	logf, _ := os.Create(filepath.Join(b.dir, queue+".log"))
	defer logf.Close()
	w.Stdout, w.Stderr = logf, logf
	if err := w.Start(); err != nil {
		return 0, err
	}
	defer func() { _ = w.Process.Signal(syscall.SIGTERM); _ = w.Wait() }()
	if err := b.polled(ctx, queue); err != nil {
		return 0, err
	}
	err := f(queue, w.Process.Pid)
	rss := peakRSS(w.Process.Pid)
	if err != nil {
		log, _ := os.ReadFile(logf.Name())
		return 0, fmt.Errorf("%w\n%s", err, tail(string(log), 2000))
	}
	return rss, nil
}

// polled waits until a worker polls queue for workflow and activity tasks:
// a run is timed on a running worker, as the nightly one is, not from the
// worker process's start (connecting, preflight: about 2 s).
func (b *bench) polled(ctx context.Context, queue string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for _, kind := range []enumspb.TaskQueueType{enumspb.TASK_QUEUE_TYPE_WORKFLOW, enumspb.TASK_QUEUE_TYPE_ACTIVITY} {
		for {
			d, err := b.c.DescribeTaskQueue(ctx, queue, kind)
			if err == nil && len(d.GetPollers()) > 0 {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("no worker polls %s (%v): %w", queue, err, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// execute runs the workflow name with in on queue and waits for its
// result; it returns the seconds from start to result.
func (b *bench) execute(ctx context.Context, queue, id, name string, in, out any) (float64, error) {
	return timed(func() error {
		// As the starter starts runs (its workflow task timeout).
		run, err := b.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: queue, WorkflowTaskTimeout: workflows.TaskTimeout}, name, in)
		if err != nil {
			return err
		}
		return run.Get(ctx, out)
	})
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// linkFiles gives a run its own directory of the seeded report files
// (hard links: our run removes them, the seed stays).
func (b *bench) linkFiles(label string) (string, error) {
	dir := filepath.Join(b.dir, label)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	entries, err := os.ReadDir(filepath.Join(b.dir, "seed"))
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		if err := os.Link(filepath.Join(b.dir, "seed", e.Name()), filepath.Join(dir, e.Name())); err != nil {
			return "", err
		}
	}
	return dir, nil
}
