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

// TaskTimeout is the workflow task timeout every start path gives archive
// runs (the server's default is 10 s). A loop of local batches keeps its
// workflow task open and the SDK heartbeats it at 80% of this timeout:
// that is when the run sees a signal (pause, throttle) and answers a
// query (progress), so 3 s keeps both within about 2.4 s. It also bounds
// how long a lost worker's open task waits before another worker replays
// it.
const TaskTimeout = 3 * time.Second

// MaxPace bounds ArchiveInput.Pace: at 10 a run holds the server an
// eleventh of the time; slower than that, pause it instead.
const MaxPace = 10

// ArchiveWorkflowName is the workflow type as it appears in the Web UI.
const ArchiveWorkflowName = "ArchiveWorkflow"

// ArchiveInput starts one archive run.
type ArchiveInput struct {
	// Tables to archive, by policy name (logs, metrics, reports).
	Tables []string
	// DryRun reports what would move and writes nothing.
	DryRun bool
	// AsOf is the instant the run archives as of. Zero means the schedule's
	// nominal time for a scheduled run, else the workflow's start time.
	// Left out of the payload when zero, so the Web UI shows no year 1.
	AsOf time.Time `json:",omitzero"`
	// BatchSize overrides the policy's rows per batch (0: policy default);
	// it is where the lock-time budget starts adapting from.
	BatchSize int
	// Policy is the policy in force (the starter's configuration); empty
	// means the defaults of package policy.
	Policy []policy.Table `json:",omitempty"`
	// RetentionMode is "drop" (default) or "detach": what happens to an
	// archive partition past retention.
	RetentionMode string `json:",omitempty"`
	// Window, when set, replaces the policy's cut-off: rows in
	// [After, Before) move (a manual backfill).
	Window *Window `json:",omitempty"`
	// Parallel is how many batch loops run at once per table (logs; 1 by
	// default). Loops claim disjoint rows with SKIP LOCKED, so several
	// workers on the task queue share one table.
	Parallel int `json:",omitempty"`
	// LockBudget is the per-batch lock-time budget the batch size adapts to
	// (default 200 ms), between MinBatch and MaxBatch.
	LockBudget time.Duration `json:",omitempty"`
	MinBatch   int           `json:",omitempty"`
	MaxBatch   int           `json:",omitempty"`
	// MaxBatchesPerRun bounds the history of one run: past it (or when the
	// server suggests it) the run continues as new (default 1000).
	MaxBatchesPerRun int `json:",omitempty"`
	// ActivityTimeout is how long one database step may run before Temporal
	// gives it to another worker (default 10 minutes): a lost worker's batch
	// is retried after it. Report uploads have their own, longer, timeout
	// with heartbeats.
	ActivityTimeout time.Duration `json:",omitempty"`
	// Pace, when set, makes each batch rest Pace × its lock time after it
	// commits (pt-archiver's --sleep-coef): with 1, the run holds the
	// server at most half the time and leaves the rest to the application.
	// The batch's worker rests, not the workflow: the history is the same.
	Pace float64 `json:",omitempty"`
	// MaxLoad and CriticalLoad are the load controller's thresholds
	// (policy.ParseLoad's form; "" or "off": none): past MaxLoad a batch
	// rests and the batch size shrinks, past CriticalLoad the run stops and
	// each table not done records StoppedAtLoad. A table's policy entry may
	// set its own.
	MaxLoad      string `json:",omitempty"`
	CriticalLoad string `json:",omitempty"`
	// BatchActivities runs each batch as an activity from the task queue,
	// as runs did before local batches (changeLocalBatches): each batch on
	// the timeline with its heartbeats, signals and queries answered at
	// once between batches, at a round trip through the server per batch.
	// Parallel > 1 implies it.
	BatchActivities bool `json:",omitempty"`
	// RowByRow archives partitioned live tables by batches only, never
	// exchanging a whole partition.
	RowByRow bool `json:",omitempty"`
	// Deadline, when set, is the instant after which the run starts no new
	// batch, exchange, report or retention step; what is in flight
	// finishes, and each table not done records StoppedAtDeadline
	// (`starter run --stop-by`). A continued or child run carries it.
	Deadline time.Time `json:",omitzero"`
	// StopBy is a schedule's deadline as a wall-clock time ("06:00") in
	// StopByZone (IANA, default UTC): the run resolves it, once, to the next
	// such moment after it starts, and carries the result as Deadline.
	StopBy     string `json:",omitempty"`
	StopByZone string `json:",omitempty"`
	// Carry is the state a continued run picks up (set by the workflow).
	Carry *Carry `json:",omitempty"`
}

// Window is a backfill's time range: After (inclusive, optional) to Before.
type Window struct {
	After  time.Time `json:",omitzero"`
	Before time.Time
	// Force: the window may reach into rows younger than the policy's
	// cut-off (the operator passed --force); archive_jobs records it.
	Force bool `json:",omitempty"`
}

// Carry is what one run hands the next when it continues as new.
type Carry struct {
	Tables           []TableResult
	Runs             int
	Paused           bool
	BatchesPerSecond float64 `json:",omitempty"`
}

// ArchiveResult is the run's summary, one entry per table. The progress
// query returns it while the run goes on.
type ArchiveResult struct {
	AsOf   time.Time
	DryRun bool
	Window *Window `json:",omitempty"`
	Tables []TableResult
	// Runs counts the continue-as-new generations before this one.
	Runs int `json:",omitempty"`
	// Paused and BatchesPerSecond are the operator's controls in force.
	Paused           bool    `json:",omitempty"`
	BatchesPerSecond float64 `json:",omitempty"`
	// Deadline is the run's deadline in force (zero: none).
	Deadline time.Time `json:",omitzero"`
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
	// PartitionsExchanged counts live partitions moved whole, and
	// LongestLockMillis is the longest any of their DDL steps held a lock.
	PartitionsExchanged int   `json:",omitempty"`
	LongestLockMillis   int64 `json:",omitempty"`
	// ExchangeSkipped says why partitions in range moved by batches.
	ExchangeSkipped []string `json:",omitempty"`
	// Failures counts items that failed while the rest went on (reports).
	Failures int64 `json:",omitempty"`
	// Seconds is the branch's duration on the workflow's clock.
	Seconds float64 `json:",omitempty"`
	// Retention is what the retention step removed (or would, in a dry run).
	Retention *activities.RetentionResult `json:",omitempty"`
	// StoppedAtDeadline: the run's deadline came before this table was
	// done; what was started finished, the rest waits for the next run.
	// Not a failure.
	StoppedAtDeadline bool `json:",omitempty"`
	// The load controller. MaxLoad is the threshold in force (a relative
	// one resolved against LoadBaseline, the application's running
	// statements before the first batch); LoadRests counts batches that
	// rested, LoadRestSeconds their rests, LastLoad the last signal past
	// it. StoppedAtLoad is the signal past the critical load that stopped
	// the run before this table was done: not a failure, the next run goes
	// on.
	MaxLoad         string  `json:",omitempty"`
	LoadBaseline    float64 `json:",omitempty"`
	LoadRests       int64   `json:",omitempty"`
	LoadRestSeconds float64 `json:",omitempty"`
	LastLoad        string  `json:",omitempty"`
	StoppedAtLoad   string  `json:",omitempty"`
	// Vacuum is what the VACUUM (ANALYZE) step after a large delete did.
	Vacuum  *activities.VacuumResult  `json:",omitempty"`
	Error   string                    `json:",omitempty"`
	Preview *activities.PreviewResult `json:",omitempty"`

	// Progress. Oldest is the oldest eligible row when the branch began,
	// Reached the newest row moved so far: with Cutoff they give the share
	// of the range done, hence the ETA (rows spread evenly in time assumed).
	Oldest     *time.Time `json:",omitempty"`
	Reached    *time.Time `json:",omitempty"`
	BatchSize  int        `json:",omitempty"`
	RowsPerSec float64    `json:",omitempty"`
	ETASeconds float64    `json:",omitempty"`
	// Cursor is where a reports branch resumes after continue-as-new.
	Cursor *activities.ListReportsInput `json:",omitempty"`
}

func (t TableResult) done() bool { return t.Status == StatusCompleted || t.Status == StatusFailed }

// ErrRunFailed is the error type of a run in which at least one table
// failed; its details carry the ArchiveResult.
const ErrRunFailed = "ArchiveRunFailed"

// ProgressQuery is the query name that returns the run's ArchiveResult so far.
const ProgressQuery = "progress"

// ScheduledStartTime is the search attribute a Temporal Schedule sets on the
// runs it starts: their nominal time.
var ScheduledStartTime = temporal.NewSearchAttributeKeyTime("TemporalScheduledStartTime")

// Workflow changes, each guarded by workflow.GetVersion so that runs started
// before the change replay on the old path (docs/testing.md, "Changing the
// workflow"). The recorded histories in testdata/histories cover each shape.
const (
	// changeMoreFlag: the batch loop ends when MoveBatch says no rows are
	// left (More), not when a batch comes back short; metric batches are
	// whole days, whose size is not the limit.
	changeMoreFlag = "batch-loop-more-flag"
	// changeRetention: a retention step after the batches.
	changeRetention = "retention-step"
	// changeOperations: parallel batch loops, pause/resume/throttle between
	// batches, the lock-time budget, and continue-as-new.
	changeOperations = "operations"
	// changeCursor: log batch loops carry a (time, id) cursor and end with
	// one sweep without it.
	changeCursor = "logs-keyset-cursor"
	// changeMetricsCursor: metric batch loops carry the day they reached.
	changeMetricsCursor = "metrics-day-cursor"
	// changeExchange: a move branch first exchanges whole live partitions
	// older than the cut-off, then moves the rest by batches.
	changeExchange = "partition-exchange"
	// changeColdExport: the retention step of an entry with an export runs
	// with the upload's timeouts (it writes, uploads and verifies each
	// partition before dropping it) and heartbeats.
	changeColdExport = "cold-export"
	// changeDeadline: a run with a deadline starts no new unit of work once
	// workflow.Now reaches it and records StoppedAtDeadline per table.
	changeDeadline = "run-deadline"
	// changeVacuum: after a table's rows were deleted, a VACUUM (ANALYZE)
	// step (the worker decides whether the share deleted calls for it).
	changeVacuum = "vacuum-analyze"
	// changeLocalBatches: MoveBatch runs as a local activity, in the worker
	// that runs the workflow task: no task queue round trip per batch, one
	// marker per batch in the history.
	changeLocalBatches = "local-batches"
	// changeBudgetAim: the batch size aims at half the lock-time budget
	// (was 70%), so that the slow tail of batches stays under it.
	changeBudgetAim = "budget-aim"
	// changeNoYieldTimer: a loop of local batches no longer ends its
	// workflow task with a 1 ms timer after each second of batches; the
	// SDK's workflow task heartbeat (at 80% of TaskTimeout) lets signals
	// and queries in. Runs without this marker that started with another
	// task timeout than TaskTimeout began before the timer was dropped and
	// replay with it (legacyYield).
	changeNoYieldTimer = "local-batches-no-yield-timer"
	// changeLoadControl: a run with a max or critical load samples the
	// server's load before a table's first batch (a relative threshold's
	// baseline), passes the thresholds to every batch, halves the batch
	// size after a rest, and stops at the critical load.
	changeLoadControl = "load-control"
	// changeSweepAfterVacuum: a cursor loop that runs dry leaves its final
	// sweep (from the oldest row, without the cursor) until after the
	// retention and VACUUM steps: VACUUM removes the index entries of the
	// rows the run deleted, which the sweep would otherwise walk one heap
	// visit at a time (2.1 s for 1.8M of them, measured).
	changeSweepAfterVacuum = "sweep-after-vacuum"
)

// ArchiveWorkflow archives the selected tables as of one instant, one
// branch per table, in parallel. A table's failure does not stop the others;
// the run fails at the end, with the summary in the error's details. Long
// runs continue as new, carrying totals; signals pause, resume and throttle
// it between batches.
func ArchiveWorkflow(ctx workflow.Context, in ArchiveInput) (ArchiveResult, error) {
	tables, pol, err := validate(in)
	if err != nil {
		return ArchiveResult{}, temporal.NewNonRetryableApplicationError("invalid archive input: "+err.Error(), activities.ErrInvalidInput, nil)
	}
	ops := workflow.GetVersion(ctx, changeOperations, workflow.DefaultVersion, 1) >= 1
	asOf := resolveAsOf(ctx, in.AsOf)
	res := ArchiveResult{AsOf: asOf, DryRun: in.DryRun, Window: in.Window, Tables: make([]TableResult, len(tables))}
	for i, name := range tables {
		t, _ := policy.Find(pol, name)
		res.Tables[i] = TableResult{Table: name, Status: StatusPending, Cutoff: cutoffOf(t, asOf, in.Window)}
	}
	s := newRunState(ctx, in, &res, ops)
	if err := s.resolveDeadline(ctx, in); err != nil {
		return res, err
	}
	res.Deadline = s.deadline
	if in.Carry != nil {
		res.Tables, res.Runs = in.Carry.Tables, in.Carry.Runs
		s.paused, s.bps = in.Carry.Paused, in.Carry.BatchesPerSecond
	}
	if err := workflow.SetQueryHandler(ctx, ProgressQuery, func() (ArchiveResult, error) { return s.progress(ctx), nil }); err != nil {
		return res, err
	}

	opts := activityOptions
	if in.ActivityTimeout > 0 {
		opts.StartToCloseTimeout = in.ActivityTimeout
	}
	ctx = workflow.WithActivityOptions(ctx, opts)
	wg := workflow.NewWaitGroup(ctx)
	for i := range res.Tables {
		if res.Tables[i].done() {
			continue // finished in an earlier run of this chain
		}
		wg.Add(1)
		workflow.Go(ctx, func(ctx workflow.Context) {
			defer wg.Done()
			started := workflow.Now(ctx)
			prior := res.Tables[i].Seconds
			defer func() { res.Tables[i].Seconds = prior + workflow.Now(ctx).Sub(started).Seconds() }()
			t, _ := policy.Find(pol, res.Tables[i].Table)
			b := &branch{run: s, table: t, asOf: asOf, result: &res.Tables[i], batchSize: in.BatchSize, retentionMode: in.RetentionMode}
			if in.DryRun {
				b.preview(ctx)
			} else {
				b.archive(ctx)
			}
		})
	}
	wg.Wait(ctx)

	if s.stopping {
		return res, s.continueAsNew(ctx, in, asOf)
	}
	res.Paused, res.BatchesPerSecond = s.paused, s.bps
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

// validate checks the input the same way the starter does before sending.
func validate(in ArchiveInput) ([]string, []policy.Table, error) {
	pol := in.Policy
	if len(pol) == 0 {
		pol = policy.Tables
	}
	pol = normalized(pol)
	tables, err := policy.SelectFrom(pol, in.Tables)
	if err != nil {
		return nil, nil, err
	}
	if in.BatchSize != 0 {
		if err := policy.ValidateBatchSize(in.BatchSize); err != nil {
			return nil, nil, err
		}
	}
	for _, name := range tables {
		t, err := policy.Find(pol, name)
		if err == nil {
			err = t.Validate()
		}
		if err == nil {
			err = t.CheckNames()
		}
		if err != nil {
			return nil, nil, fmt.Errorf("policy: %w", err)
		}
	}
	switch in.RetentionMode {
	case "", activities.RetentionDrop, activities.RetentionDetach:
	default:
		return nil, nil, fmt.Errorf("retention mode %q: want drop or detach", in.RetentionMode)
	}
	if w := in.Window; w != nil {
		if w.Before.IsZero() {
			return nil, nil, errors.New("window: before is required")
		}
		if !w.After.IsZero() && !w.After.Before(w.Before) {
			return nil, nil, fmt.Errorf("window: after %s is not before %s", w.After.UTC().Format(time.RFC3339), w.Before.UTC().Format(time.RFC3339))
		}
	}
	if in.Pace < 0 || in.Pace > MaxPace {
		return nil, nil, fmt.Errorf("pace %g: must be between 0 and %d", in.Pace, MaxPace)
	}
	for _, l := range []struct{ name, spec string }{{"max load", in.MaxLoad}, {"critical load", in.CriticalLoad}} {
		if _, err := policy.ParseLoad(l.spec); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", l.name, err)
		}
	}
	if in.Parallel < 0 || in.Parallel > 16 {
		return nil, nil, fmt.Errorf("parallel %d: must be between 1 and 16", in.Parallel)
	}
	if in.StopBy != "" {
		if _, err := ParseClock(in.StopBy); err != nil {
			return nil, nil, err
		}
		if !in.Deadline.IsZero() {
			return nil, nil, errors.New("stop-by: give a deadline or a wall-clock time, not both")
		}
	}
	if in.MinBatch < 0 || in.MaxBatch < 0 || in.MaxBatch > policy.MaxBatchSize || in.MinBatch > 0 && in.MaxBatch > 0 && in.MinBatch > in.MaxBatch {
		return nil, nil, fmt.Errorf("batch bounds %d..%d: want 1 <= min <= max <= %d", in.MinBatch, in.MaxBatch, policy.MaxBatchSize)
	}
	return tables, pol, nil
}

// normalized completes entries recorded by older starters (policy.Normalize).
func normalized(pol []policy.Table) []policy.Table {
	out := make([]policy.Table, len(pol))
	for i, t := range pol {
		out[i] = policy.Normalize(t)
	}
	return out
}

// cutoffOf is the policy's cut-off, or a backfill window's upper bound.
func cutoffOf(t policy.Table, asOf time.Time, w *Window) time.Time {
	if w == nil {
		return t.Cutoff(asOf)
	}
	c := w.Before.UTC()
	if t.DayAligned {
		c = activities.DayStart(c)
	}
	if t.ModeOf() == policy.ModeDownsample {
		c = policy.BucketStart(t.Bucket, c)
	}
	return c
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
