package workflows

import (
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/mockupaws/archiver/internal/policy"
)

// Backfill: operators queue manual archive windows on one long-lived
// workflow with a known id (signal-with-start), so that requests line up
// instead of racing. Each request runs as a child ArchiveWorkflow over its
// window, with the same branches and batch protocol.
const (
	BackfillWorkflowName = "BackfillWorkflow"
	BackfillWorkflowID   = "archive-backfill"
	SignalBackfill       = "backfill"
	BackfillQuery        = "backfill-queue"
)

// BackfillRequest asks to archive one table's rows in [After, Before).
type BackfillRequest struct {
	Table  string
	Before time.Time
	After  time.Time `json:",omitzero"`
	// Force lets a window reach into rows younger than the policy's
	// cut-off (the operator's --force); the run's archive_jobs row records
	// it.
	Force bool `json:",omitempty"`
	// Policy is the table's policy in force where the request was made
	// (the starter's configuration); nil means the built-in default.
	Policy *policy.Table `json:",omitempty"`
	// Deadline, when set, is the child run's deadline (`backfill
	// --stop-by`): it starts no new batch after it.
	Deadline time.Time `json:",omitzero"`
}

func (r BackfillRequest) String() string {
	after := "the beginning"
	if !r.After.IsZero() {
		after = r.After.UTC().Format(time.RFC3339)
	}
	out := fmt.Sprintf("%s from %s to %s", r.Table, after, r.Before.UTC().Format(time.RFC3339))
	if r.Force {
		out += " (forced)"
	}
	return out
}

// changeBackfillCutoff: requests reaching into rows younger than the
// policy's cut-off are refused unless forced.
const changeBackfillCutoff = "backfill-policy-cutoff"

// BackfillOutcome is a request that ran.
type BackfillOutcome struct {
	Request    BackfillRequest
	WorkflowID string
	Status     string
	Rows       int64
	Error      string `json:",omitempty"`
}

// Refusal is a request the workflow refused, with the reason.
type Refusal struct {
	Request BackfillRequest
	Reason  string
}

// BackfillState is the backfill workflow's input (carried across
// continue-as-new), its query answer and its result.
type BackfillState struct {
	Queue   []BackfillRequest
	Current *BackfillRequest `json:",omitempty"`
	Done    []BackfillOutcome
	Refused []Refusal
	// Served counts requests run over the whole chain.
	Served int
	// IdleTimeout ends the workflow when no request came for this long
	// (default 10 minutes); a later request starts it again.
	IdleTimeout time.Duration `json:",omitempty"`
}

// keepOutcomes bounds the history the state carries.
const keepOutcomes = 50

// ValidateBackfill refuses a request that cannot run: unknown table, an
// empty or inverted window, a window reaching into the future or (unless
// forced) into rows younger than the policy's cut-off, a metrics window not
// on whole UTC days, or one overlapping a request already queued or running
// for the same table. The starter calls it before sending; the workflow
// calls it again on receipt.
func ValidateBackfill(r BackfillRequest, now time.Time, pending []BackfillRequest) error {
	return validateBackfill(r, now, pending, true)
}

func validateBackfill(r BackfillRequest, now time.Time, pending []BackfillRequest, checkCutoff bool) error {
	var t policy.Table
	if r.Policy != nil {
		if r.Policy.Name != r.Table {
			return fmt.Errorf("the request's policy is for %q, not %q", r.Policy.Name, r.Table)
		}
		if err := r.Policy.Validate(); err != nil {
			return fmt.Errorf("the request's policy: %w", err)
		}
		if err := r.Policy.CheckNames(); err != nil {
			return fmt.Errorf("the request's policy: %w", err)
		}
		t = policy.Normalize(*r.Policy)
	} else {
		var err error
		if t, err = policy.Lookup(r.Table); err != nil {
			return err
		}
	}
	if r.Before.IsZero() {
		return errors.New("--before is required")
	}
	if r.Before.After(now) {
		return fmt.Errorf("the window ends at %s, in the future (now %s)", r.Before.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if !r.After.IsZero() && !r.After.Before(r.Before) {
		return fmt.Errorf("--after %s is not before --before %s", r.After.UTC().Format(time.RFC3339), r.Before.UTC().Format(time.RFC3339))
	}
	if cut := t.Cutoff(now); checkCutoff && r.Before.After(cut) && !r.Force {
		return fmt.Errorf("the window ends at %s, after the policy's cut-off %s (%s rows younger than %d days stay live): check --before, or pass --force to archive them anyway",
			r.Before.UTC().Format(time.RFC3339), cut.Format(time.RFC3339), r.Table, t.ArchiveAfter/policy.Day)
	}
	if t.DayAligned && (!r.Before.Equal(r.Before.UTC().Truncate(24*time.Hour)) || !r.After.Equal(r.After.UTC().Truncate(24*time.Hour))) {
		return fmt.Errorf("%s windows must start and end at 00:00 UTC: days are aggregated whole", r.Table)
	}
	if t.ModeOf() == policy.ModeDownsample && !t.DayAligned &&
		(!r.Before.Equal(policy.BucketStart(t.Bucket, r.Before)) || !r.After.IsZero() && !r.After.Equal(policy.BucketStart(t.Bucket, r.After))) {
		return fmt.Errorf("%s windows must start and end on a %s boundary (UTC): buckets are aggregated whole", r.Table, t.Bucket)
	}
	for _, p := range pending {
		if p.Table == r.Table && (p.After.IsZero() || p.After.Before(r.Before)) && (r.After.IsZero() || r.After.Before(p.Before)) {
			return fmt.Errorf("overlaps a request already queued: %s", p)
		}
	}
	return nil
}

// BackfillWorkflow serves backfill requests in the order they came.
func BackfillWorkflow(ctx workflow.Context, s BackfillState) (BackfillState, error) {
	if s.IdleTimeout <= 0 {
		s.IdleTimeout = 10 * time.Minute
	}
	if err := workflow.SetQueryHandler(ctx, BackfillQuery, func() (BackfillState, error) { return s, nil }); err != nil {
		return s, err
	}
	requests := workflow.GetSignalChannel(ctx, SignalBackfill)
	checkCutoff := workflow.GetVersion(ctx, changeBackfillCutoff, workflow.DefaultVersion, 1) >= 1
	receive := func(r BackfillRequest) {
		pending := append([]BackfillRequest(nil), s.Queue...)
		if s.Current != nil {
			pending = append(pending, *s.Current)
		}
		if err := validateBackfill(r, workflow.Now(ctx), pending, checkCutoff); err != nil {
			workflow.GetLogger(ctx).Warn("backfill request refused", "request", r.String(), "reason", err.Error())
			s.Refused = append(s.Refused, Refusal{Request: r, Reason: err.Error()})
			return
		}
		s.Queue = append(s.Queue, r)
	}
	workflow.Go(ctx, func(ctx workflow.Context) {
		for {
			var r BackfillRequest
			requests.Receive(ctx, &r)
			receive(r)
		}
	})

	for served := 0; ; served++ {
		ok, err := workflow.AwaitWithTimeout(ctx, s.IdleTimeout, func() bool { return len(s.Queue) > 0 })
		if err != nil {
			return s, err
		}
		if !ok {
			return s, drain(ctx, requests, receive, &s) // idle: done, unless a request just came
		}
		if served >= 20 || workflow.GetInfo(ctx).GetContinueAsNewSuggested() {
			if err := drain(ctx, requests, receive, &s); err != nil {
				return s, err
			}
			return s, workflow.NewContinueAsNewError(ctx, BackfillWorkflowName, s)
		}
		r := s.Queue[0]
		s.Queue, s.Current = s.Queue[1:], &r
		s.Done = append(s.Done, runBackfill(ctx, r, s.Served+1))
		if len(s.Done) > keepOutcomes {
			s.Done = s.Done[len(s.Done)-keepOutcomes:]
		}
		s.Current = nil
		s.Served++
	}
}

// drain takes in requests that arrived but were not received yet; if any
// was queued, the caller's loop must go on, so it continues as new.
func drain(ctx workflow.Context, ch workflow.ReceiveChannel, receive func(BackfillRequest), s *BackfillState) error {
	for {
		var r BackfillRequest
		if !ch.ReceiveAsync(&r) {
			break
		}
		receive(r)
	}
	if len(s.Queue) > 0 {
		return workflow.NewContinueAsNewError(ctx, BackfillWorkflowName, *s)
	}
	return nil
}

func runBackfill(ctx workflow.Context, r BackfillRequest, n int) BackfillOutcome {
	id := fmt.Sprintf("%s-%d", workflow.GetInfo(ctx).WorkflowExecution.ID, n)
	out := BackfillOutcome{Request: r, WorkflowID: id}
	var res ArchiveResult
	in := ArchiveInput{Tables: []string{r.Table}, Window: &Window{After: r.After, Before: r.Before, Force: r.Force}, Deadline: r.Deadline}
	if r.Policy != nil {
		in.Policy = []policy.Table{*r.Policy}
	}
	// The summary and details are user metadata, which replay does not
	// compare (TestReplay over the backfill histories).
	cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
		WorkflowID:          id,
		WorkflowTaskTimeout: TaskTimeout,
		StaticSummary:       ArchiveSummary(in),
		StaticDetails:       ArchiveDetails(in),
		TypedSearchAttributes: temporal.NewSearchAttributes(
			temporal.NewSearchAttributeKeyKeywordList("ArchiveTables").ValueSet([]string{r.Table}),
			temporal.NewSearchAttributeKeyBool("ArchiveBackfill").ValueSet(true),
		),
	})
	err := workflow.ExecuteChildWorkflow(cctx, ArchiveWorkflowName, in).Get(ctx, &res)
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) && appErr.HasDetails() {
		_ = appErr.Details(&res)
	}
	for _, t := range res.Tables {
		out.Rows += t.RowsDeleted
	}
	out.Status = StatusCompleted
	if err != nil {
		out.Status, out.Error = StatusFailed, errorMessage(err)
	}
	return out
}
