package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/policy"
)

// RestoreWorkflowName is the restore workflow's type.
const RestoreWorkflowName = "RestoreWorkflow"

// RestoreWorkflowID is the one restore of a table that may run at a time.
func RestoreWorkflowID(table string) string { return "restore-" + table }

// DefaultHold is how long archive runs leave a restored window alone.
const DefaultHold = 30 * 24 * time.Hour

// RestoreRequest asks for the rows of Table with After <= time < Before
// back in the live table.
type RestoreRequest struct {
	Table string
	// Policy is the entry in force where the restore was started.
	Policy        *policy.Table `json:",omitempty"`
	After, Before time.Time
	DryRun        bool `json:",omitempty"`
	// BatchSize is the rows a batch moves back (the entry's when 0);
	// Hold how long the window stays (DefaultHold when 0).
	BatchSize int           `json:",omitempty"`
	Hold      time.Duration `json:",omitempty"`
	// ActivityTimeout is how long one restore batch may run before it is
	// given to another worker (10 minutes by default, as for archiving).
	ActivityTimeout time.Duration `json:",omitempty"`
}

// RestoreResult is what the restore brought back.
type RestoreResult struct {
	Table string
	Plan  activities.RestorePlan
	JobID string `json:",omitempty"`
	// RowsFromArchive moved back from archive partitions, RowsFromExports
	// read back from exported objects, Files put back with their rows.
	RowsFromArchive int64
	RowsFromExports int64
	Files           int64     `json:",omitempty"`
	Batches         int       `json:",omitempty"`
	HeldUntil       time.Time `json:",omitzero"`
	DryRun          bool      `json:",omitempty"`
}

// RestoreWorkflow brings a window of one table back to its live table:
// rows from the archive partitions (in batches, under the ledger), whole
// exported partitions from S3 (each verified against its manifest), and
// offloaded files with their rows. It first holds the window, so archive
// runs leave the restored rows where they are until the hold ends. A
// downsampled table is refused: aggregates cannot be un-aggregated.
func RestoreWorkflow(ctx workflow.Context, in RestoreRequest) (RestoreResult, error) {
	out := RestoreResult{Table: in.Table, DryRun: in.DryRun}
	if in.Table == "" || !in.After.Before(in.Before) {
		return out, temporal.NewNonRetryableApplicationError(fmt.Sprintf("invalid restore: table %q, window %s .. %s", in.Table, in.After, in.Before), activities.ErrInvalidInput, nil)
	}
	t := in.Policy
	if t == nil {
		e, err := policy.Lookup(in.Table)
		if err != nil {
			return out, temporal.NewNonRetryableApplicationError(err.Error(), activities.ErrInvalidInput, nil)
		}
		t = &e
	}
	opts := activityOptions
	if in.ActivityTimeout > 0 {
		opts.StartToCloseTimeout = in.ActivityTimeout
	}
	ctx = workflow.WithActivityOptions(ctx, opts)
	base := activities.RestoreInput{Table: t.Name, Entry: t, After: in.After.UTC(), Before: in.Before.UTC()}
	if err := workflow.ExecuteActivity(summarized(ctx, "restore %s %s: plan", t.Name, span(base.After, base.Before)), a.PlanRestore, base).Get(ctx, &out.Plan); err != nil {
		return out, err
	}
	if in.DryRun {
		return out, nil
	}
	if out.Plan.Grant != "" {
		return out, temporal.NewNonRetryableApplicationError(fmt.Sprintf("restore refused: the worker cannot insert into %s's live table; run: %s (and REVOKE it after the restore)", t.Name, out.Plan.Grant), activities.ErrCannotRestore, nil)
	}
	info := workflow.GetInfo(ctx)
	out.JobID = runUUID(info, t.Name, "restore-job").String()
	if err := workflow.ExecuteActivity(summarized(ctx, "restore %s job", t.Name), a.StartJob, activities.StartJobInput{
		JobID: out.JobID, Table: t.Name, Entry: t, WorkflowID: info.WorkflowExecution.ID, RunID: info.WorkflowExecution.RunID,
		AsOf: workflow.Now(ctx).UTC().Truncate(time.Microsecond), Cutoff: base.Before, Restore: true,
	}).Get(ctx, nil); err != nil {
		return out, err
	}
	err := restore(ctx, in, t, base, &out)
	finish := activities.FinishJobInput{JobID: out.JobID, Failed: err != nil}
	if err != nil {
		finish.Error = errorMessage(err)
	}
	fctx := summarized(ctx, "restore %s job: %s", t.Name, map[bool]string{false: "completed", true: "failed"}[finish.Failed])
	if ferr := workflow.ExecuteActivity(fctx, a.FinishJob, finish).Get(ctx, nil); ferr != nil && err == nil {
		err = ferr
	}
	return out, err
}

func restore(ctx workflow.Context, in RestoreRequest, t *policy.Table, base activities.RestoreInput, out *RestoreResult) error {
	hold := in.Hold
	if hold <= 0 {
		hold = DefaultHold
	}
	held := base
	held.After, held.Before = out.Plan.HoldAfter, out.Plan.HoldBefore
	held.WorkflowID = workflow.GetInfo(ctx).WorkflowExecution.ID
	held.HoldUntil = workflow.Now(ctx).UTC().Add(hold).Truncate(time.Microsecond)
	hctx := summarized(ctx, "restore %s: hold %s until %s", t.Name, span(held.After, held.Before), day(held.HoldUntil))
	if err := workflow.ExecuteActivity(hctx, a.HoldWindow, held).Get(ctx, nil); err != nil {
		return err
	}
	out.HeldUntil = held.HoldUntil
	uctx := workflow.WithActivityOptions(ctx, uploadOptions(ctx))
	for _, e := range out.Plan.Exports {
		var r activities.MoveBatchResult
		ectx := summarized(uctx, "restore %s export %d (%s, %s rows)", t.Name, e.ID, span(e.Lower, e.Upper), thousands(e.Rows))
		err := workflow.ExecuteActivity(ectx, a.RestoreExport, activities.RestoreExportInput{
			Table: t.Name, Entry: t, JobID: out.JobID, BatchID: runUUID(workflow.GetInfo(ctx), t.Name, fmt.Sprintf("restore-export-%d", e.ID)).String(), ExportID: e.ID,
		}).Get(ctx, &r)
		if err != nil {
			return err
		}
		out.RowsFromExports += r.RowsMoved
		out.Batches++
	}
	limit := in.BatchSize
	if limit == 0 {
		limit = t.BatchSize
	}
	if t.ModeOf() == policy.ModeOffload {
		return restoreFiles(ctx, t, base, limit, out)
	}
	var cursor *activities.Key
	for i := 0; ; i++ {
		var r activities.MoveBatchResult
		from := base.After
		if cursor != nil {
			from = cursor.TS
		}
		bctx := summarized(ctx, "restore %s %s, up to %s rows", t.Name, span(from, base.Before), thousands(int64(limit)))
		err := workflow.ExecuteActivity(bctx, a.RestoreBatch, activities.RestoreBatchInput{
			Table: t.Name, Entry: t, JobID: out.JobID, BatchID: runUUID(workflow.GetInfo(ctx), t.Name, fmt.Sprintf("restore-%d", i)).String(),
			After: base.After, Before: base.Before, Limit: limit, Cursor: cursor,
		}).Get(ctx, &r)
		if err != nil {
			return err
		}
		out.RowsFromArchive += r.RowsMoved
		if r.RowsMoved > 0 {
			out.Batches++
		}
		if !r.More {
			return nil
		}
		cursor = r.Last
	}
}

// restoreFiles brings offloaded files back, a page of rows at a time.
func restoreFiles(ctx workflow.Context, t *policy.Table, base activities.RestoreInput, limit int, out *RestoreResult) error {
	uctx := workflow.WithActivityOptions(ctx, uploadOptions(ctx))
	for i := 0; ; i++ {
		var r activities.RestoreFilesResult
		fctx := summarized(uctx, "restore %s files %s, page %d of up to %s rows", t.Name, span(base.After, base.Before), i+1, thousands(int64(limit)))
		err := workflow.ExecuteActivity(fctx, a.RestoreFiles, activities.RestoreFilesInput{
			Table: t.Name, Entry: t, JobID: out.JobID, BatchID: runUUID(workflow.GetInfo(ctx), t.Name, fmt.Sprintf("restore-files-%d", i)).String(),
			After: base.After, Before: base.Before, Limit: limit,
		}).Get(ctx, &r)
		if err != nil {
			return err
		}
		out.RowsFromArchive += r.Rows
		out.Files += r.Files
		if r.Rows > 0 {
			out.Batches++
		}
		if !r.More {
			return nil
		}
	}
}
