package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/mockupaws/archiver/internal/config"
	"github.com/mockupaws/archiver/internal/policy"
	"github.com/mockupaws/archiver/internal/telemetry"
	"github.com/mockupaws/archiver/internal/temporalclient"
	"github.com/mockupaws/archiver/workflows"
)

// runFlags are the flags of `starter run`.
type runFlags struct {
	all, logs, metrics, reports bool
	tables                      tableList
	dryRun, wait, json, verbose bool
	batchActivities             bool
	asOf, stopBy                string
	batchSize, parallel         int
	pace                        float64
	maxLoad, criticalLoad       string
}

// tableList is a repeatable --table flag.
type tableList []string

func (l *tableList) String() string { return strings.Join(*l, ",") }

func (l *tableList) Set(v string) error {
	*l = append(*l, v)
	return nil
}

func parseRunFlags(args []string, stderr io.Writer) (runFlags, error) {
	var f runFlags
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&f.all, "all", false, "archive every table of the policy in force")
	fs.Var(&f.tables, "table", "archive this policy entry (repeatable)")
	fs.BoolVar(&f.logs, "logs", false, "the built-in logs entry (as --table logs)")
	fs.BoolVar(&f.metrics, "metrics", false, "the built-in metrics entry (as --table metrics)")
	fs.BoolVar(&f.reports, "reports", false, "the built-in reports entry (as --table reports)")
	fs.BoolVar(&f.dryRun, "dry-run", false, "report what would move; write nothing")
	fs.StringVar(&f.asOf, "as-of", "", "archive as of this instant (RFC3339; default: the run's start time)")
	fs.StringVar(&f.stopBy, "stop-by", "", "start no new batch after this time: HH:MM (local time, the next such moment) or an RFC3339 instant; tables not done record stopped_at_deadline")
	fs.IntVar(&f.batchSize, "batch-size", 0, "rows per batch to start from (default: the policy's; adapts to the lock-time budget)")
	fs.IntVar(&f.parallel, "parallel", 1, "batch loops per table (logs), shared by every worker on the task queue")
	fs.BoolVar(&f.batchActivities, "batch-activities", false, "run each batch as an activity (each on the Web UI's timeline with its heartbeats; pause and progress answered at once) instead of a local activity, at a round trip through Temporal per batch")
	fs.Float64Var(&f.pace, "pace", 0, "after each batch, rest this many times its lock time, leaving the server to the application (like pt-archiver's --sleep-coef; 1: at most half the time)")
	fs.StringVar(&f.maxLoad, "max-load", policy.DefaultMaxLoad, "rest batches and shrink them while the server's load is past this (like gh-ost's --max-load): active=N running statements of the application (or N% of their number before the run), xact_age=DURATION of its oldest transaction, replica_lag=DURATION; off: never")
	fs.StringVar(&f.criticalLoad, "critical-load", "", "stop the run when the server's load is past this (same form as --max-load); tables not done record stopped_at_load and the next run goes on")
	fs.BoolVar(&f.wait, "wait", false, "wait for the run, show progress and the summary")
	fs.BoolVar(&f.json, "json", false, "print the result as JSON")
	fs.BoolVar(&f.verbose, "verbose", false, "print per-table detail (dry-run partitions, job ids)")
	if err := fs.Parse(args); err != nil {
		return f, usageErr("run: %v", err)
	}
	if fs.NArg() > 0 {
		return f, usageErr("run: unexpected argument %q", fs.Arg(0))
	}
	return f, nil
}

// archiveInput turns the flags into the workflow's input for the policy in
// force, refusing what the workflow would refuse, before anything is sent.
func (f runFlags) archiveInput(now time.Time, pol []policy.Table) (workflows.ArchiveInput, error) {
	var tables []string
	if f.all {
		if f.logs || f.metrics || f.reports || len(f.tables) > 0 {
			return workflows.ArchiveInput{}, usageErr("run: --all cannot be combined with --table, --logs, --metrics or --reports")
		}
		tables = policy.BuiltNamesOf(pol)
	} else {
		tables = append(tables, f.tables...)
		for _, sel := range []struct {
			on   bool
			name string
		}{{f.logs, "logs"}, {f.metrics, "metrics"}, {f.reports, "reports"}} {
			if sel.on {
				tables = append(tables, sel.name)
			}
		}
		if len(tables) == 0 {
			return workflows.ArchiveInput{}, usageErr("run: choose the tables: --all, or --table NAME (repeatable; known: %s)", strings.Join(policy.NamesOf(pol), ", "))
		}
	}
	tables, err := policy.SelectFrom(pol, tables)
	if err != nil {
		return workflows.ArchiveInput{}, usageErr("run: %v", err)
	}
	in := workflows.ArchiveInput{Tables: tables, DryRun: f.dryRun, BatchSize: f.batchSize, Parallel: f.parallel, Pace: f.pace, BatchActivities: f.batchActivities}
	if f.parallel < 1 || f.parallel > 16 {
		return in, usageErr("run: --parallel %d: must be between 1 and 16", f.parallel)
	}
	if f.pace < 0 || f.pace > workflows.MaxPace {
		return in, usageErr("run: --pace %g: must be between 0 and %d", f.pace, workflows.MaxPace)
	}
	for _, l := range []struct{ flag, spec string }{{"max-load", f.maxLoad}, {"critical-load", f.criticalLoad}} {
		if _, err := policy.ParseLoad(l.spec); err != nil {
			return in, usageErr("run: --%s: %v", l.flag, err)
		}
	}
	if !f.dryRun {
		in.MaxLoad, in.CriticalLoad = f.maxLoad, f.criticalLoad
	}
	if f.batchSize != 0 {
		if err := policy.ValidateBatchSize(f.batchSize); err != nil {
			return in, usageErr("run: --batch-size: %v", err)
		}
	}
	if f.asOf != "" {
		in.AsOf, err = ParseAsOf(f.asOf, now)
		if err != nil {
			return in, usageErr("run: %v", err)
		}
	}
	if f.stopBy != "" {
		if f.dryRun {
			return in, usageErr("run: --stop-by has nothing to stop in a dry run")
		}
		in.Deadline, err = ParseStopBy(f.stopBy, now, time.Local)
		if err != nil {
			return in, usageErr("run: %v", err)
		}
	}
	return in, nil
}

// ParseStopBy reads a run's deadline: a time of day HH:MM in loc (the next
// such moment after now) or an RFC3339 instant, which must be in the
// future: a deadline already past would start the run only to stop it.
func ParseStopBy(s string, now time.Time, loc *time.Location) (time.Time, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "T") {
		c, err := workflows.ParseClock(s)
		if err != nil {
			return time.Time{}, fmt.Errorf("--stop-by %q is neither a time of day HH:MM nor an RFC3339 time such as 2026-01-31T06:00:00Z", s)
		}
		return c.Next(now, loc).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--stop-by %q is neither a time of day HH:MM nor an RFC3339 time such as 2026-01-31T06:00:00Z", s)
	}
	if !t.After(now) {
		return time.Time{}, fmt.Errorf("--stop-by %s is in the past (now %s): the run would stop before its first batch", t.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return t.UTC(), nil
}

// ParseAsOf reads an RFC3339 instant and refuses one in the future: a run as
// of tomorrow would archive rows that are not yet old enough.
func ParseAsOf(s string, now time.Time) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(s))
	if err != nil {
		return time.Time{}, fmt.Errorf("--as-of %q is not an RFC3339 time such as 2025-01-31T03:00:00Z", s)
	}
	if t.After(now.Add(time.Minute)) {
		return time.Time{}, fmt.Errorf("--as-of %s is in the future (now %s): it would archive rows before they are due", t.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if t.Year() < 1970 {
		return time.Time{}, fmt.Errorf("--as-of %s is before 1970", t.UTC().Format(time.RFC3339))
	}
	return t.UTC(), nil
}

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer, logger *slog.Logger) error {
	f, err := parseRunFlags(args, stderr)
	if err != nil {
		return err
	}
	pol, err := loadPolicy()
	if err != nil {
		return err
	}
	in, err := f.archiveInput(time.Now(), pol)
	if err != nil {
		return err
	}
	pin, memo, err := policyInput(in.Tables)
	if err != nil {
		return err
	}
	in.Policy, in.RetentionMode = pin.Policy, pin.RetentionMode
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	if err := refuseShared(ctx, cfg, in.Policy, in.Tables); err != nil {
		return err
	}
	tp, flush, err := telemetry.Tracing(ctx, "archiver-starter", cfg.OTLPEndpoint)
	if err != nil {
		return err
	}
	defer func() { _ = flush(context.Background()) }()
	ctx, span := tp.Tracer("github.com/mockupaws/archiver/starter").Start(ctx, "starter run")
	defer span.End()
	c, err := temporalclient.Dial(ctx, cfg, logger, temporalclient.WithTracing(tp))
	if err != nil {
		return err
	}
	defer c.Close()
	if err := temporalclient.EnsureSearchAttributes(ctx, c, cfg.TemporalNamespace); err != nil {
		return err
	}

	if !in.DryRun {
		busy, err := busyTables(ctx, c, in.Tables)
		if err != nil {
			return err
		}
		if len(busy) > 0 {
			return exitError{code: 1, err: fmt.Errorf("refused: %s; wait for it (starter status) or pause it, then run again", strings.Join(busy, "; "))}
		}
	}
	run, err := c.ExecuteWorkflow(ctx, archiveStartOptions(cfg, in, memo, time.Now()), workflows.ArchiveWorkflowName, in)
	if err != nil {
		return fmt.Errorf("start archive run: %w", err)
	}
	link := webUILink(cfg, run.GetID(), run.GetRunID())
	if !f.json {
		fmt.Fprintf(stdout, "started %s (tables: %s, dry run: %v)\nworkflow id: %s\nWeb UI: %s\n",
			workflows.ArchiveWorkflowName, strings.Join(in.Tables, ","), in.DryRun, run.GetID(), link)
	}
	if !f.wait {
		if f.json {
			return json.NewEncoder(stdout).Encode(map[string]string{"workflow_id": run.GetID(), "run_id": run.GetRunID(), "web_ui": link})
		}
		return nil
	}

	started := time.Now()
	res, runErr := waitForRun(ctx, c, c.GetWorkflow(ctx, run.GetID(), ""), stderr, f.json)
	elapsed := time.Since(started)
	if f.json {
		out := struct {
			WorkflowID string                  `json:"workflow_id"`
			RunID      string                  `json:"run_id"`
			WebUI      string                  `json:"web_ui"`
			Result     workflows.ArchiveResult `json:"result"`
			Error      string                  `json:"error,omitempty"`
		}{run.GetID(), run.GetRunID(), link, res, errString(runErr)}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		printSummary(stdout, res, f.verbose)
		fmt.Fprintf(stdout, "%s\nWeb UI: %s\n", rateLine(res, elapsed), link)
	}
	if runErr != nil {
		return exitError{code: 1, err: fmt.Errorf("archive run %s failed: %w", run.GetID(), runErr)}
	}
	return nil
}

// archiveStartOptions start a manual run: a new id, the search attributes
// operators filter on, the policy memo, and the summary and details the Web
// UI shows at the top of the run's page (tables, as-of, policy).
func archiveStartOptions(cfg config.Config, in workflows.ArchiveInput, memo map[string]any, now time.Time) client.StartWorkflowOptions {
	sa := []temporal.SearchAttributeUpdate{
		temporal.NewSearchAttributeKeyKeywordList("ArchiveTables").ValueSet(in.Tables),
		temporal.NewSearchAttributeKeyBool("ArchiveDryRun").ValueSet(in.DryRun),
		temporal.NewSearchAttributeKeyBool("ArchiveBackfill").ValueSet(false),
	}
	if !in.AsOf.IsZero() {
		sa = append(sa, temporal.NewSearchAttributeKeyTime("ArchiveAsOf").ValueSet(in.AsOf))
	}
	return client.StartWorkflowOptions{
		ID:                    "archive-manual-" + now.UTC().Format("20060102T150405Z") + "-" + randomSuffix(),
		TaskQueue:             cfg.TaskQueue,
		WorkflowTaskTimeout:   workflows.TaskTimeout,
		TypedSearchAttributes: temporal.NewSearchAttributes(sa...),
		Memo:                  memo,
		StaticSummary:         workflows.ArchiveSummary(in),
		StaticDetails:         workflows.ArchiveDetails(in),
	}
}

// waitForRun waits for the result, printing progress (from the workflow's
// progress query) to stderr as it changes.
func waitForRun(ctx context.Context, c client.Client, run client.WorkflowRun, stderr io.Writer, quiet bool) (workflows.ArchiveResult, error) {
	done := make(chan struct{})
	var res workflows.ArchiveResult
	var runErr error
	go func() {
		defer close(done)
		runErr = run.Get(ctx, &res)
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	view := newProgressView(stderr)
	for {
		select {
		case <-done:
			view.finish()
			var appErr *temporal.ApplicationError
			if errors.As(runErr, &appErr) && appErr.HasDetails() {
				_ = appErr.Details(&res)
			}
			return res, runErr
		case <-tick.C:
			if quiet {
				continue
			}
			// The run id is left empty: after continue-as-new the query
			// goes to the chain's current run.
			v, err := c.QueryWorkflow(ctx, run.GetID(), "", workflows.ProgressQuery)
			if err != nil {
				continue // not yet started, or finished meanwhile
			}
			var p workflows.ArchiveResult
			if v.Get(&p) != nil {
				continue
			}
			view.show(p)
		}
	}
}

func printSummary(w io.Writer, r workflows.ArchiveResult, verbose bool) {
	mode := "archive"
	if r.DryRun {
		mode = "dry run (nothing written)"
	}
	fmt.Fprintf(w, "\n%s as of %s\n", mode, r.AsOf.UTC().Format(time.RFC3339))
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	if r.DryRun {
		fmt.Fprintln(tw, "TABLE\tSTATUS\tCUT-OFF\tELIGIBLE ROWS\tBYTES\tOLDEST\tNEWEST\tNEW PARTITIONS\tPAST RETENTION\tERROR")
		for _, t := range r.Tables {
			var p = t.Preview
			if p == nil {
				fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\t-\t-\t-\t-\t%s\n", t.Table, t.Status, day(t.Cutoff), t.Error)
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%d\t%d\t%s\n", t.Table, t.Status, day(t.Cutoff), p.Rows, humanBytes(p.Bytes),
				dayPtr(p.Oldest), dayPtr(p.Newest), len(p.PartitionsToCreate), len(p.PartitionsToDrop), t.Error)
		}
		_ = tw.Flush()
		if verbose {
			for _, t := range r.Tables {
				if t.Preview != nil && len(t.Preview.PartitionsToCreate) > 0 {
					fmt.Fprintf(w, "%s: would create %s\n", t.Table, strings.Join(t.Preview.PartitionsToCreate, ", "))
				}
				if t.Preview != nil && len(t.Preview.PartitionsToExchange) > 0 {
					fmt.Fprintf(w, "%s: would move whole %s\n", t.Table, strings.Join(t.Preview.PartitionsToExchange, ", "))
				}
				if t.Preview != nil && len(t.Preview.PartitionsToDrop) > 0 {
					fmt.Fprintf(w, "%s: retention would remove %s\n", t.Table, strings.Join(t.Preview.PartitionsToDrop, ", "))
				}
			}
		}
		return
	}
	fmt.Fprintln(tw, "TABLE\tSTATUS\tCUT-OFF\tBATCHES\tARCHIVED\tDELETED\tBYTES\tSECONDS\tRATE\tNEW PARTITIONS\tRETENTION\tERROR")
	defer func() {
		for _, t := range r.Tables {
			if t.StoppedAtDeadline {
				fmt.Fprintf(w, "%s: stopped at the run's deadline %s: what had begun finished; the rest waits for the next run\n", t.Table, r.Deadline.Local().Format(time.RFC3339))
			}
			if t.StoppedAtLoad != "" {
				fmt.Fprintf(w, "%s: stopped at the critical load (%s): what had begun finished; the rest waits for the next run\n", t.Table, t.StoppedAtLoad)
			}
			if t.LoadRests > 0 {
				fmt.Fprintf(w, "%s: %d batches rested %.1f s for the server's load (max load %s, last %s)\n", t.Table, t.LoadRests, t.LoadRestSeconds, t.MaxLoad, t.LastLoad)
			}
			if t.Vacuum != nil {
				fmt.Fprintf(w, "%s: vacuum %s\n", t.Table, t.Vacuum.Note())
			}
			if t.PartitionsExchanged > 0 {
				fmt.Fprintf(w, "%s: %d live partitions moved whole (longest lock %d ms)\n", t.Table, t.PartitionsExchanged, t.LongestLockMillis)
			}
		}
	}()
	for _, t := range r.Tables {
		archived := fmt.Sprint(t.RowsArchived)
		if t.RowsMerged > 0 {
			archived += fmt.Sprintf(" (+%d merged)", t.RowsMerged)
		}
		retention := "-"
		if t.Retention != nil {
			retention = fmt.Sprintf("%d %s", len(t.Retention.Partitions), t.Retention.Mode)
			if t.Retention.ExportedRows > 0 {
				retention += fmt.Sprintf(" (%d rows exported, %s)", t.Retention.ExportedRows, humanBytes(t.Retention.ExportedBytes))
			}
		}
		status := t.Status
		if t.StoppedAtDeadline {
			status += " (stopped at deadline)"
		}
		if t.StoppedAtLoad != "" {
			status += " (stopped at load)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d\t%s\t%.1f\t%s\t%d\t%s\t%s\n", t.Table, status, day(t.Cutoff), t.Batches,
			archived, t.RowsDeleted, humanBytes(t.Bytes), t.Seconds, tableRate(t), t.PartitionsCreated, retention, t.Error)
	}
	_ = tw.Flush()
	if verbose {
		for _, t := range r.Tables {
			if t.JobID != "" {
				fmt.Fprintf(w, "%s: archive_jobs.id = %s\n", t.Table, t.JobID)
			}
		}
	}
}

// tableRate is a table's throughput in its own unit: rows/s for logs,
// samples/s for metrics, MB/s of original files for reports.
func tableRate(t workflows.TableResult) string {
	if t.Seconds <= 0 || t.RowsDeleted == 0 {
		return "-"
	}
	switch t.Table {
	case "reports":
		return fmt.Sprintf("%.1f MB/s", float64(t.Bytes)/1e6/t.Seconds)
	case "metrics":
		return fmt.Sprintf("%.0f samples/s", float64(t.RowsDeleted)/t.Seconds)
	default:
		return fmt.Sprintf("%.0f rows/s", float64(t.RowsDeleted)/t.Seconds)
	}
}

// rateLine is the run's wall time as the starter saw it and the rows it
// moved per second.
func rateLine(r workflows.ArchiveResult, elapsed time.Duration) string {
	var rows int64
	for _, t := range r.Tables {
		rows += t.RowsDeleted
	}
	line := fmt.Sprintf("took %.1f s", elapsed.Seconds())
	if rows > 0 && !r.DryRun {
		line += fmt.Sprintf(", %d live rows moved, %.0f rows/s overall", rows, float64(rows)/elapsed.Seconds())
	}
	return line
}

func webUILink(cfg config.Config, workflowID, runID string) string {
	return fmt.Sprintf("%s/namespaces/%s/workflows/%s/%s/history", strings.TrimRight(cfg.TemporalUIURL, "/"), cfg.TemporalNamespace, workflowID, runID)
}

func randomSuffix() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func day(t time.Time) string { return t.UTC().Format("2006-01-02 15:04") }

func dayPtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return day(*t)
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
