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
// hold the workflow task while they run; the loop ends that task after a
// second of batches (a 1 ms timer), so a pause signal sent mid-run reaches
// it long before the run's end, the progress query answers, no batch runs
// while paused, and the run finishes after the resume with every row moved
// once. Recorded as archive-logs-local-pause-v1 (the yield timer's shape).
func TestPauseReachesLocalBatches(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	// 150,000 more eligible rows: 300 batches of 500, several seconds of
	// batches in all.
	cutoff := asOf.Add(-365 * 24 * time.Hour)
	testenv.InsertLogs(t, b.db, testenv.SpreadTimes(150_000, cutoff.Add(-time.Hour), time.Minute))
	before := b.snapshot(t)

	var once sync.Once
	first := make(chan struct{})
	b.acts.AfterCommit = func(context.Context, activities.MoveBatchResult) error {
		once.Do(func() { close(first) })
		return nil
	}
	run, err := b.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "e2e-local-pause-" + testenv.RandomID(), TaskQueue: b.queue},
		workflows.ArchiveWorkflowName, workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf, BatchSize: 500, MinBatch: 500, MaxBatch: 500})
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

	// In the history: local batches (markers), yield timers, and no batch
	// between the pause and the resume.
	phase, markers, paused, timers := "running", 0, 0, 0
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
		case enumspb.EVENT_TYPE_TIMER_STARTED:
			timers++
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
			if e.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName() == "MoveBatch" {
				t.Errorf("a MoveBatch activity (event %d): want every batch local", e.GetEventId())
			}
		}
	}
	t.Logf("%d local batches, %d yield timers, %d while paused", markers, timers, paused)
	if markers < 300 || timers == 0 || paused != 0 {
		t.Fatalf("%d local batches, %d yield timers, %d batches while paused: want 300 or more, some, none", markers, timers, paused)
	}
	record(t, b.c, run, "archive-logs-local-pause-v1.json")
}
