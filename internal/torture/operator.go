package torture

import (
	"context"
	"fmt"
	"time"

	"go.temporal.io/sdk/client"
	"pgregory.net/rapid"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/policy"
	"github.com/mockupaws/archiver/workflows"
)

// What operators do besides the nightly runs: backfills of a window, and
// pausing a run that goes on.

// backfill queues a window of one table on the scenario's backfill
// workflow, as `starter backfill` does (signal-with-start), and waits for
// the workflow to serve it and go idle. The rows of the window the where
// conditions select leave the live table, younger than the cut-off or not
// (the operator forces a window past it, as the starter asks).
func (h *harness) backfill(t *rapid.T) {
	h.op++
	h.s.stats.ops++
	start := h.op
	tb, m := h.drawTable(t)
	e := h.entry(tb)
	lo := activities.DayStart(t0.AddDate(-3, 0, 0))
	days := int(h.asOf.Sub(lo).Hours() / 24)
	after := lo.AddDate(0, 0, rapid.IntRange(0, days).Draw(t, "backfill from"))
	before := after.AddDate(0, 0, rapid.IntRange(1, 120).Draw(t, "backfill days"))
	if e.ModeOf() == policy.ModeDownsample {
		after, before = policy.BucketStart(e.Bucket, after), policy.BucketStart(e.Bucket, before)
		if !after.Before(before) {
			before = policy.BucketStart(e.Bucket, after.AddDate(0, 0, 8))
		}
	}
	now := time.Now().UTC()
	req := workflows.BackfillRequest{Table: e.Name, After: after, Before: before, Policy: &e, Force: before.After(e.Cutoff(now))}
	if err := workflows.ValidateBackfill(req, now, nil); err != nil {
		// The starter refuses it (a window in the future, say): no run.
		t.Logf("op %d: backfill %s %s .. %s refused before sending: %v", h.op, tb.entry, day(after), day(before), err)
		return
	}
	fault, n := h.drawFault(t, failpoints[0])
	t.Logf("op %d: backfill %s %s .. %s (forced %v, fault %s %d)", h.op, tb.entry, day(after), day(before), req.Force, fault, n)
	h.cover("op=backfill")
	id := fmt.Sprintf("torture-%s-backfill-%d", h.id, h.op)
	signalWithStart := func(ctx context.Context, opts client.StartWorkflowOptions) (client.WorkflowRun, error) {
		// Idle a moment after the request: the workflow then ends, and
		// its result says how the request went.
		return h.s.c.SignalWithStartWorkflow(ctx, id, workflows.SignalBackfill, req, opts,
			workflows.BackfillWorkflowName, workflows.BackfillState{IdleTimeout: time.Second})
	}
	var res workflows.BackfillState
	out := h.executeWith(t, workflows.BackfillWorkflowName, id, signalWithStart, &res, fault, n, nil)
	if out.err != nil {
		t.Fatalf("backfill workflow of %s failed: %v", tb.entry, out.err)
	}
	if len(res.Refused) > 0 {
		t.Fatalf("backfill of %s refused by the workflow after the starter's check passed: %s", tb.entry, res.Refused[0].Reason)
	}
	if len(res.Done) != 1 || res.Done[0].Status != workflows.StatusCompleted {
		t.Fatalf("backfill of %s did not complete: %+v", tb.entry, res.Done)
	}
	t.Logf("  backfilled %d rows", res.Done[0].Rows)
	m.mu.Lock()
	m.filled = append(m.filled, fill{window{after, before}, start})
	m.mu.Unlock()
}

// drawPause draws whether an operator pauses the run once it has committed
// a batch and resumes it once the run says it is paused; it returns what
// does that beside the run, or nil.
func (h *harness) drawPause(t *rapid.T) func(ctx context.Context) {
	if rapid.IntRange(0, 3).Draw(t, "pause?") != 0 {
		return nil
	}
	return func(ctx context.Context) {
		before := h.batches()
		if !h.until(ctx, func() bool { return h.batches() > before }) {
			return // the run ended first
		}
		id := h.running.Load()
		if id == nil || h.s.c.SignalWorkflow(ctx, *id, "", workflows.SignalPause, workflows.PauseSignal{Reason: "torture"}) != nil {
			return
		}
		if !h.until(ctx, func() bool { return h.paused(*id) }) {
			return
		}
		h.cover("op=pause")
		_ = h.s.c.SignalWorkflow(ctx, *id, "", workflows.SignalResume, workflows.ResumeSignal{})
	}
}

// paused asks a run whether it is paused (its progress query).
func (h *harness) paused(id string) bool {
	v, err := h.s.c.QueryWorkflow(context.Background(), id, "", workflows.ProgressQuery)
	if err != nil {
		return false
	}
	var res workflows.ArchiveResult
	return v.Get(&res) == nil && res.Paused
}

// both runs two things beside a run (either may be nil).
func both(a, b func(context.Context)) func(context.Context) {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	}
	return func(ctx context.Context) {
		done := make(chan struct{})
		go func() { defer close(done); a(ctx) }()
		b(ctx)
		<-done
	}
}

func day(t time.Time) string { return t.Format(time.DateOnly) }
