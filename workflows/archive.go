package workflows

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/policy"
)

// ArchiveInput starts one archive run.
type ArchiveInput struct {
	// Tables to archive, by policy name (logs, metrics, reports).
	Tables []string
	// DryRun reports what would move and writes nothing.
	DryRun bool
	// AsOf is the instant the run archives as of. Zero means the schedule's
	// nominal time for a scheduled run, else the workflow's start time.
	AsOf time.Time
	// BatchSize overrides the policy's rows per batch (0: policy default).
	BatchSize int
	// Policy is the policy in force (the starter's configuration); empty
	// means the defaults of package policy.
	Policy []policy.Table `json:",omitempty"`
	// RetentionMode is "drop" (default) or "detach": what happens to an
	// archive partition past retention.
	RetentionMode string `json:",omitempty"`
}

// ArchiveResult is the run's summary, one entry per table.
type ArchiveResult struct {
	AsOf   time.Time
	DryRun bool
	Tables []TableResult
}

// Failed reports whether any table failed.
func (r ArchiveResult) Failed() bool {
	for _, t := range r.Tables {
		if t.Status == StatusFailed {
			return true
		}
	}
	return false
}

// Table statuses, as in archive_jobs.status.
const (
	StatusPending   = "pending"
	StatusRunning   = "running"
	StatusCompleted = "completed"
	StatusFailed    = "failed"
)

// TableResult is one table's outcome (and, while running, its progress).
type TableResult struct {
	Table        string
	Status       string
	JobID        string    `json:",omitempty"`
	Cutoff       time.Time // rows strictly older than this move
	Batches      int64
	RowsArchived int64
	RowsDeleted  int64
	Bytes        int64
	// PartitionsCreated counts archive partitions this run created.
	PartitionsCreated int
	// RowsMerged counts aggregates that late samples merged into (metrics).
	RowsMerged int64 `json:",omitempty"`
	// Failures counts items that failed while the rest went on (reports).
	Failures int64 `json:",omitempty"`
	// Seconds is the branch's duration on the workflow's clock.
	Seconds float64 `json:",omitempty"`
	// Retention is what the retention step removed (or would, in a dry run).
	Retention *activities.RetentionResult `json:",omitempty"`
	Error     string                      `json:",omitempty"`
	Preview   *activities.PreviewResult   `json:",omitempty"`
}

// ErrRunFailed is the error type of a run in which at least one table
// failed; its details carry the ArchiveResult.
const ErrRunFailed = "ArchiveRunFailed"

// ProgressQuery is the query name that returns the run's ArchiveResult so far.
const ProgressQuery = "progress"

// ScheduledStartTime is the search attribute a Temporal Schedule sets on the
// runs it starts: their nominal time.
var ScheduledStartTime = temporal.NewSearchAttributeKeyTime("TemporalScheduledStartTime")

// ArchiveWorkflow archives the selected tables as of one instant, one
// branch per table, in parallel. A table's failure does not stop the others;
// the run fails at the end, with the summary in the error's details.
func ArchiveWorkflow(ctx workflow.Context, in ArchiveInput) (ArchiveResult, error) {
	tables, err := policy.Select(in.Tables)
	if err != nil {
		return ArchiveResult{}, temporal.NewNonRetryableApplicationError("invalid archive input: "+err.Error(), activities.ErrInvalidInput, nil)
	}
	if in.BatchSize != 0 {
		if err := policy.ValidateBatchSize(in.BatchSize); err != nil {
			return ArchiveResult{}, temporal.NewNonRetryableApplicationError("invalid archive input: "+err.Error(), activities.ErrInvalidInput, nil)
		}
	}
	pol := in.Policy
	if len(pol) == 0 {
		pol = policy.Tables
	}
	for _, name := range tables {
		t, err := policy.Find(pol, name)
		if err == nil {
			err = t.Validate()
		}
		if err != nil {
			return ArchiveResult{}, temporal.NewNonRetryableApplicationError("invalid archive policy: "+err.Error(), activities.ErrInvalidInput, nil)
		}
	}
	switch in.RetentionMode {
	case "", activities.RetentionDrop, activities.RetentionDetach:
	default:
		return ArchiveResult{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf("invalid retention mode %q (drop or detach)", in.RetentionMode), activities.ErrInvalidInput, nil)
	}
	asOf := resolveAsOf(ctx, in.AsOf)
	res := ArchiveResult{AsOf: asOf, DryRun: in.DryRun, Tables: make([]TableResult, len(tables))}
	for i, name := range tables {
		t, _ := policy.Find(pol, name)
		res.Tables[i] = TableResult{Table: name, Status: StatusPending, Cutoff: t.Cutoff(asOf)}
	}
	if err := workflow.SetQueryHandler(ctx, ProgressQuery, func() (ArchiveResult, error) { return res, nil }); err != nil {
		return res, err
	}

	ctx = workflow.WithActivityOptions(ctx, activityOptions)
	wg := workflow.NewWaitGroup(ctx)
	for i := range res.Tables {
		wg.Add(1)
		workflow.Go(ctx, func(ctx workflow.Context) {
			defer wg.Done()
			started := workflow.Now(ctx)
			defer func() { res.Tables[i].Seconds = workflow.Now(ctx).Sub(started).Seconds() }()
			t, _ := policy.Find(pol, res.Tables[i].Table)
			b := branch{table: t, asOf: asOf, result: &res.Tables[i], batchSize: in.BatchSize, retentionMode: in.RetentionMode}
			if in.DryRun {
				b.preview(ctx)
			} else {
				b.archive(ctx)
			}
		})
	}
	wg.Wait(ctx)

	if res.Failed() {
		var failed []string
		for _, t := range res.Tables {
			if t.Status == StatusFailed {
				failed = append(failed, t.Table+": "+t.Error)
			}
		}
		return res, temporal.NewNonRetryableApplicationError("archive run failed: "+strings.Join(failed, "; "), ErrRunFailed, nil, res)
	}
	return res, nil
}

// activityOptions: every step retries with backoff (a database restart or a
// lost worker is ridden out), but gives up after ScheduleToClose so a run
// that cannot progress fails visibly instead of hanging; invalid input fails
// at once.
var activityOptions = workflow.ActivityOptions{
	StartToCloseTimeout:    10 * time.Minute,
	ScheduleToCloseTimeout: 30 * time.Minute,
	RetryPolicy: &temporal.RetryPolicy{
		InitialInterval:        time.Second,
		BackoffCoefficient:     2,
		MaximumInterval:        30 * time.Second,
		NonRetryableErrorTypes: activities.NonRetryable,
	},
}

// resolveAsOf picks the run's instant: the input, else the schedule's
// nominal time, else the workflow's start time; in UTC and truncated to
// PostgreSQL's microsecond precision so that what is stored compares equal.
func resolveAsOf(ctx workflow.Context, asOf time.Time) time.Time {
	if asOf.IsZero() {
		if t, ok := workflow.GetTypedSearchAttributes(ctx).GetTime(ScheduledStartTime); ok {
			asOf = t
		} else {
			asOf = workflow.GetInfo(ctx).WorkflowStartTime
		}
	}
	return asOf.UTC().Truncate(time.Microsecond)
}

// branch is one table's part of a run.
type branch struct {
	table         policy.Table
	asOf          time.Time
	batchSize     int
	retentionMode string
	result        *TableResult
}

// Workflow changes, each guarded by workflow.GetVersion so that runs started
// before the change replay on the old path (README: "Changing the
// workflow"). The recorded histories in testdata/histories cover each shape.
const (
	// changeMoreFlag: the batch loop ends when MoveBatch says no rows are
	// left (More), not when a batch comes back short; metric batches are
	// whole days, whose size is not the limit.
	changeMoreFlag = "batch-loop-more-flag"
	// changeRetention: a retention step after the batches.
	changeRetention = "retention-step"
)

func (b *branch) preview(ctx workflow.Context) {
	b.result.Status = StatusRunning
	var p activities.PreviewResult
	err := workflow.ExecuteActivity(ctx, a.Preview, activities.PreviewInput{
		Table: b.table.Name, Cutoff: b.result.Cutoff, RetentionLimit: b.table.RetentionLimit(b.asOf),
	}).Get(ctx, &p)
	if err != nil {
		b.fail(err)
		return
	}
	b.result.Preview = &p
	b.result.Status = StatusCompleted
}

func (b *branch) archive(ctx workflow.Context) {
	info := workflow.GetInfo(ctx)
	r := b.result
	r.Status = StatusRunning
	r.JobID = runUUID(info, b.table.Name, "job").String()

	err := workflow.ExecuteActivity(ctx, a.StartJob, activities.StartJobInput{
		JobID: r.JobID, Table: b.table.Name, WorkflowID: info.WorkflowExecution.ID, RunID: info.WorkflowExecution.RunID,
		AsOf: b.asOf, Cutoff: r.Cutoff,
	}).Get(ctx, nil)
	if err != nil {
		b.fail(err) // no job row to close
		return
	}
	if b.table.Name == "reports" {
		err = b.archiveReports(ctx)
	} else {
		err = b.moveAll(ctx)
	}
	if err == nil && workflow.GetVersion(ctx, changeRetention, workflow.DefaultVersion, 1) >= 1 {
		err = b.retention(ctx)
	}
	var totals activities.JobTotals
	finish := activities.FinishJobInput{JobID: r.JobID, Failed: err != nil}
	if err != nil {
		finish.Error = errorMessage(err)
	}
	if ferr := workflow.ExecuteActivity(ctx, a.FinishJob, finish).Get(ctx, &totals); ferr != nil && err == nil {
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

// moveAll ensures partitions, then moves batches until one comes back short:
// rows it did not see were locked by another worker, which moves them.
func (b *branch) moveAll(ctx workflow.Context) error {
	r := b.result
	var parts activities.EnsurePartitionsResult
	if err := workflow.ExecuteActivity(ctx, a.EnsurePartitions, activities.EnsurePartitionsInput{Table: b.table.Name, Cutoff: r.Cutoff}).Get(ctx, &parts); err != nil {
		return err
	}
	r.PartitionsCreated = len(parts.Created)
	if parts.Oldest == nil {
		return nil // nothing eligible
	}
	limit := b.limit()
	useMore := workflow.GetVersion(ctx, changeMoreFlag, workflow.DefaultVersion, 1) >= 1
	info := workflow.GetInfo(ctx)
	for seq := 1; ; seq++ {
		var mv activities.MoveBatchResult
		in := activities.MoveBatchInput{
			Table: b.table.Name, JobID: r.JobID, Cutoff: r.Cutoff, Limit: limit,
			BatchID: runUUID(info, b.table.Name, fmt.Sprintf("batch-%d", seq)).String(),
		}
		if err := workflow.ExecuteActivity(ctx, a.MoveBatch, in).Get(ctx, &mv); err != nil {
			return err
		}
		r.Batches++
		r.RowsArchived += mv.RowsMoved
		r.RowsDeleted += mv.RowsDeleted
		r.Bytes += mv.Bytes
		r.RowsMerged += mv.RowsMerged
		if useMore && !mv.More || !useMore && mv.RowsMoved < int64(limit) {
			return nil
		}
	}
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
	err := workflow.ExecuteActivity(ctx, a.ApplyRetention, activities.RetentionInput{
		Table: b.table.Name, Before: b.table.RetentionLimit(b.asOf), Mode: b.retentionMode,
	}).Get(ctx, &rr)
	if err != nil {
		return err
	}
	b.result.Retention = &rr
	return nil
}

func (b *branch) fail(err error) {
	b.result.Status = StatusFailed
	b.result.Error = errorMessage(err)
}

// errorMessage unwraps Temporal's activity error envelope to the cause an
// operator can act on.
func errorMessage(err error) string {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return appErr.Error()
	}
	return err.Error()
}

// archiverNamespace scopes the name-based UUIDs of jobs and batches.
var archiverNamespace = uuid.MustParse("6f1c2a4e-5b7d-4c1e-9a3f-2d8e7b6c5a41")

// runUUID derives a stable id from the run and a label: the same on every
// replay and every activity retry, different across runs.
func runUUID(info *workflow.Info, table, label string) uuid.UUID {
	key := info.WorkflowExecution.ID + "/" + info.WorkflowExecution.RunID + "/" + table + "/" + label
	return uuid.NewSHA1(archiverNamespace, []byte(key))
}

// ArchiveWorkflowName is the workflow type as it appears in the Web UI.
const ArchiveWorkflowName = "ArchiveWorkflow"
