package main

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/workflows"
)

const drainRows, drainBatch = 3000, 1000

// drainCase is a worker process with a logs run whose first MoveBatch is
// in flight, held in the database: the test holds a SHARE lock on
// scenario_logs, which the batch's LOCK TABLE ... IN ROW EXCLUSIVE MODE
// waits for, after it claimed its ledger row. No sleep decides anything.
type drainCase struct {
	admin     *pgxpool.Pool
	c         client.Client
	run       client.WorkflowRun
	w         *proc
	base      string // the worker's health URL
	lock      pgx.Tx
	workerURL string
	queue     string
	sumBefore string
}

func newDrainCase(t *testing.T, stopTimeout string) *drainCase {
	ctx := context.Background()
	d := &drainCase{queue: "drain-" + testenv.RandomID()}
	var dbURL string
	d.admin, dbURL = testenv.NewDB(t)
	testenv.InsertLogs(t, d.admin, testenv.SpreadTimes(drainRows, cutoff, time.Hour))
	_, d.sumBefore = testenv.LogsChecksum(t, d.admin, "v_scenario_logs_all", "")
	d.c = testenv.Temporal(t)
	d.workerURL = testenv.WorkerURL(t, dbURL)

	var err error
	if d.lock, err = d.admin.Begin(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.lock.Rollback(ctx) })
	if _, err := d.lock.Exec(ctx, `LOCK TABLE scenario_logs IN SHARE MODE`); err != nil {
		t.Fatal(err)
	}
	d.w = startWorker(t, d.workerURL, d.queue, "ARCHIVE_WORKER_STOP_TIMEOUT="+stopTimeout)
	d.base = d.w.healthURL()
	d.run, err = d.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "drain-" + testenv.RandomID(), TaskQueue: d.queue},
		workflows.ArchiveWorkflowName, workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf,
			BatchSize: drainBatch, MinBatch: drainBatch, MaxBatch: drainBatch, ActivityTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "a MoveBatch waiting on the test's lock", func() bool {
		return testenv.Count(t, d.admin, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE ONLY%'`) == 1
	})
	desc, err := d.c.DescribeWorkflowExecution(ctx, d.run.GetID(), "")
	if err != nil {
		t.Fatal(err)
	}
	// The batch is a local activity: it runs inside the workflow task the
	// worker holds open, and no activity is pending on the server.
	if n, wt := len(desc.GetPendingActivities()), desc.GetPendingWorkflowTask(); n != 0 || wt.GetState() != enumspb.PENDING_WORKFLOW_TASK_STATE_STARTED {
		t.Fatalf("%d pending activities, workflow task %v; want none, and the workflow task started (running the local batch)", n, wt)
	}
	if code, body := get(d.base + "/readyz"); code != 200 {
		t.Fatalf("/readyz before SIGTERM: %d\n%s", code, body)
	}
	return d
}

// finish runs the rest of the run on a new worker and checks that every
// row is in one place with its content, and returns the run's activities.
func (d *drainCase) finish(t *testing.T) []attempt {
	w2 := startWorker(t, d.workerURL, d.queue)
	var res workflows.ArchiveResult
	if err := testenv.Wait(t, d.c, d.run, 2*time.Minute, &res); err != nil {
		t.Fatalf("the run after the drain: %v\n%s", err, w2.out.String())
	}
	if n, sum := testenv.LogsChecksum(t, d.admin, "v_scenario_logs_all", ""); n != drainRows || sum != d.sumBefore {
		t.Fatalf("live ∪ archive: %d rows (%s), was %d (%s)", n, sum, drainRows, d.sumBefore)
	}
	if n := testenv.Count(t, d.admin, `SELECT count(*) FROM scenario_logs_archive`); n != drainRows || res.Tables[0].RowsArchived != drainRows {
		t.Fatalf("archive holds %d rows, summary %d; want %d", n, res.Tables[0].RowsArchived, drainRows)
	}
	if n := testenv.Count(t, d.admin, `SELECT count(*) FROM archive_batches b
		WHERE rows_moved <> (SELECT count(*) FROM scenario_logs_archive a WHERE a.archive_batch_id = b.batch_id)`); n != 0 {
		t.Fatalf("%d ledger batches disagree with the rows carrying their id", n)
	}
	w2.signal(syscall.SIGTERM)
	if err := w2.wait(30 * time.Second); exitCode(err) != 0 {
		t.Fatalf("the idle worker exited with %v", err)
	}
	return attempts(t, d.c, d.run.GetID(), "")
}

func moveBatches(list []attempt) []attempt {
	var out []attempt
	for _, a := range list {
		if a.Type == "MoveBatch" {
			out = append(out, a)
		}
	}
	return out
}

// TestDrainCommitsTheBatchInFlight: SIGTERM while a MoveBatch is in
// flight. /readyz turns 503 "draining" and names the batch; the lock is
// released; the worker exits 0 once the batch committed. The ledger holds
// that batch once with its rows moved once, and the history shows it
// completed on attempt 1 (no retry after a timeout). A second worker then
// finishes the run with every activity on attempt 1.
func TestDrainCommitsTheBatchInFlight(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	began := time.Now()
	d := newDrainCase(t, "60s")

	d.w.signal(syscall.SIGTERM)
	sigterm := time.Now()
	var body string
	waitFor(t, 10*time.Second, "/readyz saying draining", func() bool {
		var code int
		code, body = get(d.base + "/readyz")
		return code == 503 && strings.HasPrefix(body, "not ready: draining")
	})
	if !strings.Contains(body, "(SIGTERM); 1 activity in flight: MoveBatch") {
		t.Fatalf("/readyz while draining:\n%s", body)
	}
	t.Logf("DRAIN /readyz while draining: 503\n%s", body)
	if code, _ := get(d.base + "/healthz"); code != 200 || d.w.exited() {
		t.Fatalf("the draining worker: /healthz %d, exited %v", code, d.w.exited())
	}
	if n := testenv.Count(t, d.admin, `SELECT count(*) FROM archive_batches`); n != 0 {
		t.Fatalf("%d ledger rows visible before the batch could commit", n)
	}

	if err := d.lock.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	released := time.Now()
	if err := d.w.wait(30 * time.Second); exitCode(err) != 0 {
		t.Fatalf("the worker exited with %v; output:\n%s", err, d.w.out.String())
	}
	exited := time.Now()
	if d.w.logLine("drained: every activity in flight finished") == nil {
		t.Fatalf("no drained line in the output:\n%s", d.w.out.String())
	}

	// The batch committed once: one ledger row, its rows in the archive
	// once, none left live.
	var batchID string
	var moved int64
	if err := d.admin.QueryRow(ctx, `SELECT batch_id::text, rows_moved FROM archive_batches`).Scan(&batchID, &moved); err != nil {
		t.Fatalf("the ledger (want exactly one batch): %v", err)
	}
	inBatch := testenv.Count(t, d.admin, `SELECT count(*) FROM scenario_logs_archive WHERE archive_batch_id = $1::uuid`, batchID)
	archived := testenv.Count(t, d.admin, `SELECT count(*) FROM scenario_logs_archive`)
	live := testenv.Count(t, d.admin, `SELECT count(*) FROM scenario_logs`)
	if moved != drainBatch || inBatch != drainBatch || archived != drainBatch || live != drainRows-drainBatch {
		t.Fatalf("after the drain: batch %s moved %d (%d rows carry its id), archive %d, live %d; want %d, once", batchID, moved, inBatch, archived, live, drainBatch)
	}
	list := attempts(t, d.c, d.run.GetID(), "")
	// The batch in flight (a local activity) completed on attempt 1; the
	// draining worker refused to start the next one as a local activity:
	// a second later it goes to the task queue as an activity, for the
	// next worker.
	if moves := moveBatches(list); len(moves) != 2 || moves[0].Outcome != "completed" || moves[0].Attempt != 1 || moves[1].Outcome != "refused" {
		t.Fatalf("MoveBatch in the history: %+v; want the drained one completed on attempt 1, then the next refused", moves)
	}
	onlyFirstAttempts(t, list)
	t.Logf("DRAIN: worker exited %s after the lock's release (%s after SIGTERM); batch %s committed once (%d rows) on attempt 1",
		exited.Sub(released).Round(time.Millisecond), exited.Sub(sigterm).Round(time.Millisecond), batchID, moved)

	onlyFirstAttempts(t, d.finish(t))
	// The shape of a refused local batch handed on as an activity.
	testenv.RecordHistory(t, d.c, d.run, "archive-logs-drain-v1.json")
	t.Logf("DRAIN: the run completed on a second worker, every activity on attempt 1; %s in all", time.Since(began).Round(time.Millisecond))
}

// TestDrainTimeoutRetriesAtOnce: with no time to drain
// (ARCHIVE_WORKER_STOP_TIMEOUT=0, the SDK's default) the batch in flight
// is cancelled and rolls back. It is a local activity: there is no attempt
// on the server to fail, and the workflow task that ran it is left open,
// so the next worker takes the workflow over after that task's timeout
// (10 s) and runs the batch again, instead of after the batch's 30 s
// start-to-close timeout.
func TestDrainTimeoutRetriesAtOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDrainCase(t, "0")
	d.w.signal(syscall.SIGTERM)
	if err := d.w.wait(30 * time.Second); exitCode(err) != 0 {
		t.Fatalf("the worker exited with %v; output:\n%s", err, d.w.out.String())
	}
	if d.w.logLine("a cancelled local activity is run again by the next worker") == nil {
		t.Fatalf("the worker did not fail the cancelled attempt:\n%s", d.w.out.String())
	}
	if n := testenv.Count(t, d.admin, `SELECT count(*) FROM archive_batches`); n != 0 {
		t.Fatalf("%d ledger rows after a cancelled batch", n)
	}
	if err := d.lock.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	moves := moveBatches(d.finish(t))
	took := time.Since(began)
	if len(moves) == 0 || moves[0].Outcome != "completed" || took > 20*time.Second {
		t.Fatalf("the cancelled batch: %+v, run finished in %s; want it run again within the workflow task's timeout", moves, took)
	}
	for _, a := range moves {
		if a.Attempt != 1 || a.Outcome != "completed" {
			t.Fatalf("MoveBatch %+v", a)
		}
	}
	t.Logf("DRAIN: stop timeout 0: the cancelled batch rolled back and ran again on the next worker; run finished %s after the restart", took.Round(time.Millisecond))
}
