package e2e

import (
	"context"
	"sync"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/workflows"
)

// TestPauseReachesLocalBatches: a run's batches are local activities, which
// hold the workflow task while they run; the SDK heartbeats that task at
// 80% of the run's workflow task timeout (workflows.TaskTimeout), so a
// pause signal sent mid-run reaches the loop long before the run's end, the
// progress query answers, no batch runs while paused, and the run finishes
// after the resume with every row moved once. Recorded as
// archive-logs-local-pause-v1 (task heartbeats between local batches).
func TestPauseReachesLocalBatches(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	// 150,000 more eligible rows: 750 batches of 200, several seconds of
	// batches in all (the first task heartbeat comes after 2.4 s).
	cutoff := asOf.Add(-365 * 24 * time.Hour)
	testenv.InsertLogs(t, b.db, testenv.SpreadTimes(150_000, cutoff.Add(-time.Hour), time.Minute))
	before := b.snapshot(t)

	var once sync.Once
	first := make(chan struct{})
	b.acts.AfterCommit = func(context.Context, activities.MoveBatchResult) error {
		once.Do(func() { close(first) })
		return nil
	}
	run, err := b.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "e2e-local-pause-" + testenv.RandomID(), TaskQueue: b.queue, WorkflowTaskTimeout: workflows.TaskTimeout},
		workflows.ArchiveWorkflowName, workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf, BatchSize: 200, MinBatch: 200, MaxBatch: 200})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-first:
	case <-time.After(time.Minute):
		t.Fatal("no batch committed within a minute")
	}
	if err := b.c.SignalWorkflow(ctx, run.GetID(), "", workflows.SignalPause, workflows.PauseSignal{Reason: "e2e"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return progress(t, b.c, run).Paused })
	p := progress(t, b.c, run)
	if p.Tables[0].Status != workflows.StatusRunning || p.Tables[0].RowsArchived >= before.eligibleN {
		t.Fatalf("the pause came too late: %s, %d of %d rows moved", p.Tables[0].Status, p.Tables[0].RowsArchived, before.eligibleN)
	}
	t.Logf("paused after %d of %d rows", p.Tables[0].RowsArchived, before.eligibleN)
	if err := b.c.SignalWorkflow(ctx, run.GetID(), "", workflows.SignalResume, workflows.ResumeSignal{}); err != nil {
		t.Fatal(err)
	}
	var res workflows.ArchiveResult
	if err := testenv.Wait(t, b.c, run, testenv.DefaultWait, &res); err != nil {
		t.Fatalf("run: %v", err)
	}
	after := b.snapshot(t)
	if after.archN != before.eligibleN || after.archSum != before.eligibleSum || after.allSum != before.allSum {
		t.Fatalf("archive has %d rows, want the %d eligible with the same content", after.archN, before.eligibleN)
	}

	// In the history: local batches (markers) over several workflow tasks,
	// and between the pause and the resume at most the batch that was in
	// flight when the task heartbeat brought the signal in.
	phase, markers, paused, tasks := "running", 0, 0, 0
	for _, e := range historyChain(t, b.c, run) {
		switch e.GetEventType() {
		case enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
			phase = e.GetWorkflowExecutionSignaledEventAttributes().GetSignalName()
		case enumspb.EVENT_TYPE_MARKER_RECORDED:
			if e.GetMarkerRecordedEventAttributes().GetMarkerName() == "LocalActivity" {
				markers++
				if phase == workflows.SignalPause {
					paused++
				}
			}
		case enumspb.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
			tasks++
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
			if e.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName() == "MoveBatch" {
				t.Errorf("a MoveBatch activity (event %d): want every batch local", e.GetEventId())
			}
		}
	}
	t.Logf("%d local batches over %d workflow tasks, %d while paused", markers, tasks, paused)
	if markers < 750 || paused > 1 {
		t.Fatalf("%d local batches, %d completed while paused: want 750 or more, at most the one in flight", markers, paused)
	}
	record(t, b.c, run, "archive-logs-local-pause-v3.json")
}
