package workflows

import (
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/policy"
)

// branch is one table's part of a run.
type branch struct {
	run           *runState
	table         policy.Table
	asOf          time.Time
	batchSize     int
	retentionMode string
	result        *TableResult
	// incomplete is set when the branch stopped for continue-as-new.
	incomplete bool
	// cursor: batch loops carry a cursor: the (time, id) key of the last
	// log row moved, or the day metrics reached.
	cursor bool
	// local: batches run as local activities (changeLocalBatches).
	local bool
	// yieldTimer: the loop ends its workflow task with a timer after each
	// yieldEvery of local batches' lock time (sinceYield), as runs did
	// before changeNoYieldTimer.
	yieldTimer bool
	sinceYield time.Duration
	// aim is the share of the lock-time budget the batch size aims at.
	aim float64
	// maxLoad and criticalLoad are the load controller's thresholds in
	// force, resolved (changeLoadControl; nil: none).
	maxLoad, criticalLoad *policy.Load
	// sweepLate: a cursor loop that runs dry ends there and sets sweepDue;
	// the sweep runs after the retention and VACUUM steps
	// (changeSweepAfterVacuum).
	sweepLate, sweepDue bool
}

func (b *branch) window() (after time.Time) {
	if w := b.run.res.Window; w != nil {
		return w.After.UTC()
	}
	return time.Time{}
}

func (b *branch) preview(ctx workflow.Context) {
	b.result.Status = StatusRunning
	var p activities.PreviewResult
	in := activities.PreviewInput{Table: b.table.Name, Entry: b.entry(), Cutoff: b.result.Cutoff, After: b.window()}
	if b.run.res.Window == nil {
		in.RetentionLimit = b.table.RetentionLimit(b.asOf)
	}
	if err := workflow.ExecuteActivity(summarized(ctx, "%s dry run %s", b.table.Name, span(in.After, in.Cutoff)), a.Preview, in).Get(ctx, &p); err != nil {
		b.fail(err)
		return
	}
	b.result.Preview = &p
	b.result.Status = StatusCompleted
}

func (b *branch) archive(ctx workflow.Context) {
	info := workflow.GetInfo(ctx)
	r := b.result
	if r.JobID == "" { // a continued run has its job already
		r.Status = StatusRunning
		r.JobID = runUUID(info, b.table.Name, "job").String()
		sctx := summarized(ctx, "%s job: as of %s, cut-off %s", b.table.Name, stamp(b.asOf), day(r.Cutoff))
		err := workflow.ExecuteActivity(sctx, a.StartJob, activities.StartJobInput{
			JobID: r.JobID, Table: b.table.Name, Entry: b.entry(), WorkflowID: info.WorkflowExecution.ID, RunID: info.WorkflowExecution.RunID,
			AsOf: b.asOf, Cutoff: r.Cutoff, Forced: b.run.res.Window != nil && b.run.res.Window.Force,
		}).Get(ctx, nil)
		if err != nil {
			b.fail(err) // no job row to close
			return
		}
	}
	var err error
	if b.table.ModeOf() == policy.ModeOffload {
		err = b.archiveReports(ctx)
	} else {
		err = b.moveAll(ctx)
	}
	if err == nil && b.incomplete {
		return // the next run of the chain goes on from here
	}
	if err == nil && !r.StoppedAtDeadline && r.StoppedAtLoad == "" && b.run.res.Window == nil && workflow.GetVersion(ctx, changeRetention, workflow.DefaultVersion, 1) >= 1 {
		if !b.atDeadline(ctx) {
			err = b.retention(ctx)
		}
	}
	// r.Vacuum is set only when a late sweep continued as new after it ran.
	if err == nil && r.RowsDeleted > 0 && r.StoppedAtLoad == "" && r.Vacuum == nil && workflow.GetVersion(ctx, changeVacuum, workflow.DefaultVersion, 1) >= 1 {
		b.vacuum(ctx)
	}
	if err == nil && b.sweepDue {
		// The loops ran dry; VACUUM has cleared the index of the rows they
		// deleted. The sweep is the loop's, from the oldest eligible row.
		err = b.loop(ctx, 0, true, true)
		if err == nil && b.incomplete {
			return // the next run starts from the oldest row again
		}
	}
	var totals activities.JobTotals
	finish := activities.FinishJobInput{JobID: r.JobID, Failed: err != nil, StoppedAtDeadline: r.StoppedAtDeadline, StoppedAtLoad: r.StoppedAtLoad}
	if r.Vacuum != nil {
		finish.Vacuum = r.Vacuum.Note()
	}
	if err != nil {
		finish.Error = errorMessage(err)
	}
	fctx := summarized(ctx, "%s job: %s", b.table.Name, map[bool]string{false: "completed", true: "failed"}[finish.Failed])
	if ferr := workflow.ExecuteActivity(fctx, a.FinishJob, finish).Get(ctx, &totals); ferr != nil && err == nil {
		err = ferr
	}
	if totals.JobID != "" {
		// The ledger is the record; report its figures.
		r.Batches, r.RowsArchived, r.RowsDeleted, r.Bytes = totals.Batches, totals.RowsArchived, totals.RowsDeleted, totals.Bytes
		r.RowsMerged = totals.RowsMerged
	}
	if err != nil {
		b.fail(err)
		return
	}
	r.Status = StatusCompleted
}

// moveAll ensures partitions, then moves batches until no eligible row is
// left. With the operations version, Parallel loops share the table (SKIP
// LOCKED keeps them on disjoint rows) and the batch size follows the
// lock-time budget.
func (b *branch) moveAll(ctx workflow.Context) error {
	r := b.result
	if b.run.ops && b.table.ModeOf() == policy.ModeMove && !b.run.rowByRow &&
		workflow.GetVersion(ctx, changeExchange, workflow.DefaultVersion, 1) >= 1 {
		if err := b.exchange(ctx); err != nil || b.incomplete {
			return err
		}
	}
	var parts activities.EnsurePartitionsResult
	pctx := summarized(ctx, "%s partitions for %s", b.table.Name, span(b.window(), r.Cutoff))
	if err := workflow.ExecuteActivity(pctx, a.EnsurePartitions, activities.EnsurePartitionsInput{
		Table: b.table.Name, Entry: b.entry(), Cutoff: r.Cutoff, After: b.window(),
	}).Get(ctx, &parts); err != nil {
		return err
	}
	r.PartitionsCreated += len(parts.Created)
	if parts.Oldest == nil {
		return nil // nothing eligible
	}
	if r.Oldest == nil {
		r.Oldest = parts.Oldest
	}
	if r.BatchSize == 0 {
		r.BatchSize = b.limit()
	}
	useMore := workflow.GetVersion(ctx, changeMoreFlag, workflow.DefaultVersion, 1) >= 1
	if err := b.loadControl(ctx); err != nil {
		return err
	}
	if !b.run.ops {
		return b.loop(ctx, 0, useMore, false)
	}
	switch b.table.ModeOf() {
	case policy.ModeMove:
		b.cursor = workflow.GetVersion(ctx, changeCursor, workflow.DefaultVersion, 1) >= 1
	case policy.ModeDownsample:
		b.cursor = workflow.GetVersion(ctx, changeMetricsCursor, workflow.DefaultVersion, 1) >= 1
	}
	if b.cursor {
		b.sweepLate = workflow.GetVersion(ctx, changeSweepAfterVacuum, workflow.DefaultVersion, 1) >= 1
	}
	// Several loops are meant to spread over every worker on the task
	// queue, which local activities would not.
	b.local = workflow.GetVersion(ctx, changeLocalBatches, workflow.DefaultVersion, 1) >= 1 && b.run.parallel == 1 && !b.run.batchActivities
	if b.local && workflow.GetVersion(ctx, changeNoYieldTimer, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		b.yieldTimer = legacyYield(ctx)
	}
	b.aim = oldAim
	if workflow.GetVersion(ctx, changeBudgetAim, workflow.DefaultVersion, 1) >= 1 {
		b.aim = budgetAim
	}
	loops := 1
	if b.table.ModeOf() == policy.ModeMove {
		loops = b.run.parallel
	}
	errs := make([]error, loops)
	wg := workflow.NewWaitGroup(ctx)
	for l := range loops {
		wg.Add(1)
		workflow.Go(ctx, func(ctx workflow.Context) {
			defer wg.Done()
			errs[l] = b.loop(ctx, l, true, false)
		})
	}
	wg.Wait(ctx)
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// loop is one batch loop. It ends when a batch reports no more rows, on an
// error, or when the run stops to continue as new. With a cursor, each
// batch starts after the last row the loop moved; when that runs dry, one
// sweep from the start (no cursor) picks up rows skipped while another loop
// held them or inserted below the cursor since, and the loop ends only when
// a sweep finds nothing either. With sweepLate the loop ends where it runs
// dry (sweepDue), and archive runs the sweep later as a loop of its own
// (sweep: it starts without a cursor, its batches labelled apart).
func (b *branch) loop(ctx workflow.Context, l int, useMore, sweep bool) error {
	r := b.result
	info := workflow.GetInfo(ctx)
	var cursor *activities.Key
	sweeping := sweep
	for seq := 1; ; seq++ {
		ok, err := b.proceed(ctx)
		if err != nil || !ok {
			return err
		}
		label := fmt.Sprintf("batch-%d", seq)
		switch {
		case sweep:
			label = fmt.Sprintf("sweep-%d", seq)
		case l > 0:
			label = fmt.Sprintf("batch-%d-%d", l, seq)
		}
		limit := r.BatchSize
		in := activities.MoveBatchInput{
			Table: b.table.Name, Entry: b.entry(), JobID: r.JobID, Cutoff: r.Cutoff, After: b.window(), Limit: limit,
			BatchID: runUUID(info, b.table.Name, label).String(), Cursor: cursor, Pace: b.run.pace,
			MaxLoad: b.maxLoad, CriticalLoad: b.criticalLoad,
		}
		var mv activities.MoveBatchResult
		if err := b.moveBatch(ctx, in, sweep && cursor == nil, &mv); err != nil {
			return err
		}
		if err := b.yield(ctx); err != nil {
			return err
		}
		if mv.Load != "" {
			r.LastLoad = mv.Load
			r.LoadRestSeconds += float64(mv.LoadRestMillis) / 1000
			if mv.StoppedAtLoad == "" {
				r.LoadRests++
			}
		}
		if mv.StoppedAtLoad != "" {
			b.run.loadStop = mv.StoppedAtLoad
			b.atLoadStop()
			return nil
		}
		if mv.LoadSkipped {
			// The load stayed high through the batch's rest: a smaller
			// batch, from the same place, once it falls. The timer ends
			// the workflow task, so that the rest shows on the timeline
			// and the progress query and signals get in while it lasts.
			r.BatchSize = b.run.shrink(r.BatchSize, b.limit())
			topts := workflow.TimerOptions{Summary: clip(fmt.Sprintf("%s resting for load: %s", b.table.Name, mv.Load), maxSummary)}
			if err := workflow.NewTimerWithOptions(ctx, loadRestTimer, topts).Get(ctx, nil); err != nil {
				return err
			}
			continue
		}
		r.Batches++
		r.RowsArchived += mv.RowsMoved
		r.RowsDeleted += mv.RowsDeleted
		r.Bytes += mv.Bytes
		r.RowsMerged += mv.RowsMerged
		if mv.MaxTS != nil && (r.Reached == nil || mv.MaxTS.After(*r.Reached)) {
			r.Reached = mv.MaxTS
		}
		if mv.Load != "" {
			r.BatchSize = b.run.shrink(r.BatchSize, b.limit())
		} else {
			r.BatchSize = b.run.adapt(r.BatchSize, mv.TxMillis, b.limit(), b.table.LockBudget, b.aim)
		}
		if b.cursor {
			switch {
			case mv.More:
				cursor, sweeping = mv.Last, false
			case !sweeping && b.sweepLate && !sweep:
				b.sweepDue = true // ran dry after the cursor: sweep after VACUUM
				return nil
			case !sweeping:
				cursor, sweeping = nil, true // ran dry after the cursor: sweep once
			default:
				return nil // the sweep found nothing more
			}
			continue
		}
		if useMore && !mv.More || !useMore && mv.RowsMoved < int64(limit) {
			return nil
		}
	}
}

// moveBatch runs one MoveBatch. As a local activity (changeLocalBatches)
// it runs in this worker as soon as the workflow asks for it: a batch costs
// no workflow task and no activity task round trip through the server, the
// history keeps one marker per batch (with the batch's summary and result),
// and the workflow task stays open across batches: the SDK heartbeats it
// at 80% of the run's workflow task timeout (TaskTimeout), which is when
// the run sees signals (pause) and answers queries (progress). A worker lost mid-batch loses its open workflow task: another
// worker replays to the last completed one and runs the batches since
// again, which the ledger answers with what they recorded (MoveBatch's
// step 1). A batch that should not run locally (the worker drains, or it
// must wait for replicas or a slot: ErrRunAsActivity) runs as an activity
// from the task queue, where another worker may take it and its waits are
// heartbeated. Timeouts and retries are the activity options' own.
func (b *branch) moveBatch(ctx workflow.Context, in activities.MoveBatchInput, finalSweep bool, mv *activities.MoveBatchResult) error {
	summary := clip(b.batchSummary(in, finalSweep), maxSummary)
	if b.local {
		o := workflow.GetActivityOptions(ctx)
		lctx := workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
			ScheduleToCloseTimeout: o.ScheduleToCloseTimeout,
			StartToCloseTimeout:    o.StartToCloseTimeout,
			RetryPolicy:            o.RetryPolicy,
			Summary:                summary,
		})
		err := workflow.ExecuteLocalActivity(lctx, a.MoveBatch, in).Get(ctx, mv)
		var appErr *temporal.ApplicationError
		if !errors.As(err, &appErr) || appErr.Type() != activities.ErrRunAsActivity {
			if err == nil {
				b.sinceYield += time.Duration(mv.TxMillis) * time.Millisecond
			}
			return err
		}
		// Schedule the activity a moment later, from a new workflow task:
		// scheduled at once, it could reach a poll the draining worker still
		// has open, be dropped there and wait out its start-to-close timeout.
		topts := workflow.TimerOptions{Summary: "batch refused as a local activity: to the task queue"}
		if err := workflow.NewTimerWithOptions(ctx, handOnDelay, topts).Get(ctx, nil); err != nil {
			return err
		}
	}
	return workflow.ExecuteActivity(summarized(ctx, "%s", summary), a.MoveBatch, in).Get(ctx, mv)
}

// loadRestTimer is the workflow's rest after a batch that the load kept
// from running (on top of the batch's own rest).
const loadRestTimer = time.Second

// yieldEvery is how long local batches held one workflow task before runs
// without changeNoYieldTimer ended it with a timer.
const yieldEvery = time.Second

// legacyYield tells a run without the changeNoYieldTimer marker whether it
// began under the build that ended its workflow task with a timer: that
// build started runs with the server's default task timeout, the build
// that dropped the timer with TaskTimeout (3 s) on every start path.
func legacyYield(ctx workflow.Context) bool {
	return workflow.GetInfo(ctx).WorkflowTaskTimeout != TaskTimeout
}

// yield is the timer of runs before changeNoYieldTimer: a 1 ms timer once
// local batches held the workflow task for yieldEvery, so that signals and
// queries got in.
func (b *branch) yield(ctx workflow.Context) error {
	if !b.yieldTimer || b.sinceYield < yieldEvery {
		return nil
	}
	b.sinceYield = 0
	return workflow.NewTimerWithOptions(ctx, time.Millisecond, workflow.TimerOptions{Summary: "let signals and queries in"}).Get(ctx, nil)
}

// handOnDelay is how long a batch refused as a local activity waits before
// it is scheduled as an activity (the refusing worker drains meanwhile).
const handOnDelay = time.Second

// exchange moves whole live partitions older than the cut-off to the
// archive, one exchange at a time, each its own ledger entry; the rows of
// partitions that cannot be exchanged move by batches afterwards.
func (b *branch) exchange(ctx workflow.Context) error {
	r := b.result
	var list activities.ListExchangeableResult
	lctx := summarized(ctx, "%s partitions wholly in %s to exchange", b.table.Name, span(b.window(), r.Cutoff))
	if err := workflow.ExecuteActivity(lctx, a.ListExchangeable, activities.ListExchangeableInput{
		Table: b.table.Name, Entry: b.entry(), Cutoff: r.Cutoff, After: b.window(),
	}).Get(ctx, &list); err != nil {
		return err
	}
	if len(list.Skipped) > 0 {
		r.ExchangeSkipped = list.Skipped[:min(len(list.Skipped), 3)]
	}
	info := workflow.GetInfo(ctx)
	for _, c := range list.Candidates {
		ok, err := b.proceed(ctx)
		if err != nil || !ok {
			return err
		}
		batchID := c.BatchID
		if batchID == "" {
			batchID = runUUID(info, b.table.Name, fmt.Sprintf("exchange-%d", c.OID)).String()
		}
		var ex activities.ExchangeResult
		ectx := summarized(ctx, "%s exchange partition %s (%s)", b.table.Name, c.Partition, span(c.Lower, c.Upper))
		if err := workflow.ExecuteActivity(ectx, a.ExchangePartition, activities.ExchangeInput{
			Table: b.table.Name, Entry: b.entry(), JobID: r.JobID, BatchID: batchID, Partition: c,
		}).Get(ctx, &ex); err != nil {
			return err
		}
		r.Batches++
		r.RowsArchived += ex.Rows
		r.RowsDeleted += ex.Rows
		r.Bytes += ex.Bytes
		r.PartitionsExchanged++
		r.LongestLockMillis = max(r.LongestLockMillis, ex.LongestLockMillis)
		if ex.MaxTS != nil && (r.Reached == nil || ex.MaxTS.After(*r.Reached)) {
			r.Reached = ex.MaxTS
		}
		if r.Oldest == nil || ex.MinTS != nil && ex.MinTS.Before(*r.Oldest) {
			r.Oldest = ex.MinTS
		}
	}
	return nil
}

// batchSummary is a batch's line on the timeline: the table, the window
// it takes rows from (after the loop's cursor, else from the oldest
// eligible row) and its limit; finalSweep marks the late sweep, which
// comes after the VACUUM step.
func (b *branch) batchSummary(in activities.MoveBatchInput, finalSweep bool) string {
	from := in.After
	switch {
	case in.Cursor != nil:
		from = in.Cursor.TS
	case b.result.Oldest != nil && b.result.Oldest.After(from):
		from = *b.result.Oldest
	}
	unit := "rows"
	switch b.table.ModeOf() {
	case policy.ModeDownsample:
		unit = "samples"
	}
	out := fmt.Sprintf("%s %s, up to %s %s", b.table.Name, span(from, in.Cutoff), thousands(int64(in.Limit)), unit)
	if finalSweep {
		out = "final sweep: " + out + " the batches skipped or that came since"
	}
	if r := b.result; r.LastLoad != "" && r.LoadRests > 0 {
		out += fmt.Sprintf("; load: %d rests (%.1f s), last %s", r.LoadRests, r.LoadRestSeconds, r.LastLoad)
	}
	return out
}

// loadControl resolves the table's load thresholds before its first
// batch: the policy entry's own, else the run's. A relative one is a share
// of the application's running statements before the run, read once per
// table (SampleLoad) and carried across continue-as-new, so that the
// run's own batches never raise its baseline.
func (b *branch) loadControl(ctx workflow.Context) error {
	maxSpec, critSpec := b.run.maxLoad, b.run.criticalLoad
	if b.table.MaxLoad != "" {
		maxSpec = b.table.MaxLoad
	}
	if b.table.CriticalLoad != "" {
		critSpec = b.table.CriticalLoad
	}
	maxLoad, _ := policy.ParseLoad(maxSpec) // validated with the input
	critical, _ := policy.ParseLoad(critSpec)
	if maxLoad.IsZero() && critical.IsZero() || workflow.GetVersion(ctx, changeLoadControl, workflow.DefaultVersion, 1) < 1 {
		return nil
	}
	r := b.result
	if r.MaxLoad == "" && (maxLoad.Relative() || critical.Relative()) {
		lctx := workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
			ScheduleToCloseTimeout: time.Minute, StartToCloseTimeout: 10 * time.Second,
			Summary: b.table.Name + " load before the first batch",
		})
		var base policy.LoadSample
		if err := workflow.ExecuteLocalActivity(lctx, a.SampleLoad, activities.SampleLoadInput{Table: b.table.Name}).Get(ctx, &base); err != nil {
			return err
		}
		r.LoadBaseline = base.Active
	}
	if !maxLoad.IsZero() {
		l := maxLoad.Resolve(r.LoadBaseline)
		b.maxLoad = &l
	}
	if !critical.IsZero() {
		l := critical.Resolve(r.LoadBaseline)
		b.criticalLoad = &l
	}
	if b.maxLoad != nil {
		r.MaxLoad = b.maxLoad.String()
	} else {
		r.MaxLoad = "off"
	}
	return nil
}

func (b *branch) limit() int {
	if b.batchSize != 0 {
		return b.batchSize
	}
	return b.table.BatchSize
}

// retention drops (or detaches) the archive partitions past retention.
func (b *branch) retention(ctx workflow.Context) error {
	var rr activities.RetentionResult
	if b.table.Export != nil && workflow.GetVersion(ctx, changeColdExport, workflow.DefaultVersion, 1) >= 1 {
		ctx = workflow.WithActivityOptions(ctx, uploadOptions(ctx))
	}
	in := activities.RetentionInput{Table: b.table.Name, Entry: b.entry(), Before: b.table.RetentionLimit(b.asOf), Mode: b.retentionMode}
	mode := in.Mode
	if mode == "" {
		mode = activities.RetentionDrop
	}
	rctx := summarized(ctx, "%s retention: %s archive partitions before %s", b.table.Name, mode, day(in.Before))
	err := workflow.ExecuteActivity(rctx, a.ApplyRetention, in).Get(ctx, &rr)
	if err != nil {
		return err
	}
	b.result.Retention = &rr
	return nil
}

// entry is the table's policy entry, passed to every activity so that the
// worker archives exactly what the run was started with.
func (b *branch) entry() *policy.Table {
	t := b.table
	return &t
}

func (b *branch) fail(err error) {
	b.result.Status = StatusFailed
	b.result.Error = errorMessage(err)
}
