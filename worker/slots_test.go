package main

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/config"
	"github.com/mockupaws/archiver/internal/health"
	"github.com/mockupaws/archiver/internal/testenv"
)

const (
	fanOutBatches  = 50
	fanOutRows     = 100 // per batch
	fanOutTimeout  = 5 * time.Second
	fanOutWorkflow = "SlotsTestFanOut"
)

type fanOutInput struct {
	Batches []activities.MoveBatchInput
	Timeout time.Duration
}

// slotsFanOut schedules every batch at once: the production MoveBatch on a
// small start-to-close timeout, retried (the control's batches may time
// out waiting for a connection; the ledger makes a retry safe).
func slotsFanOut(ctx workflow.Context, in fanOutInput) (int64, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: in.Timeout,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, MaximumAttempts: 10}})
	futures := make([]workflow.Future, len(in.Batches))
	for i, b := range in.Batches {
		futures[i] = workflow.ExecuteActivity(ctx, "MoveBatch", b)
	}
	var rows int64
	for _, f := range futures {
		var r activities.MoveBatchResult
		if err := f.Get(ctx, &r); err != nil {
			return rows, err
		}
		rows += r.RowsMoved
	}
	return rows, nil
}

// acquireTracer records how long each acquire from the pool took.
type acquireTracer struct {
	mu       sync.Mutex
	acquires int
	longest  time.Duration
}

type acquireStart struct{}

func (a *acquireTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}

func (a *acquireTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (a *acquireTracer) TraceAcquireStart(ctx context.Context, _ *pgxpool.Pool, _ pgxpool.TraceAcquireStartData) context.Context {
	return context.WithValue(ctx, acquireStart{}, time.Now())
}

func (a *acquireTracer) TraceAcquireEnd(ctx context.Context, _ *pgxpool.Pool, _ pgxpool.TraceAcquireEndData) {
	if began, ok := ctx.Value(acquireStart{}).(time.Time); ok {
		d := time.Since(began)
		a.mu.Lock()
		a.acquires++
		a.longest = max(a.longest, d)
		a.mu.Unlock()
	}
}

func (a *acquireTracer) reset() (int, time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	n, d := a.acquires, a.longest
	a.acquires, a.longest = 0, 0
	return n, d
}

// fanOutResult is what one fan-out of 50 batches showed.
type fanOutResult struct {
	// startedAtOnce: activities started while the first ones were held;
	// queued: scheduled on the server, not started, meanwhile.
	startedAtOnce, queued int
	peak                  int           // most activities running at once
	emptyAcquires         int64         // acquires that waited for a connection (pgxpool)
	emptyWait             time.Duration // their total wait (pgxpool)
	acquires              int
	longestAcquire        time.Duration
	attempts              []attempt
	took                  time.Duration
}

// fanOut runs 50 MoveBatch activities scheduled at once on the worker the
// binary builds from cfg (its pool and its slots). The first ones to start
// are held on a lock the test holds (as a slow batch would hold its
// connection) until as many as the worker takes have started; then all
// run.
func fanOut(t *testing.T, admin *pgxpool.Pool, c client.Client, cfg config.Config) fanOutResult {
	ctx := context.Background()
	testenv.InsertLogs(t, admin, testenv.SpreadTimes(fanOutBatches*fanOutRows, cutoff, time.Minute))
	tracer := &acquireTracer{}
	pcfg, err := poolConfig(cfg, "archiver-worker", cfg.DBMaxConns)
	if err != nil {
		t.Fatal(err)
	}
	pcfg.ConnConfig.Tracer = tracer
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	acts := &activities.Activities{DB: pool}
	jobID := uuid.NewString()
	if _, err := acts.StartJob(ctx, activities.StartJobInput{JobID: jobID, Table: "logs", WorkflowID: "slots-test", RunID: jobID, AsOf: asOf, Cutoff: cutoff}); err != nil {
		t.Fatal(err)
	}
	if _, err := acts.EnsurePartitions(ctx, activities.EnsurePartitionsInput{Table: "logs", Cutoff: cutoff}); err != nil {
		t.Fatal(err)
	}
	// Every connection of the pool opened once: from here an acquire
	// waits only when all of them are in use.
	var conns []*pgxpool.Conn
	for range cfg.DBMaxConns {
		conn, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
	}
	for _, conn := range conns {
		conn.Release()
	}
	base := pool.Stat()
	tracer.reset()

	inFlight := health.NewInFlight()
	cfg.TaskQueue = "slots-" + testenv.RandomID()
	w := newWorker(c, cfg, "", acts, inFlight)
	w.RegisterWorkflowWithOptions(slotsFanOut, workflow.RegisterOptions{Name: fanOutWorkflow})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	lock, err := admin.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(ctx) //nolint:errcheck
	if _, err := lock.Exec(ctx, `LOCK TABLE scenario_logs IN SHARE MODE`); err != nil {
		t.Fatal(err)
	}
	in := fanOutInput{Timeout: fanOutTimeout}
	for range fanOutBatches {
		in.Batches = append(in.Batches, activities.MoveBatchInput{Table: "logs", JobID: jobID, BatchID: uuid.NewString(), Cutoff: cutoff, Limit: fanOutRows})
	}
	began := time.Now()
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "slots-" + testenv.RandomID(), TaskQueue: cfg.TaskQueue}, fanOutWorkflow, in)
	if err != nil {
		t.Fatal(err)
	}
	// As many activities as the worker takes: its slots, or (the SDK's
	// default of 1,000) all 50; those holding a connection wait on the lock.
	takes := fanOutBatches
	if cfg.ActivitySlots > 0 {
		takes = min(cfg.ActivitySlots, fanOutBatches)
	}
	waitFor(t, 20*time.Second, "the activities the worker takes started, the first ones waiting on the lock", func() bool {
		return inFlight.Count() == takes && testenv.Count(t, admin, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = 'archiver-worker'
			  AND wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE ONLY%'`) == int64(min(takes, cfg.DBMaxConns))
	})
	var r fanOutResult
	d, err := c.DescribeWorkflowExecution(ctx, run.GetID(), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range d.GetPendingActivities() {
		switch a.GetState() {
		case enumspb.PENDING_ACTIVITY_STATE_STARTED:
			r.startedAtOnce++
		case enumspb.PENDING_ACTIVITY_STATE_SCHEDULED:
			r.queued++
		}
	}
	if err := lock.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	var rows int64
	if err := testenv.Wait(t, c, run, time.Minute, &rows); err != nil {
		t.Fatalf("fan-out: %v", err)
	}
	r.took = time.Since(began)
	if rows != fanOutBatches*fanOutRows {
		t.Fatalf("the batches moved %d rows, want %d", rows, fanOutBatches*fanOutRows)
	}
	if n := testenv.Count(t, admin, `SELECT count(*) FROM archive_batches WHERE job_id = $1::uuid AND rows_moved = $2`, jobID, fanOutRows); n != fanOutBatches {
		t.Fatalf("%d ledger batches of %d rows, want %d", n, fanOutRows, fanOutBatches)
	}
	s := pool.Stat()
	r.peak = inFlight.Peak()
	r.emptyAcquires, r.emptyWait = s.EmptyAcquireCount()-base.EmptyAcquireCount(), s.EmptyAcquireWaitTime()-base.EmptyAcquireWaitTime()
	r.acquires, r.longestAcquire = tracer.reset()
	r.attempts = attempts(t, c, run.GetID(), "")
	return r
}

// TestActivitySlotsSizedToPool: 50 MoveBatch activities scheduled at once
// on a 5 s start-to-close timeout, on the worker the binary builds: a pool
// of ARCHIVE_DB_MAX_CONNS=5, hence 4 activity slots (the fixed-size
// tuner). The worker takes 4 (46 wait on the task queue, where no
// start-to-close timeout runs), no acquire ever waits for a connection,
// and every batch completes on attempt 1. The control, the same with the
// SDK's default of 1,000 slots, takes all 50 at once and 45 of them wait
// inside the worker for one of the 5 connections, their timeout running:
// what the tuner prevents, and proof that the measurement sees it.
func TestActivitySlotsSizedToPool(t *testing.T) {
	t.Parallel()
	admin, dbURL := testenv.NewDB(t)
	c := testenv.Temporal(t)
	env := map[string]string{"DATABASE_URL": testenv.WorkerURL(t, dbURL), "ARCHIVE_DB_MAX_CONNS": "5"}
	cfg, err := config.LoadFrom(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DBMaxConns != 5 || cfg.ActivitySlots != 4 {
		t.Fatalf("ARCHIVE_DB_MAX_CONNS=5: pool %d, slots %d; want 5, 4", cfg.DBMaxConns, cfg.ActivitySlots)
	}

	tuned := fanOut(t, admin, c, cfg)
	onlyFirstAttempts(t, tuned.attempts)
	if len(tuned.attempts) != fanOutBatches {
		t.Fatalf("%d activities in the history, want %d", len(tuned.attempts), fanOutBatches)
	}
	if tuned.startedAtOnce != cfg.ActivitySlots || tuned.queued != fanOutBatches-cfg.ActivitySlots || tuned.peak > cfg.ActivitySlots {
		t.Fatalf("with %d slots: %d started at once, %d queued, peak %d", cfg.ActivitySlots, tuned.startedAtOnce, tuned.queued, tuned.peak)
	}
	if tuned.emptyAcquires != 0 || tuned.longestAcquire >= fanOutTimeout {
		t.Fatalf("with %d slots on a pool of %d: %d acquires waited for a connection (%s in all), the longest acquire took %s",
			cfg.ActivitySlots, cfg.DBMaxConns, tuned.emptyAcquires, tuned.emptyWait, tuned.longestAcquire)
	}
	t.Logf("SLOTS pool %d, slots %d: %d batches in %s; %d started at once, %d queued on the server; peak %d running; %d acquires, 0 waited for a connection, longest %s; all on attempt 1",
		cfg.DBMaxConns, cfg.ActivitySlots, fanOutBatches, tuned.took.Round(time.Millisecond), tuned.startedAtOnce, tuned.queued, tuned.peak,
		tuned.acquires, tuned.longestAcquire.Round(time.Microsecond))

	control := cfg
	control.ActivitySlots = 0 // the SDK's default: 1,000
	def := fanOut(t, admin, c, control)
	if def.startedAtOnce != fanOutBatches || def.emptyAcquires < int64(fanOutBatches-cfg.DBMaxConns) {
		t.Fatalf("control (SDK default slots): %d started at once, %d acquires waited; want %d and at least %d",
			def.startedAtOnce, def.emptyAcquires, fanOutBatches, fanOutBatches-cfg.DBMaxConns)
	}
	retried := 0
	for _, a := range def.attempts {
		if a.Attempt > 1 {
			retried++
		}
	}
	t.Logf("SLOTS control, pool %d, SDK default slots: %d started at once, peak %d running; %d acquires waited for a connection (%s in all), longest %s; %d batches retried after a timeout",
		cfg.DBMaxConns, def.startedAtOnce, def.peak, def.emptyAcquires, def.emptyWait.Round(time.Millisecond), def.longestAcquire.Round(time.Millisecond), retried)
}
