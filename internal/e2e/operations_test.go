package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
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

	t.Run("a paused run schedules no batch until resumed", func(t *testing.T) {
		b := setup(t)
		ctx := context.Background()
		before := b.snapshot(t)
		// The second batch's activity waits after its commit until the pause
		// is in: the pause then lands on a running loop with a batch in
		// flight, which must finish while no new one starts.
		var mu sync.Mutex
		committed := 0
		inFlight, release := make(chan struct{}), make(chan struct{})
		b.acts.AfterCommit = func(ctx context.Context, r activities.MoveBatchResult) error {
			mu.Lock()
			committed++
			n := committed
			mu.Unlock()
			if n != 2 {
				return nil
			}
			close(inFlight)
			select {
			case <-release:
			case <-ctx.Done():
			case <-time.After(time.Minute): // never hold the run for good
			}
			return nil
		}
		run, err := b.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "e2e-pause-" + testenv.RandomID(), TaskQueue: b.queue},
			workflows.ArchiveWorkflowName, workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf, BatchSize: 500, MinBatch: 500, MaxBatch: 500,
				BatchActivities: true}) // a local batch holds the workflow task: the pause would wait for it
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-inFlight:
		case <-time.After(time.Minute):
			t.Fatalf("no second batch committed within a minute; pending activities: %q", describe(t, b.c, run))
		}
		if err := b.c.SignalWorkflow(ctx, run.GetID(), "", workflows.SignalPause, workflows.PauseSignal{Reason: "e2e"}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { return progress(t, b.c, run).Paused })
		close(release)
		// Paused and settled: the batch in flight has finished and nothing
		// else is scheduled.
		waitFor(t, func() bool { return progress(t, b.c, run).Paused && len(describe(t, b.c, run)) == 0 })
		if p := progress(t, b.c, run); p.Tables[0].Status != workflows.StatusRunning || p.Tables[0].RowsArchived >= before.eligibleN {
			t.Fatalf("the run is not paused mid-way: %+v (of %d eligible rows)", p.Tables[0], before.eligibleN)
		}
		if err := b.c.SignalWorkflow(ctx, run.GetID(), "", workflows.SignalResume, workflows.ResumeSignal{}); err != nil {
			t.Fatal(err)
		}
		var res workflows.ArchiveResult
		if err := testenv.Wait(t, b.c, run, testenv.DefaultWait, &res); err != nil {
			t.Fatalf("run: %v", err)
		}

		// The condition itself, in the history: the pause stopped the batch
		// loop, the batch in flight finished, the resume restarted it.
		var scheduledBefore, scheduledPaused, completedPaused, scheduledAfter int
		phase := "running"
		moveBatch := map[int64]bool{} // scheduled event ids of MoveBatch
		for _, e := range historyChain(t, b.c, run) {
			switch e.GetEventType() {
			case enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
				switch e.GetWorkflowExecutionSignaledEventAttributes().GetSignalName() {
				case workflows.SignalPause:
					phase = "paused"
				case workflows.SignalResume:
					phase = "resumed"
				}
			case enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
				if e.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName() != "MoveBatch" {
					continue
				}
				moveBatch[e.GetEventId()] = true
				switch phase {
				case "running":
					scheduledBefore++
				case "paused":
					scheduledPaused++
					t.Errorf("MoveBatch scheduled while paused (event %d)", e.GetEventId())
				case "resumed":
					scheduledAfter++
				}
			case enumspb.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
				if phase == "paused" && moveBatch[e.GetActivityTaskCompletedEventAttributes().GetScheduledEventId()] {
					completedPaused++
				}
			}
		}
		t.Logf("MoveBatch scheduled: %d before the pause, %d while paused, %d after the resume; %d completed while paused",
			scheduledBefore, scheduledPaused, scheduledAfter, completedPaused)
		if phase != "resumed" {
			t.Fatalf("the history lacks the pause or the resume signal (last phase %s)", phase)
		}
		if scheduledBefore < 2 || completedPaused != 1 {
			t.Fatalf("%d batches scheduled before the pause and %d completed while paused: want 2 or more, and the one in flight", scheduledBefore, completedPaused)
		}
		if scheduledAfter == 0 {
			t.Fatal("no MoveBatch scheduled after the resume")
		}
		after := b.snapshot(t)
		if tr := res.Tables[0]; tr.Status != workflows.StatusCompleted || tr.RowsArchived != before.eligibleN {
			t.Fatalf("after resume: %+v, want completed with the %d eligible rows", tr, before.eligibleN)
		}
		if after.archN != before.eligibleN || after.archSum != before.eligibleSum || after.allSum != before.allSum {
			t.Fatalf("archive holds %d rows, want the %d eligible with their content", after.archN, before.eligibleN)
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

// describe lists the activities the workflow's current run has pending, as
// "type attempt N: last failure" (empty: none).
func describe(t *testing.T, c client.Client, run client.WorkflowRun) []string {
	t.Helper()
	d, err := c.DescribeWorkflowExecution(context.Background(), run.GetID(), "")
	if err != nil {
		t.Fatalf("describe %s: %v", run.GetID(), err)
	}
	var out []string
	for _, a := range d.GetPendingActivities() {
		out = append(out, fmt.Sprintf("%s attempt %d: %s", a.GetActivityType().GetName(), a.GetAttempt(), a.GetLastFailure().GetMessage()))
	}
	return out
}

// historyChain is the history of run and of the runs it continued as new
// into, in order.
func historyChain(t *testing.T, c client.Client, run client.WorkflowRun) []*historypb.HistoryEvent {
	t.Helper()
	var events []*historypb.HistoryEvent
	for runID := run.GetRunID(); runID != ""; {
		iter := c.GetWorkflowHistory(context.Background(), run.GetID(), runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		runID = ""
		for iter.HasNext() {
			e, err := iter.Next()
			if err != nil {
				t.Fatalf("read history of %s: %v", run.GetID(), err)
			}
			events = append(events, e)
			runID = e.GetWorkflowExecutionContinuedAsNewEventAttributes().GetNewExecutionRunId()
		}
	}
	return events
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
