// Package schedule manages the Temporal Schedule that starts the nightly
// archive run: created or updated idempotently, described, paused, triggered,
// backfilled over past nights and deleted.
package schedule

import (
	"context"
	"errors"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/mockupaws/archiver/workflows"
)

// DefaultID is the nightly schedule's id.
const DefaultID = "archive-nightly"

// Options describe the schedule.
type Options struct {
	ID        string
	TaskQueue string
	// Cron is when it fires (default 03:00 every day) in TimeZone (IANA
	// name, default UTC).
	Cron     string
	TimeZone string
	// CatchupWindow is how late a missed night may still start after the
	// server was down (default 6 hours); Overlap is always skip.
	CatchupWindow time.Duration
	// Input is what each run archives; its AsOf stays zero so that every
	// run archives as of its nominal time.
	Input workflows.ArchiveInput
	// Memo is shown in the Web UI (the policy in force).
	Memo map[string]any
	// Verify, when set, makes this a verification schedule: it starts a
	// VerifyWorkflow with this request instead of an archive run.
	Verify *workflows.VerifyRequest
}

// VerifyID is the id of the weekly verification schedule beside the
// nightly one.
func VerifyID(nightly string) string { return nightly + "-verify-weekly" }

// VerifyCron is when the weekly verification runs: Sundays at 05:00, after
// the night's run.
const VerifyCron = "0 5 * * 0"

func (o *Options) defaults() error {
	if o.ID == "" {
		o.ID = DefaultID
	}
	if o.Cron == "" {
		o.Cron = "0 3 * * *"
	}
	if o.TimeZone == "" {
		o.TimeZone = "UTC"
	}
	if _, err := time.LoadLocation(o.TimeZone); err != nil {
		return fmt.Errorf("time zone %q: %w", o.TimeZone, err)
	}
	if o.CatchupWindow == 0 {
		o.CatchupWindow = 6 * time.Hour
	}
	if o.CatchupWindow < time.Minute {
		return fmt.Errorf("catch-up window %v: must be at least a minute", o.CatchupWindow)
	}
	if !o.Input.AsOf.IsZero() {
		return errors.New("a scheduled run archives as of its nominal time: leave as-of unset")
	}
	if !o.Input.Deadline.IsZero() {
		return errors.New("a scheduled run's deadline is a time of day (Input.StopBy), not an instant")
	}
	if o.Input.StopBy != "" {
		if _, err := workflows.ParseClock(o.Input.StopBy); err != nil {
			return err
		}
		if o.Input.StopByZone == "" {
			o.Input.StopByZone = o.TimeZone
		}
		if _, err := time.LoadLocation(o.Input.StopByZone); err != nil {
			return fmt.Errorf("stop-by time zone %q: %w", o.Input.StopByZone, err)
		}
	}
	return nil
}

func (o Options) action() *client.ScheduleWorkflowAction {
	if o.Verify != nil {
		return &client.ScheduleWorkflowAction{
			ID: o.ID + "-run", Workflow: workflows.VerifyWorkflowName, Args: []any{*o.Verify}, TaskQueue: o.TaskQueue, Memo: o.Memo,
			StaticSummary: "weekly " + workflows.VerifySummary(*o.Verify),
		}
	}
	return &client.ScheduleWorkflowAction{
		ID:                  o.ID + "-run",
		Workflow:            workflows.ArchiveWorkflowName,
		Args:                []any{o.Input},
		TaskQueue:           o.TaskQueue,
		WorkflowTaskTimeout: workflows.TaskTimeout,
		Memo:                o.Memo,
		// Every run of the schedule shows these; its as-of is the nominal
		// time, which ArchiveSummary says for a zero AsOf.
		StaticSummary: "nightly " + workflows.ArchiveSummary(o.Input),
		StaticDetails: workflows.ArchiveDetails(o.Input),
		TypedSearchAttributes: temporal.NewSearchAttributes(
			temporal.NewSearchAttributeKeyKeywordList("ArchiveTables").ValueSet(o.Input.Tables),
			temporal.NewSearchAttributeKeyBool("ArchiveDryRun").ValueSet(o.Input.DryRun),
			temporal.NewSearchAttributeKeyBool("ArchiveBackfill").ValueSet(false),
		),
	}
}

func (o Options) spec() client.ScheduleSpec {
	return client.ScheduleSpec{CronExpressions: []string{o.Cron}, TimeZoneName: o.TimeZone}
}

// Apply creates the schedule or brings an existing one to o. It returns
// whether it created it.
func Apply(ctx context.Context, c client.Client, o Options) (bool, error) {
	if err := o.defaults(); err != nil {
		return false, err
	}
	h := c.ScheduleClient().GetHandle(ctx, o.ID)
	_, err := h.Describe(ctx)
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		_, err = c.ScheduleClient().Create(ctx, client.ScheduleOptions{
			ID:            o.ID,
			Spec:          o.spec(),
			Action:        o.action(),
			Overlap:       enumspb.SCHEDULE_OVERLAP_POLICY_SKIP,
			CatchupWindow: o.CatchupWindow,
			Note:          "managed by `starter schedule apply`",
		})
		if err != nil {
			return false, fmt.Errorf("create schedule %s: %w", o.ID, err)
		}
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("describe schedule %s: %w", o.ID, err)
	}
	err = h.Update(ctx, client.ScheduleUpdateOptions{
		DoUpdate: func(in client.ScheduleUpdateInput) (*client.ScheduleUpdate, error) {
			s := in.Description.Schedule
			spec := o.spec()
			s.Spec = &spec
			s.Action = o.action()
			if s.Policy == nil {
				s.Policy = &client.SchedulePolicies{}
			}
			s.Policy.Overlap = enumspb.SCHEDULE_OVERLAP_POLICY_SKIP
			s.Policy.CatchupWindow = o.CatchupWindow
			return &client.ScheduleUpdate{Schedule: &s}, nil
		},
	})
	if err != nil {
		return false, fmt.Errorf("update schedule %s: %w", o.ID, err)
	}
	return false, nil
}

// Summary is what `schedule describe` shows.
type Summary struct {
	ID string
	// Cron is what was applied; the server keeps it as calendar specs and
	// may describe it that way instead (NextRuns shows the effect).
	Cron          []string
	TimeZone      string
	Paused        bool
	Note          string
	Overlap       string
	CatchupWindow time.Duration
	NextRuns      []time.Time
	RecentRuns    []string // workflow ids
}

// Describe reads the schedule.
func Describe(ctx context.Context, c client.Client, id string) (Summary, error) {
	d, err := c.ScheduleClient().GetHandle(ctx, id).Describe(ctx)
	if err != nil {
		return Summary{}, fmt.Errorf("describe schedule %s: %w", id, err)
	}
	s := Summary{ID: id, NextRuns: d.Info.NextActionTimes}
	if d.Schedule.Spec != nil {
		s.Cron, s.TimeZone = d.Schedule.Spec.CronExpressions, d.Schedule.Spec.TimeZoneName
	}
	if d.Schedule.State != nil {
		s.Paused, s.Note = d.Schedule.State.Paused, d.Schedule.State.Note
	}
	if d.Schedule.Policy != nil {
		s.Overlap, s.CatchupWindow = d.Schedule.Policy.Overlap.String(), d.Schedule.Policy.CatchupWindow
	}
	for _, r := range d.Info.RecentActions {
		if r.StartWorkflowResult != nil {
			s.RecentRuns = append(s.RecentRuns, r.StartWorkflowResult.WorkflowID)
		}
	}
	return s, nil
}

// Pause and Unpause stop and restart the nightly runs, with a note.
func Pause(ctx context.Context, c client.Client, id, note string) error {
	return c.ScheduleClient().GetHandle(ctx, id).Pause(ctx, client.SchedulePauseOptions{Note: note})
}

// Unpause restarts the nightly runs.
func Unpause(ctx context.Context, c client.Client, id, note string) error {
	return c.ScheduleClient().GetHandle(ctx, id).Unpause(ctx, client.ScheduleUnpauseOptions{Note: note})
}

// Trigger starts a run now (skipped if one is running).
func Trigger(ctx context.Context, c client.Client, id string) error {
	return c.ScheduleClient().GetHandle(ctx, id).Trigger(ctx, client.ScheduleTriggerOptions{Overlap: enumspb.SCHEDULE_OVERLAP_POLICY_SKIP})
}

// Backfill starts the runs the schedule would have started between from
// and to, each archiving as of its own nominal time, one after another.
func Backfill(ctx context.Context, c client.Client, id string, from, to time.Time) error {
	if !from.Before(to) {
		return fmt.Errorf("backfill: --from %s is not before --to %s", from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339))
	}
	return c.ScheduleClient().GetHandle(ctx, id).Backfill(ctx, client.ScheduleBackfillOptions{
		Backfill: []client.ScheduleBackfill{{Start: from, End: to, Overlap: enumspb.SCHEDULE_OVERLAP_POLICY_BUFFER_ALL}},
	})
}

// Delete removes the schedule (runs already started go on).
func Delete(ctx context.Context, c client.Client, id string) error {
	return c.ScheduleClient().GetHandle(ctx, id).Delete(ctx)
}
