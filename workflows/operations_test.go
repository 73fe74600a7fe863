package workflows

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/mockupaws/archiver/activities"
)

// batchRecorder answers MoveBatch with limit rows until total are gone and
// records when (on the test clock) each batch started and with what limit.
type batchRecorder struct {
	env    *testsuite.TestWorkflowEnvironment
	left   int64
	times  []time.Time
	limits []int
	paces  []float64
	txMs   int64
	starts int
	finish activities.FinishJobInput
}

func (r *batchRecorder) mock() {
	r.env.OnActivity(a.StartJob, mock.Anything, mock.Anything).Return(
		func(context.Context, activities.StartJobInput) (activities.StartJobResult, error) {
			r.starts++
			return activities.StartJobResult{Created: true}, nil
		})
	oldest := testAsOf.AddDate(-3, 0, 0)
	r.env.OnActivity(a.ListExchangeable, mock.Anything, mock.Anything).Return(activities.ListExchangeableResult{}, nil).Maybe()
	r.env.OnActivity(a.EnsurePartitions, mock.Anything, mock.Anything).Return(activities.EnsurePartitionsResult{Oldest: &oldest}, nil)
	r.env.OnActivity(a.MoveBatch, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.MoveBatchInput) (activities.MoveBatchResult, error) {
			r.times = append(r.times, r.env.Now())
			r.limits = append(r.limits, in.Limit)
			r.paces = append(r.paces, in.Pace)
			n := min(r.left, int64(in.Limit))
			r.left -= n
			return activities.MoveBatchResult{BatchID: in.BatchID, RowsMoved: n, RowsDeleted: n, More: r.left > 0, TxMillis: r.txMs}, nil
		})
	r.env.OnActivity(a.ApplyRetention, mock.Anything, mock.Anything).Return(activities.RetentionResult{}, nil)
	r.env.OnActivity(a.FinishJob, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.FinishJobInput) (activities.JobTotals, error) {
			r.finish = in
			return activities.JobTotals{JobID: in.JobID}, nil
		})
}

func TestOperations(t *testing.T) {
	t.Run("pause stops new batches within one batch; resume continues", func(t *testing.T) {
		env := newEnv(t)
		r := &batchRecorder{env: env, left: 10000, txMs: 100}
		r.mock()
		base := env.Now()
		// The throttle spaces batches 1 s apart, so the pause lands between
		// batch 3 and 4; resume comes an hour later.
		env.RegisterDelayedCallback(func() { env.SignalWorkflow(SignalThrottle, ThrottleSignal{BatchesPerSecond: 1}) }, 0)
		env.RegisterDelayedCallback(func() { env.SignalWorkflow(SignalPause, PauseSignal{Reason: "test"}) }, 2500*time.Millisecond)
		env.RegisterDelayedCallback(func() {
			v, err := env.QueryWorkflow(ProgressQuery)
			if err != nil {
				t.Errorf("query: %v", err)
				return
			}
			var p ArchiveResult
			_ = v.Get(&p)
			if !p.Paused {
				t.Error("progress does not show the pause")
			}
			env.SignalWorkflow(SignalResume, ResumeSignal{})
		}, time.Hour)
		env.ExecuteWorkflow(ArchiveWorkflow, ArchiveInput{Tables: []string{"logs"}, AsOf: testAsOf, BatchSize: 1000, MinBatch: 1000, MaxBatch: 1000})
		if err := env.GetWorkflowError(); err != nil {
			t.Fatal(err)
		}
		if len(r.times) != 11 {
			t.Fatalf("%d batches, want 10 and a final sweep", len(r.times))
		}
		var during int
		for _, at := range r.times {
			if at.After(base.Add(2500*time.Millisecond)) && at.Before(base.Add(time.Hour)) {
				during++
			}
		}
		if during != 0 {
			t.Fatalf("%d batches started while paused", during)
		}
		if r.times[3].Before(base.Add(time.Hour)) {
			t.Fatalf("batch 4 started at %v, before the resume", r.times[3].Sub(base))
		}
	})

	t.Run("throttle caps batches per second", func(t *testing.T) {
		env := newEnv(t)
		r := &batchRecorder{env: env, left: 5000, txMs: 100}
		r.mock()
		env.RegisterDelayedCallback(func() { env.SignalWorkflow(SignalThrottle, ThrottleSignal{BatchesPerSecond: 0.5}) }, 0)
		env.ExecuteWorkflow(ArchiveWorkflow, ArchiveInput{Tables: []string{"logs"}, AsOf: testAsOf, BatchSize: 1000, MinBatch: 1000, MaxBatch: 1000})
		if err := env.GetWorkflowError(); err != nil {
			t.Fatal(err)
		}
		for i := 1; i < len(r.times); i++ {
			if gap := r.times[i].Sub(r.times[i-1]); gap < 2*time.Second {
				t.Fatalf("batches %d and %d %v apart, want >= 2 s at 0.5 batches/s", i-1, i, gap)
			}
		}
	})

	t.Run("the batch size follows the lock-time budget within its bounds", func(t *testing.T) {
		env := newEnv(t)
		r := &batchRecorder{env: env, left: 1_000_000, txMs: 50} // fast batches: grow
		r.mock()
		env.ExecuteWorkflow(ArchiveWorkflow, ArchiveInput{Tables: []string{"logs"}, AsOf: testAsOf, BatchSize: 1000, MaxBatch: 8000, MaxBatchesPerRun: 100000})
		if err := env.GetWorkflowError(); err != nil {
			t.Fatal(err)
		}
		if r.limits[0] != 1000 || r.limits[1] != 1250 || r.limits[len(r.limits)-1] != 8000 {
			t.Fatalf("limits %v: want 1000, 1250, ... capped at 8000", r.limits[:6])
		}

		env = newEnv(t)
		r = &batchRecorder{env: env, left: 50000, txMs: 800} // slow batches: shrink
		r.mock()
		env.ExecuteWorkflow(ArchiveWorkflow, ArchiveInput{Tables: []string{"logs"}, AsOf: testAsOf, BatchSize: 10000, MinBatch: 700})
		if err := env.GetWorkflowError(); err != nil {
			t.Fatal(err)
		}
		if r.limits[1] != 1250 || r.limits[len(r.limits)-1] != 700 {
			t.Fatalf("limits %v: want 10000 -> 1250 (aim at half of 200 ms: 100/800) ... floor 700", r.limits)
		}
	})

	t.Run("continue-as-new carries totals, job and controls", func(t *testing.T) {
		env := newEnv(t)
		r := &batchRecorder{env: env, left: 10000, txMs: 100}
		r.mock()
		env.RegisterDelayedCallback(func() { env.SignalWorkflow(SignalThrottle, ThrottleSignal{BatchesPerSecond: 100}) }, 0)
		env.ExecuteWorkflow(ArchiveWorkflow, ArchiveInput{Tables: []string{"logs"}, AsOf: testAsOf, BatchSize: 1000, MinBatch: 1000, MaxBatch: 1000, MaxBatchesPerRun: 4})
		var can *workflow.ContinueAsNewError
		if err := env.GetWorkflowError(); !errors.As(err, &can) {
			t.Fatalf("error %v, want continue-as-new", err)
		}
		var next ArchiveInput
		if err := converter.GetDefaultDataConverter().FromPayloads(can.Input, &next); err != nil {
			t.Fatal(err)
		}
		c := next.Carry
		if c == nil || c.Runs != 1 || c.BatchesPerSecond != 100 || !next.AsOf.Equal(testAsOf) {
			t.Fatalf("carried %+v (as-of %v)", c, next.AsOf)
		}
		tr := c.Tables[0]
		if tr.Batches != 4 || tr.RowsArchived != 4000 || tr.JobID == "" || tr.Status != StatusRunning || tr.BatchSize != 1000 {
			t.Fatalf("carried table %+v, want 4 batches, 4000 rows, its job, still running", tr)
		}

		// The next run picks up: no StartJob, the rest of the rows.
		env2 := newEnv(t)
		r2 := &batchRecorder{env: env2, left: 6000, txMs: 100}
		r2.mock()
		env2.ExecuteWorkflow(ArchiveWorkflow, next)
		if err := env2.GetWorkflowError(); !errors.As(err, &can) {
			t.Fatalf("second run: %v, want another continue-as-new (6000 rows, 4 batches a run)", err)
		}
		if r2.starts != 0 {
			t.Fatal("the continued run started a new job")
		}
		_ = converter.GetDefaultDataConverter().FromPayloads(can.Input, &next)
		env3 := newEnv(t)
		r3 := &batchRecorder{env: env3, left: 2000, txMs: 100}
		r3.mock()
		env3.ExecuteWorkflow(ArchiveWorkflow, next)
		var res ArchiveResult
		if err := env3.GetWorkflowResult(&res); err != nil {
			t.Fatal(err)
		}
		if res.Runs != 2 || res.Tables[0].Status != StatusCompleted {
			t.Fatalf("final %+v", res)
		}
		if res.BatchesPerSecond != 100 {
			t.Fatalf("throttle lost across continue-as-new: %v", res.BatchesPerSecond)
		}
	})
}

// TestPaceReachesEveryBatch: the run's pace goes with each batch (the
// worker rests after the batch commits, so the workflow's history is the
// same with or without it).
func TestPaceReachesEveryBatch(t *testing.T) {
	env := newEnv(t)
	r := &batchRecorder{env: env, left: 5000, txMs: 100}
	r.mock()
	env.ExecuteWorkflow(ArchiveWorkflow, ArchiveInput{Tables: []string{"logs"}, AsOf: testAsOf, BatchSize: 1000, MinBatch: 1000, MaxBatch: 1000, Pace: 1.5})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	if len(r.paces) < 5 {
		t.Fatalf("%d batches, want 5 or more", len(r.paces))
	}
	for i, p := range r.paces {
		if p != 1.5 {
			t.Fatalf("batch %d had pace %g, want 1.5", i+1, p)
		}
	}
	env = newEnv(t)
	env.ExecuteWorkflow(ArchiveWorkflow, ArchiveInput{Tables: []string{"logs"}, AsOf: testAsOf, Pace: -1})
	if err := env.GetWorkflowError(); err == nil || !strings.Contains(err.Error(), "pace -1: must be between 0 and 10") {
		t.Fatalf("pace -1: %v, want refused", err)
	}
}

// TestDrainingWorkerHandsTheBatchOn: a local batch refused by a draining
// worker (ErrRunAsActivity) runs again, same batch id, as an activity on
// the task queue, and the loop goes on.
func TestDrainingWorkerHandsTheBatchOn(t *testing.T) {
	env := newEnv(t)
	r := &batchRecorder{env: env, left: 3000}
	var calls []string
	refused := false
	env.OnActivity(a.MoveBatch, mock.Anything, mock.Anything).Return(
		func(ctx context.Context, in activities.MoveBatchInput) (activities.MoveBatchResult, error) {
			local := activity.GetInfo(ctx).IsLocalActivity
			calls = append(calls, fmt.Sprintf("%s local=%v", in.BatchID, local))
			if local && len(calls) == 2 && !refused {
				refused = true
				return activities.MoveBatchResult{}, activities.RunAsActivity("draining")
			}
			n := min(r.left, int64(in.Limit))
			r.left -= n
			return activities.MoveBatchResult{BatchID: in.BatchID, RowsMoved: n, RowsDeleted: n, More: r.left > 0, TxMillis: 50}, nil
		})
	r.mock() // the other steps (its MoveBatch is not reached: the first match answers)
	env.ExecuteWorkflow(ArchiveWorkflow, ArchiveInput{Tables: []string{"logs"}, AsOf: testAsOf, BatchSize: 1000, MinBatch: 1000, MaxBatch: 1000})
	var res ArchiveResult
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if len(calls) < 3 || !strings.HasSuffix(calls[0], "local=true") || !strings.HasSuffix(calls[2], "local=false") ||
		strings.Fields(calls[1])[0] != strings.Fields(calls[2])[0] || !strings.HasSuffix(calls[3], "local=true") {
		t.Fatalf("MoveBatch calls %v: want the refused batch again, same id, as an activity, then local batches", calls)
	}
	if r.left != 0 || res.Tables[0].Status != StatusCompleted {
		t.Fatalf("%d rows left, table %s: want every row moved, completed", r.left, res.Tables[0].Status)
	}
}

// TestAdaptAim: runs started before changeBudgetAim keep the old steps
// (aim at 70%, grow by half); new runs aim at half the budget and grow by a
// quarter, and a batch between the two thresholds keeps its size.
func TestAdaptAim(t *testing.T) {
	s := &runState{ops: true, lockBudget: 200 * time.Millisecond, minBatch: 500}
	for _, c := range []struct {
		aim   float64
		tx    int64
		limit int
		want  int
	}{
		{oldAim, 400, 10000, 3500}, // 10000 × 140/400
		{oldAim, 90, 10000, 15000},
		{oldAim, 150, 10000, 10000},
		{budgetAim, 400, 10000, 2500}, // 10000 × 100/400
		{budgetAim, 50, 10000, 12500},
		{budgetAim, 110, 10000, 10000}, // within 30-60% of the budget
		{budgetAim, 130, 10000, 7692},  // over 60%: down to 100 ms
	} {
		if got := s.adapt(c.limit, c.tx, 10000, 0, c.aim); got != c.want {
			t.Errorf("adapt(%d, %d ms, aim %.1f) = %d, want %d", c.limit, c.tx, c.aim, got, c.want)
		}
	}
}
