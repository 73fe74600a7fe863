package workflows

import (
	"time"

	"go.temporal.io/sdk/workflow"
)

// Signal names: operators pause, resume and throttle a run between batches
// (`starter pause|resume|throttle`).
const (
	SignalPause    = "pause"
	SignalResume   = "resume"
	SignalThrottle = "throttle"
)

// PauseSignal stops new batches; batches in flight finish.
type PauseSignal struct {
	Reason string `json:",omitempty"`
}

// ResumeSignal lets batches start again.
type ResumeSignal struct{}

// ThrottleSignal caps batches per second across the run (0: no cap).
type ThrottleSignal struct {
	BatchesPerSecond float64
}

// Defaults of the operations controls (ArchiveInput).
const (
	defaultLockBudget       = 200 * time.Millisecond
	defaultMinBatch         = 500
	defaultMaxBatchesPerRun = 1000
)

// runState is what the branches of one run share: the operator's controls,
// the batch count of this run, and whether it is stopping to continue as new.
type runState struct {
	res      *ArchiveResult
	ops      bool // the operations version is in force
	paused   bool
	bps      float64
	nextSlot time.Time

	parallel        int
	rowByRow        bool
	batchActivities bool
	pace            float64
	maxLoad         string
	criticalLoad    string
	// loadStop, once set, is the signal past the critical load that stops
	// the run: every branch stops at its next unit of work.
	loadStop         string
	lockBudget       time.Duration
	minBatch         int
	maxBatch         int
	batches          int
	maxBatchesPerRun int
	stopping         bool
	// deadline, when set, is when the run stops starting work.
	deadline time.Time

	pauseCh, resumeCh, throttleCh workflow.ReceiveChannel
}

func newRunState(ctx workflow.Context, in ArchiveInput, res *ArchiveResult, ops bool) *runState {
	s := &runState{
		res: res, ops: ops,
		parallel: max(in.Parallel, 1), rowByRow: in.RowByRow, batchActivities: in.BatchActivities, pace: in.Pace, lockBudget: in.LockBudget,
		maxLoad: in.MaxLoad, criticalLoad: in.CriticalLoad,
		minBatch: in.MinBatch, maxBatch: in.MaxBatch, maxBatchesPerRun: in.MaxBatchesPerRun,
		pauseCh:    workflow.GetSignalChannel(ctx, SignalPause),
		resumeCh:   workflow.GetSignalChannel(ctx, SignalResume),
		throttleCh: workflow.GetSignalChannel(ctx, SignalThrottle),
	}
	if s.lockBudget <= 0 {
		s.lockBudget = defaultLockBudget
	}
	if s.minBatch <= 0 {
		s.minBatch = defaultMinBatch
	}
	if s.maxBatchesPerRun <= 0 {
		s.maxBatchesPerRun = defaultMaxBatchesPerRun
	}
	workflow.Go(ctx, func(ctx workflow.Context) {
		for {
			sel := workflow.NewSelector(ctx)
			s.addSignalReceivers(sel)
			sel.Select(ctx)
		}
	})
	return s
}

func (s *runState) addSignalReceivers(sel workflow.Selector) {
	sel.AddReceive(s.pauseCh, func(c workflow.ReceiveChannel, _ bool) {
		var p PauseSignal
		c.ReceiveAsync(&p)
		s.paused = true
	})
	sel.AddReceive(s.resumeCh, func(c workflow.ReceiveChannel, _ bool) {
		c.ReceiveAsync(&ResumeSignal{})
		s.paused = false
	})
	sel.AddReceive(s.throttleCh, func(c workflow.ReceiveChannel, _ bool) {
		var t ThrottleSignal
		c.ReceiveAsync(&t)
		if t.BatchesPerSecond >= 0 {
			s.bps = t.BatchesPerSecond
		}
	})
}

// gate runs before every batch: it waits while the run is paused, spaces
// batches to the throttle, and reports false when the run should stop to
// continue as new (history bounded). Old-version runs pass straight through.
func (s *runState) gate(ctx workflow.Context) (bool, error) {
	if !s.ops {
		return true, nil
	}
	if s.stopping {
		return false, nil
	}
	for {
		if s.pastDeadline(ctx) {
			return false, nil
		}
		if !s.deadline.IsZero() {
			// Paused with a deadline: wait no longer than the deadline.
			if _, err := workflow.AwaitWithTimeout(ctx, s.deadline.Sub(workflow.Now(ctx)), func() bool { return !s.paused || s.stopping }); err != nil {
				return false, err
			}
			if s.pastDeadline(ctx) {
				return false, nil
			}
		} else if err := workflow.Await(ctx, func() bool { return !s.paused || s.stopping }); err != nil {
			return false, err
		}
		now := workflow.Now(ctx)
		if s.bps <= 0 || !now.Before(s.nextSlot) {
			break
		}
		// Wait for the throttle's next slot, then look at the pause again:
		// it may have come while waiting.
		if err := workflow.Sleep(ctx, s.nextSlot.Sub(now)); err != nil {
			return false, err
		}
	}
	if s.bps > 0 {
		s.nextSlot = workflow.Now(ctx).Add(time.Duration(float64(time.Second) / s.bps))
	}
	if s.batches >= s.maxBatchesPerRun || workflow.GetInfo(ctx).GetContinueAsNewSuggested() {
		s.stopping = true
		return false, nil
	}
	s.batches++
	return true, nil
}

// continueAsNew hands the totals, the controls and the reports cursors to a
// new run of the same workflow. Signals not yet handled are applied first so
// that none is lost across the boundary.
func (s *runState) continueAsNew(ctx workflow.Context, in ArchiveInput, asOf time.Time) error {
	for {
		sel := workflow.NewSelector(ctx)
		s.addSignalReceivers(sel)
		if !sel.HasPending() {
			break
		}
		sel.Select(ctx)
	}
	next := in
	next.AsOf = asOf
	if !s.deadline.IsZero() {
		next.Deadline, next.StopBy, next.StopByZone = s.deadline, "", ""
	}
	next.Carry = &Carry{Tables: s.res.Tables, Runs: s.res.Runs + 1, Paused: s.paused, BatchesPerSecond: s.bps}
	return workflow.NewContinueAsNewError(ctx, ArchiveWorkflowName, next)
}

// The share of the lock-time budget the batch size aims at: runs started
// before changeBudgetAim aimed at 70% and p99 batches ended 10-40% over the
// budget on a shared machine; aiming at half leaves room for the slow tail.
const (
	oldAim    = 0.7
	budgetAim = 0.5
)

// adapt moves the batch size toward aim × the lock-time budget: when a
// batch held its locks for more than aim + 10% of the budget, down in
// proportion to aim; up by a quarter (half, before changeBudgetAim) when it
// took less than aim - 20%; always within [minBatch, maxBatch].
func (s *runState) adapt(limit int, txMillis int64, tableMax int, tableBudget time.Duration, aim float64) int {
	if !s.ops || txMillis <= 0 {
		return limit
	}
	budget := s.lockBudget.Milliseconds()
	if tableBudget > 0 { // the entry's own (a declared policy's lock_budget)
		budget = tableBudget.Milliseconds()
	}
	hi := s.maxBatch
	if hi <= 0 {
		hi = min(tableMax*5, 100000)
	}
	lo := min(s.minBatch, hi)
	if aim == oldAim { // as runs before changeBudgetAim computed it
		switch {
		case txMillis > budget*8/10:
			limit = int(float64(limit) * float64(budget) * 0.7 / float64(txMillis))
		case txMillis < budget/2:
			limit = limit * 3 / 2
		}
		return max(lo, min(hi, limit))
	}
	switch ms, b := float64(txMillis), float64(budget); {
	case ms > b*(aim+0.1):
		limit = int(float64(limit) * b * aim / ms)
	case ms < b*(aim-0.2):
		limit = limit * 5 / 4
	}
	return max(lo, min(hi, limit))
}

// shrink halves the batch size after a batch rested for the server's load
// (within the same bounds as adapt); calm batches grow it back through
// adapt.
func (s *runState) shrink(limit, tableMax int) int {
	hi := s.maxBatch
	if hi <= 0 {
		hi = min(tableMax*5, 100000)
	}
	return max(min(s.minBatch, hi), limit/2)
}

// progress is the progress query's answer: totals so far with a rate and an
// ETA per running table.
func (s *runState) progress(ctx workflow.Context) ArchiveResult {
	out := *s.res
	out.Paused, out.BatchesPerSecond = s.paused, s.bps
	out.Tables = append([]TableResult(nil), s.res.Tables...)
	for i := range out.Tables {
		t := &out.Tables[i]
		if t.Status != StatusRunning || t.Seconds > 0 {
			continue
		}
		estimate(t, s.elapsed(ctx))
	}
	return out
}

func (s *runState) elapsed(ctx workflow.Context) time.Duration {
	return workflow.Now(ctx).Sub(workflow.GetInfo(ctx).WorkflowStartTime)
}

// estimate fills a running table's rate and ETA from the share of its time
// range already moved.
func estimate(t *TableResult, elapsed time.Duration) {
	if elapsed <= 0 || t.RowsDeleted == 0 {
		return
	}
	t.RowsPerSec = float64(t.RowsDeleted) / elapsed.Seconds()
	if t.Oldest == nil || t.Reached == nil || !t.Cutoff.After(*t.Oldest) {
		return
	}
	done := t.Reached.Sub(*t.Oldest).Seconds() / t.Cutoff.Sub(*t.Oldest).Seconds()
	if done > 0 && done <= 1 {
		t.ETASeconds = elapsed.Seconds() * (1 - done) / done
	}
}
