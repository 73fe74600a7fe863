package schedule_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/schedule"
	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/workflows"
)

func setup(t *testing.T) (client.Client, schedule.Options) {
	t.Helper()
	t.Parallel()
	db, _ := testenv.NewDB(t)
	c := testenv.Temporal(t)
	queue := testenv.StartWorker(t, c, &activities.Activities{DB: db})
	o := schedule.Options{ID: "test-nightly-" + testenv.RandomID(), TaskQueue: queue,
		Input: workflows.ArchiveInput{Tables: []string{"logs", "metrics"}}}
	t.Cleanup(func() { _ = schedule.Delete(context.Background(), c, o.ID) })
	return c, o
}

func TestApplyIsIdempotent(t *testing.T) {
	c, o := setup(t)
	ctx := context.Background()
	created, err := schedule.Apply(ctx, c, o)
	if err != nil || !created {
		t.Fatalf("first apply: created=%v, %v", created, err)
	}
	o.TimeZone = "Europe/Rome"
	created, err = schedule.Apply(ctx, c, o)
	if err != nil || created {
		t.Fatalf("second apply: created=%v, %v; want an update", created, err)
	}
	s, err := schedule.Describe(ctx, c, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	if s.TimeZone != "Europe/Rome" || s.Overlap != "Skip" {
		t.Fatalf("schedule after update: %+v", s)
	}
	if len(s.NextRuns) == 0 || s.NextRuns[0].In(mustLoad(t, "Europe/Rome")).Hour() != 3 {
		t.Fatalf("next runs %v: want 03:00 Rome time", s.NextRuns)
	}
	// The Web UI shows each run's static summary, set on the action.
	d, err := c.ScheduleClient().GetHandle(ctx, o.ID).Describe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	act, ok := d.Schedule.Action.(*client.ScheduleWorkflowAction)
	if want := "nightly archive logs, metrics as of the scheduled or start time"; !ok || act.StaticSummary != want || !strings.Contains(act.StaticDetails, "**metrics**: downsample scenario_metrics") {
		t.Fatalf("schedule action %+v: want the summary %q and the policy in its details", d.Schedule.Action, want)
	}
	n := 0
	iter, err := c.ScheduleClient().List(ctx, client.ScheduleListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for iter.HasNext() {
		e, err := iter.Next()
		if err != nil {
			t.Fatal(err)
		}
		if e.ID == o.ID {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d schedules with id %s, want 1", n, o.ID)
	}
	if _, err := schedule.Apply(ctx, c, schedule.Options{ID: o.ID, TimeZone: "Mars/Olympus"}); err == nil {
		t.Fatal("an unknown time zone was accepted")
	}
}

func TestBackfillRunsEachNightAsOfItsNominalTime(t *testing.T) {
	c, o := setup(t)
	ctx := context.Background()
	if _, err := schedule.Apply(ctx, c, o); err != nil {
		t.Fatal(err)
	}
	// Three past nights at 03:00 UTC.
	night := time.Date(2026, 1, 10, 3, 0, 0, 0, time.UTC)
	want := []time.Time{night, night.Add(24 * time.Hour), night.Add(48 * time.Hour)}
	if err := schedule.Backfill(ctx, c, o.ID, night.Add(-time.Minute), want[2].Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	var got []time.Time
	deadline := time.Now().Add(60 * time.Second)
	for len(got) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("after 60 s, %d of 3 backfilled runs completed", len(got))
		}
		resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Query: "TemporalScheduledById = '" + o.ID + "' AND ExecutionStatus = 'Completed'",
		})
		if err != nil {
			t.Fatal(err)
		}
		got = got[:0]
		for _, e := range resp.GetExecutions() {
			var res workflows.ArchiveResult
			if err := c.GetWorkflow(ctx, e.GetExecution().GetWorkflowId(), e.GetExecution().GetRunId()).Get(ctx, &res); err != nil {
				t.Fatal(err)
			}
			got = append(got, res.AsOf)
		}
		time.Sleep(200 * time.Millisecond) // polling visibility, which is eventually consistent
	}
	slices.SortFunc(got, func(a, b time.Time) int { return a.Compare(b) })
	for i := range want {
		if !got[i].Equal(want[i]) {
			t.Fatalf("as-of values %v, want %v", got, want)
		}
	}
}

func mustLoad(t *testing.T, name string) *time.Location {
	l, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestVerifyWeekly: the weekly verification schedule fires on Sundays at
// 05:00 and, triggered, runs a VerifyWorkflow that completes with a report
// of every entry's checks.
func TestVerifyWeekly(t *testing.T) {
	c, o := setup(t)
	ctx := context.Background()
	v := schedule.Options{ID: schedule.VerifyID(o.ID), TaskQueue: o.TaskQueue, Cron: schedule.VerifyCron,
		Verify: &workflows.VerifyRequest{}}
	t.Cleanup(func() { _ = schedule.Delete(context.Background(), c, v.ID) })
	if _, err := schedule.Apply(ctx, c, v); err != nil {
		t.Fatal(err)
	}
	s, err := schedule.Describe(ctx, c, v.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.NextRuns) == 0 || s.NextRuns[0].Weekday() != time.Sunday || s.NextRuns[0].Hour() != 5 {
		t.Fatalf("next runs %v: want Sundays 05:00", s.NextRuns)
	}
	if err := schedule.Trigger(ctx, c, v.ID); err != nil {
		t.Fatal(err)
	}
	var runID string
	deadline := time.Now().Add(time.Minute)
	for runID == "" && time.Now().Before(deadline) {
		d, err := c.ScheduleClient().GetHandle(ctx, v.ID).Describe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if r := d.Info.RecentActions; len(r) > 0 {
			runID = r[0].StartWorkflowResult.WorkflowID
			break
		}
		time.Sleep(200 * time.Millisecond) // polling the server's record, not standing in for a result
	}
	if runID == "" {
		t.Fatal("the triggered verification never started")
	}
	var rep activities.VerifyReport
	if err := testenv.Wait(t, c, c.GetWorkflow(ctx, runID, ""), testenv.DefaultWait, &rep); err != nil {
		t.Fatalf("verify workflow: %v", err)
	}
	if rep.Failed() || len(rep.Checks) < 3 {
		t.Fatalf("report %+v: want the built-in entries' checks, none failed", rep)
	}
}
