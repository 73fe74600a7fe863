package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/mockupaws/archiver/internal/config"
	"github.com/mockupaws/archiver/internal/policy"
	"github.com/mockupaws/archiver/internal/schedule"
	"github.com/mockupaws/archiver/internal/temporalclient"
	"github.com/mockupaws/archiver/workflows"
)

// dial loads the configuration and connects to Temporal.
func dial(ctx context.Context, logger *slog.Logger) (config.Config, client.Client, error) {
	cfg, err := config.Load()
	if err != nil {
		return cfg, nil, err
	}
	c, err := temporalclient.Dial(ctx, cfg, logger)
	return cfg, c, err
}

// ParseTime reads an RFC3339 instant (or a date, taken as 00:00 UTC).
func ParseTime(flagName, s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t.UTC(), nil
	}
	return time.Time{}, fmt.Errorf("%s %q is not an RFC3339 time (2025-01-31T03:00:00Z) or a date (2025-01-31)", flagName, s)
}

func cmdSchedule(ctx context.Context, args []string, stdout, stderr io.Writer, logger *slog.Logger) error {
	verbs := "apply|describe|pause|unpause|trigger|backfill|delete"
	if len(args) == 0 || !strings.Contains("|"+verbs+"|", "|"+args[0]+"|") {
		return usageErr("schedule: want one of %s", verbs)
	}
	verb := args[0]
	fs := flag.NewFlagSet("schedule "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	id := fs.String("id", schedule.DefaultID, "schedule id")
	tz := fs.String("timezone", "UTC", "apply: IANA time zone of the 03:00 run")
	cron := fs.String("cron", "0 3 * * *", "apply: when the run fires")
	catchup := fs.Duration("catchup-window", 6*time.Hour, "apply: how late a missed run may still start")
	note := fs.String("note", "", "pause/unpause: why")
	from := fs.String("from", "", "backfill: first nominal time (RFC3339 or date)")
	to := fs.String("to", "", "backfill: last nominal time")
	verifyWeekly := fs.Bool("verify-weekly", false, "apply: also run `verify` every Sunday at 05:00 (schedule <id>-verify-weekly); a mismatch fails that run")
	stopBy := fs.String("stop-by", "", "apply: each run starts no new batch after this time of day HH:MM in --timezone (the next one after the run starts); tables not done by then record stopped_at_deadline")
	maxLoad := fs.String("max-load", policy.DefaultMaxLoad, "apply: each run rests batches while the server's load is past this (starter run --max-load)")
	criticalLoad := fs.String("critical-load", "", "apply: each run stops when the server's load is past this; tables not done record stopped_at_load")
	verifyDeep := fs.Bool("verify-deep", false, "apply: the weekly verification downloads every object (verify --deep)")
	if err := fs.Parse(args[1:]); err != nil {
		return usageErr("schedule %s: %v", verb, err)
	}
	if *stopBy != "" {
		if verb != "apply" {
			return usageErr("schedule %s: --stop-by is an option of schedule apply", verb)
		}
		if _, err := workflows.ParseClock(*stopBy); err != nil {
			return usageErr("schedule apply: --%v (a schedule's deadline is a time of day, the next one after each run starts)", err)
		}
		if _, err := time.LoadLocation(*tz); err != nil {
			return usageErr("schedule apply: time zone %q: %v", *tz, err)
		}
	}
	for _, l := range []struct{ flag, spec string }{{"max-load", *maxLoad}, {"critical-load", *criticalLoad}} {
		if _, err := policy.ParseLoad(l.spec); err != nil {
			return usageErr("schedule %s: --%s: %v", verb, l.flag, err)
		}
	}
	var fromT, toT time.Time
	if verb == "backfill" {
		var err error
		if fromT, err = ParseTime("--from", *from); err != nil {
			return usageErr("schedule backfill: %v", err)
		}
		if toT, err = ParseTime("--to", *to); err != nil {
			return usageErr("schedule backfill: %v", err)
		}
		if !fromT.Before(toT) {
			return usageErr("schedule backfill: --from must be before --to")
		}
		if toT.After(time.Now()) {
			return usageErr("schedule backfill: --to %s is in the future", toT.Format(time.RFC3339))
		}
	}
	cfg, c, err := dial(ctx, logger)
	if err != nil {
		return err
	}
	defer c.Close()
	switch verb {
	case "apply":
		pol, err := loadPolicy()
		if err != nil {
			return err
		}
		in, memo, err := policyInput(policy.BuiltNamesOf(pol))
		if err != nil {
			return err
		}
		if err := refuseShared(ctx, cfg, pol, nil); err != nil {
			return err
		}
		if *stopBy != "" {
			in.StopBy, in.StopByZone = strings.TrimSpace(*stopBy), *tz
		}
		in.MaxLoad, in.CriticalLoad = *maxLoad, *criticalLoad
		if err := temporalclient.EnsureSearchAttributes(ctx, c, cfg.TemporalNamespace); err != nil {
			return err
		}
		created, err := schedule.Apply(ctx, c, schedule.Options{ID: *id, TaskQueue: cfg.TaskQueue, Cron: *cron, TimeZone: *tz,
			CatchupWindow: *catchup, Input: in, Memo: memo})
		if err != nil {
			return err
		}
		verb := "updated"
		if created {
			verb = "created"
		}
		fmt.Fprintf(stdout, "schedule %s %s\n", *id, verb)
		if *verifyWeekly {
			vid := schedule.VerifyID(*id)
			created, err := schedule.Apply(ctx, c, schedule.Options{ID: vid, TaskQueue: cfg.TaskQueue, Cron: schedule.VerifyCron, TimeZone: *tz,
				CatchupWindow: *catchup, Verify: &workflows.VerifyRequest{Policy: pol, Deep: *verifyDeep}})
			if err != nil {
				return err
			}
			verb := map[bool]string{true: "created", false: "updated"}[created]
			fmt.Fprintf(stdout, "schedule %s %s (verify every Sunday 05:00 %s)\n", vid, verb, *tz)
		}
		return describeSchedule(ctx, c, cfg, *id, stdout)
	case "describe":
		return describeSchedule(ctx, c, cfg, *id, stdout)
	case "pause":
		err = schedule.Pause(ctx, c, *id, *note)
	case "unpause":
		err = schedule.Unpause(ctx, c, *id, *note)
	case "trigger":
		err = schedule.Trigger(ctx, c, *id)
	case "backfill":
		err = schedule.Backfill(ctx, c, *id, fromT, toT)
	case "delete":
		err = schedule.Delete(ctx, c, *id)
	}
	if err != nil {
		return fmt.Errorf("schedule %s %s: %w", verb, *id, err)
	}
	fmt.Fprintf(stdout, "schedule %s: %s done\n", *id, verb)
	return nil
}

func describeSchedule(ctx context.Context, c client.Client, cfg config.Config, id string, w io.Writer) error {
	s, err := schedule.Describe(ctx, c, id)
	if err != nil {
		return err
	}
	state := "active"
	if s.Paused {
		state = "paused"
	}
	fmt.Fprintf(w, "schedule %s: %s, time zone %s, overlap %s, catch-up window %s\n", s.ID, state, s.TimeZone, s.Overlap, s.CatchupWindow)
	if s.Note != "" {
		fmt.Fprintf(w, "note: %s\n", s.Note)
	}
	for i, t := range s.NextRuns {
		if i == 3 {
			break
		}
		fmt.Fprintf(w, "next run: %s\n", t.UTC().Format(time.RFC3339))
	}
	for _, r := range s.RecentRuns {
		fmt.Fprintf(w, "recent run: %s\n", r)
	}
	fmt.Fprintf(w, "Web UI: %s/namespaces/%s/schedules/%s\n", strings.TrimRight(cfg.TemporalUIURL, "/"), cfg.TemporalNamespace, id)
	return nil
}

// policyInput builds a run's input for tables with the policy in force
// (defaults overridden by ARCHIVE_* variables) and the memo that shows it.
func policyInput(tables []string) (workflows.ArchiveInput, map[string]any, error) {
	pol, err := loadPolicy()
	if err != nil {
		return workflows.ArchiveInput{}, nil, err
	}
	cfg, err := config.Load()
	if err != nil {
		return workflows.ArchiveInput{}, nil, err
	}
	memo := map[string]any{}
	for _, t := range pol {
		if slices.Contains(tables, t.Name) {
			memo["policy."+t.Name] = fmt.Sprintf("%s %s: archive after %d days, keep %d days, batch %d", t.ModeOf(), t.Live, t.ArchiveAfter/policy.Day, t.Retention/policy.Day, t.BatchSize)
		}
	}
	memo["retention_mode"] = cfg.RetentionMode
	return workflows.ArchiveInput{Tables: tables, Policy: pol, RetentionMode: cfg.RetentionMode}, memo, nil
}

func cmdBackfill(ctx context.Context, args []string, stdout, stderr io.Writer, logger *slog.Logger) error {
	fs := flag.NewFlagSet("backfill", flag.ContinueOnError)
	fs.SetOutput(stderr)
	table := fs.String("table", "", "the policy entry (logs, metrics, reports, or one of ARCHIVE_POLICY_FILE)")
	before := fs.String("before", "", "archive rows older than this (RFC3339 or date)")
	after := fs.String("after", "", "and not older than this (optional)")
	force := fs.Bool("force", false, "let the window reach into rows younger than the policy's cut-off (recorded in the run and archive_jobs)")
	stopBy := fs.String("stop-by", "", "the run starts no new batch after this time: HH:MM (local, the next such moment) or RFC3339")
	if err := fs.Parse(args); err != nil {
		return usageErr("backfill: %v", err)
	}
	if fs.NArg() > 0 {
		return usageErr("backfill: unexpected argument %q", fs.Arg(0))
	}
	req := workflows.BackfillRequest{Table: *table, Force: *force}
	var err error
	if *table == "" {
		return usageErr("backfill: --table is required (a policy entry such as logs)")
	}
	// The policy in force here (ARCHIVE_* overrides) decides the cut-off,
	// and travels with the request so that the run uses it too.
	pol, err := loadPolicy()
	if err != nil {
		return usageErr("backfill: %v", err)
	}
	if t, err := policy.Find(pol, *table); err == nil {
		req.Policy = &t
	}
	if req.Before, err = ParseTime("--before", *before); err != nil {
		return usageErr("backfill: %v", err)
	}
	if *after != "" {
		if req.After, err = ParseTime("--after", *after); err != nil {
			return usageErr("backfill: %v", err)
		}
	}
	if *stopBy != "" {
		if req.Deadline, err = ParseStopBy(*stopBy, time.Now(), time.Local); err != nil {
			return usageErr("backfill: %v", err)
		}
	}
	if err := workflows.ValidateBackfill(req, time.Now(), nil); err != nil {
		return usageErr("backfill refused: %v", err)
	}
	if cfg, err := config.Load(); err != nil {
		return err
	} else if err := refuseShared(ctx, cfg, pol, []string{*table}); err != nil {
		return err
	}
	cfg, c, err := dial(ctx, logger)
	if err != nil {
		return err
	}
	defer c.Close()
	// Refuse an overlap with what the running backfill already holds.
	if v, err := c.QueryWorkflow(ctx, workflows.BackfillWorkflowID, "", workflows.BackfillQuery); err == nil {
		var s workflows.BackfillState
		if v.Get(&s) == nil {
			pending := s.Queue
			if s.Current != nil {
				pending = append(pending, *s.Current)
			}
			if err := workflows.ValidateBackfill(req, time.Now(), pending); err != nil {
				return usageErr("backfill refused: %v", err)
			}
		}
	} else if !isNotFound(err) {
		return fmt.Errorf("read the backfill queue: %w", err)
	}
	if err := temporalclient.EnsureSearchAttributes(ctx, c, cfg.TemporalNamespace); err != nil {
		return err
	}
	run, err := c.SignalWithStartWorkflow(ctx, workflows.BackfillWorkflowID, workflows.SignalBackfill, req,
		client.StartWorkflowOptions{
			ID: workflows.BackfillWorkflowID, TaskQueue: cfg.TaskQueue,
			StaticSummary:         workflows.BackfillSummary,
			TypedSearchAttributes: temporal.NewSearchAttributes(temporal.NewSearchAttributeKeyBool("ArchiveBackfill").ValueSet(true)),
		}, workflows.BackfillWorkflowName, workflows.BackfillState{})
	if err != nil {
		return fmt.Errorf("queue backfill: %w", err)
	}
	fmt.Fprintf(stdout, "queued backfill of %s on %s\nWeb UI: %s\n", req, run.GetID(), webUILink(cfg, run.GetID(), run.GetRunID()))
	return nil
}

func isNotFound(err error) bool {
	var nf *serviceerror.NotFound
	return errors.As(err, &nf)
}

// cmdControl sends pause, resume or throttle to one run, or to every running
// archive workflow when no --workflow-id is given.
func cmdControl(ctx context.Context, verb string, args []string, stdout, stderr io.Writer, logger *slog.Logger) error {
	fs := flag.NewFlagSet(verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	id := fs.String("workflow-id", "", "the run to signal (default: every running archive run)")
	reason := fs.String("reason", "", "pause: why (shown in the history)")
	// `throttle -1` is a bad value, not an unknown flag.
	var value []string
	if verb == "throttle" && len(args) > 0 {
		if _, err := strconv.ParseFloat(args[0], 64); err == nil {
			value, args = args[:1], args[1:]
		}
	}
	if err := fs.Parse(args); err != nil {
		return usageErr("%s: %v", verb, err)
	}
	rest := append(value, fs.Args()...)
	var payload any
	switch verb {
	case "pause":
		payload = workflows.PauseSignal{Reason: *reason}
	case "resume":
		payload = workflows.ResumeSignal{}
	case "throttle":
		if len(rest) != 1 {
			return usageErr("throttle: give the cap in batches per second, e.g. `throttle 2` (0 lifts it)")
		}
		bps, err := strconv.ParseFloat(rest[0], 64)
		if err != nil || bps < 0 || bps > 1000 {
			return usageErr("throttle: %q is not a number of batches per second from 0 to 1000", rest[0])
		}
		payload = workflows.ThrottleSignal{BatchesPerSecond: bps}
	}
	_, c, err := dial(ctx, logger)
	if err != nil {
		return err
	}
	defer c.Close()
	ids := []string{*id}
	if *id == "" {
		ids, err = runningArchiveRuns(ctx, c)
		if err != nil {
			return err
		}
		if len(ids) == 0 {
			return fmt.Errorf("%s: no archive run is running", verb)
		}
	}
	for _, wid := range ids {
		if err := c.SignalWorkflow(ctx, wid, "", verb, payload); err != nil {
			return fmt.Errorf("%s %s: %w", verb, wid, err)
		}
		fmt.Fprintf(stdout, "%s sent to %s\n", verb, wid)
	}
	return nil
}

func runningArchiveRuns(ctx context.Context, c client.Client) ([]string, error) {
	resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
		Query: fmt.Sprintf("WorkflowType = '%s' AND ExecutionStatus = 'Running'", workflows.ArchiveWorkflowName),
	})
	if err != nil {
		return nil, fmt.Errorf("list running archive runs: %w", err)
	}
	var ids []string
	for _, e := range resp.GetExecutions() {
		ids = append(ids, e.GetExecution().GetWorkflowId())
	}
	return ids, nil
}

// busyTables names the tables among tables that a running archive run
// (manual, scheduled or backfill) is archiving now. Two runs would not
// corrupt anything (SKIP LOCKED and the ledger see to that) but would
// compete for the same rows and confuse the record.
func busyTables(ctx context.Context, c client.Client, tables []string) ([]string, error) {
	var busy []string
	for _, t := range tables {
		resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Query: fmt.Sprintf("WorkflowType = '%s' AND ExecutionStatus = 'Running' AND ArchiveTables = '%s' AND ArchiveDryRun = false", workflows.ArchiveWorkflowName, t),
		})
		if err != nil {
			return nil, fmt.Errorf("check for runs already archiving %s: %w", t, err)
		}
		if ex := resp.GetExecutions(); len(ex) > 0 {
			busy = append(busy, fmt.Sprintf("%s is already being archived by run %s", t, ex[0].GetExecution().GetWorkflowId()))
			continue
		}
		d, err := c.DescribeWorkflowExecution(ctx, workflows.RestoreWorkflowID(t), "")
		if err == nil && d.GetWorkflowExecutionInfo().GetStatus() == enums.WORKFLOW_EXECUTION_STATUS_RUNNING {
			busy = append(busy, fmt.Sprintf("%s is being restored by %s", t, workflows.RestoreWorkflowID(t)))
		}
	}
	return busy, nil
}
