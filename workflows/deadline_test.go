package workflows

import (
	"errors"
	"testing"
	"time"

	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/workflow"
)

// The deadline with the workflow's clock (the test suite's, which skips
// ahead over timers); the real-stack test is internal/e2e TestRunDeadline.
func TestDeadline(t *testing.T) {
	start := time.Date(2026, 3, 15, 5, 59, 55, 0, time.UTC)
	t.Run("a schedule's stop-by resolves to the next such time and stops new batches there", func(t *testing.T) {
		env := newEnv(t)
		env.SetStartTime(start)
		r := &batchRecorder{env: env, left: 100000, txMs: 100}
		r.mock()
		env.RegisterDelayedCallback(func() { env.SignalWorkflow(SignalThrottle, ThrottleSignal{BatchesPerSecond: 1}) }, 0)
		env.ExecuteWorkflow(ArchiveWorkflow, ArchiveInput{Tables: []string{"logs"}, AsOf: testAsOf, BatchSize: 1000, MinBatch: 1000, MaxBatch: 1000, StopBy: "06:00", StopByZone: "UTC"})
		if err := env.GetWorkflowError(); err != nil {
			t.Fatal(err)
		}
		var res ArchiveResult
		if err := env.GetWorkflowResult(&res); err != nil {
			t.Fatal(err)
		}
		deadline := time.Date(2026, 3, 15, 6, 0, 0, 0, time.UTC)
		tr := res.Tables[0]
		if !res.Deadline.Equal(deadline) || !tr.StoppedAtDeadline || tr.Status != StatusCompleted || !r.finish.StoppedAtDeadline || r.finish.Failed {
			t.Fatalf("deadline %s, table %+v, finish %+v: want 06:00, completed and stopped at the deadline", res.Deadline, tr, r.finish)
		}
		if len(r.times) == 0 || len(r.times) > 6 {
			t.Fatalf("%d batches, want at most 6 at 1 per second in the 5 s before the deadline", len(r.times))
		}
		for _, at := range r.times {
			if !at.Before(deadline) {
				t.Fatalf("a batch started at %s, not before the deadline", at)
			}
		}
	})

	t.Run("a paused run ends at its deadline instead of waiting for a resume", func(t *testing.T) {
		env := newEnv(t)
		env.SetStartTime(start)
		r := &batchRecorder{env: env, left: 100000, txMs: 100}
		r.mock()
		env.RegisterDelayedCallback(func() { env.SignalWorkflow(SignalPause, PauseSignal{}) }, 0)
		deadline := start.Add(time.Hour)
		env.ExecuteWorkflow(ArchiveWorkflow, ArchiveInput{Tables: []string{"logs"}, AsOf: testAsOf, BatchSize: 1000, Deadline: deadline})
		if err := env.GetWorkflowError(); err != nil {
			t.Fatal(err)
		}
		var res ArchiveResult
		_ = env.GetWorkflowResult(&res)
		if !res.Tables[0].StoppedAtDeadline || env.Now().Before(deadline) || env.Now().After(deadline.Add(time.Minute)) {
			t.Fatalf("table %+v, ended at %s: want stopped at the deadline %s", res.Tables[0], env.Now(), deadline)
		}
	})

	t.Run("continue-as-new carries the deadline", func(t *testing.T) {
		env := newEnv(t)
		env.SetStartTime(start)
		r := &batchRecorder{env: env, left: 100000, txMs: 100}
		r.mock()
		env.ExecuteWorkflow(ArchiveWorkflow, ArchiveInput{Tables: []string{"logs"}, AsOf: testAsOf, BatchSize: 1000, MaxBatchesPerRun: 2, StopBy: "07:30", StopByZone: "Europe/Paris"})
		var can *workflow.ContinueAsNewError
		if err := env.GetWorkflowError(); !errors.As(err, &can) {
			t.Fatalf("error %v, want continue-as-new", err)
		}
		var next ArchiveInput
		if err := converter.GetDefaultDataConverter().FromPayloads(can.Input, &next); err != nil {
			t.Fatal(err)
		}
		// 07:30 in Paris (UTC+1 in March before the change) is 06:30 UTC.
		if want := time.Date(2026, 3, 15, 6, 30, 0, 0, time.UTC); !next.Deadline.Equal(want) || next.StopBy != "" {
			t.Fatalf("next input deadline %s, stop-by %q: want %s and the wall-clock form dropped", next.Deadline, next.StopBy, want)
		}
	})
}
