package e2e

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/workflows"
)

func TestOperations(t *testing.T) {
	t.Run("continue-as-new carries totals exactly: the sum over runs is what moved", func(t *testing.T) {
		b := setup(t)
		before := b.snapshot(t)
		res, run, err := b.run(t, workflows.ArchiveInput{
			Tables: []string{"logs"}, AsOf: asOf, BatchSize: 1000, MinBatch: 1000, MaxBatch: 1000, MaxBatchesPerRun: 3,
		})
		if err != nil {
			t.Fatalf("run: %v", err)
		}
		record(t, b.c, run, "archive-logs-continued-v4.json")
		// 12 batches with rows, 3 a run, plus empty sweeps at the end (their
		// number depends on where a run boundary falls): 3 or more
		// generations. The rows are what must be exact.
		full := before.eligibleN/1000 + 1
		if res.Runs < int((full-1)/3) {
			t.Fatalf("%d continue-as-new generations, want at least %d", res.Runs, (full-1)/3)
		}
		tr := res.Tables[0]
		if tr.RowsArchived != before.eligibleN || tr.Batches < full {
			t.Fatalf("final totals %d rows in %d batches, want %d in at least %d", tr.RowsArchived, tr.Batches, before.eligibleN, full)
		}
		after := b.snapshot(t)
		if after.archN != before.eligibleN || after.archSum != before.eligibleSum || after.allSum != before.allSum {
			t.Fatal("rows lost, duplicated or changed across continue-as-new")
		}
		if n := testenv.Count(t, b.db, `SELECT count(*) FROM archive_jobs`); n != 1 {
			t.Fatalf("%d archive_jobs rows, want the one job carried through every run", n)
		}
	})

	t.Run("two workers on one task queue share a 200k-row table; each row moves once", func(t *testing.T) {
		b := setup(t)
		testenv.InsertLogs(t, b.db, testenv.SpreadTimes(200000, asOf.AddDate(-1, 0, -1), 2*time.Minute))
		// A second worker (its own connection pool, as a second process
		// would have) on the same task queue.
		db2 := testenv.WorkerPool(t, b.url)
		var mine, theirs countingActs
		b.acts.AfterCommit = mine.count
		second := &activities.Activities{DB: db2, AfterCommit: theirs.count}
		testenv.StartWorkerOn(t, b.c, b.queue, second)
		before := b.snapshot(t)

		res, _, err := b.run(t, workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf, BatchSize: 5000, Parallel: 4})
		if err != nil {
			t.Fatalf("run: %v", err)
		}
		after := b.snapshot(t)
		if after.archN != before.eligibleN || after.archSum != before.eligibleSum || after.allSum != before.allSum {
			t.Fatalf("archive has %d rows, want the %d eligible with the same content", after.archN, before.eligibleN)
		}
		if res.Tables[0].RowsArchived != before.eligibleN {
			t.Fatalf("summary says %d rows, want %d", res.Tables[0].RowsArchived, before.eligibleN)
		}
		if mine.batches() == 0 || theirs.batches() == 0 {
			t.Fatalf("batches by worker: %d and %d; want both to have worked", mine.batches(), theirs.batches())
		}
		t.Logf("worker 1 moved %d batches, worker 2 %d", mine.batches(), theirs.batches())
	})

	t.Run("a paused run moves nothing until resumed", func(t *testing.T) {
		b := setup(t)
		ctx := context.Background()
		run, err := b.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "e2e-pause-" + testenv.RandomID(), TaskQueue: b.queue},
			workflows.ArchiveWorkflowName, workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf, BatchSize: 500, MinBatch: 500, MaxBatch: 500})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.c.SignalWorkflow(ctx, run.GetID(), "", workflows.SignalPause, workflows.PauseSignal{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { p := progress(t, b.c, run); return p.Paused })
		// Observation window, not synchronisation: unpaused, this run moves
		// a batch every few milliseconds; paused, the ledger must not grow
		// beyond the one batch that may have been in flight.
		n1 := testenv.Count(t, b.db, `SELECT count(*) FROM archive_batches`)
		time.Sleep(time.Second)
		n2 := testenv.Count(t, b.db, `SELECT count(*) FROM archive_batches`)
		if n2 > n1+1 {
			t.Fatalf("the ledger grew from %d to %d batches while paused (one in flight is allowed)", n1, n2)
		}
		if p := progress(t, b.c, run); p.Tables[0].Status != workflows.StatusRunning {
			t.Fatalf("the run ended while paused: %+v", p.Tables[0])
		}
		if err := b.c.SignalWorkflow(ctx, run.GetID(), "", workflows.SignalResume, workflows.ResumeSignal{}); err != nil {
			t.Fatal(err)
		}
		var res workflows.ArchiveResult
		if err := run.Get(ctx, &res); err != nil {
			t.Fatal(err)
		}
		if res.Tables[0].Status != workflows.StatusCompleted || res.Tables[0].RowsArchived == 0 {
			t.Fatalf("after resume: %+v", res.Tables[0])
		}
	})
}

type countingActs struct {
	mu sync.Mutex
	n  int
}

func (c *countingActs) count(context.Context, activities.MoveBatchResult) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	return nil
}

func (c *countingActs) batches() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func progress(t *testing.T, c client.Client, run client.WorkflowRun) workflows.ArchiveResult {
	t.Helper()
	v, err := c.QueryWorkflow(context.Background(), run.GetID(), run.GetRunID(), workflows.ProgressQuery)
	if err != nil {
		t.Fatalf("progress query: %v", err)
	}
	var p workflows.ArchiveResult
	if err := v.Get(&p); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitFor polls cond until it holds, up to 30 s: synchronisation on an
// observable state, not a sleep standing in for one.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
