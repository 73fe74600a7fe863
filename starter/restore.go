package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/mockupaws/archiver/internal/config"
	"github.com/mockupaws/archiver/internal/policy"
	"github.com/mockupaws/archiver/workflows"
)

// cmdRestore starts a RestoreWorkflow: restore --table NAME --after T1
// --before T2 [--dry-run] [--hold D] [--batch-size N] [--no-wait].
func cmdRestore(ctx context.Context, args []string, stdout, stderr io.Writer, logger *slog.Logger) error {
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	table := fs.String("table", "", "the policy entry to restore (logs, reports, or one of ARCHIVE_POLICY_FILE)")
	after := fs.String("after", "", "restore rows at or after this (RFC3339 or date)")
	before := fs.String("before", "", "and before this (RFC3339 or date)")
	dryRun := fs.Bool("dry-run", false, "say what would come back, and from where, without writing")
	hold := fs.Duration("hold", workflows.DefaultHold, "how long archive runs leave the restored window in the live table")
	batch := fs.Int("batch-size", 0, "rows a batch moves back (default: the entry's batch size)")
	noWait := fs.Bool("no-wait", false, "start the restore and return")
	if err := fs.Parse(args); err != nil {
		return usageErr("restore: %v", err)
	}
	if fs.NArg() > 0 {
		return usageErr("restore: unexpected argument %q", fs.Arg(0))
	}
	if *table == "" || *after == "" || *before == "" {
		return usageErr("restore: --table, --after and --before are required")
	}
	req := workflows.RestoreRequest{Table: *table, DryRun: *dryRun, Hold: *hold, BatchSize: *batch}
	var err error
	if req.After, err = ParseTime("--after", *after); err != nil {
		return usageErr("restore: %v", err)
	}
	if req.Before, err = ParseTime("--before", *before); err != nil {
		return usageErr("restore: %v", err)
	}
	if !req.After.Before(req.Before) {
		return usageErr("restore: --after %s is not before --before %s", *after, *before)
	}
	if *hold <= 0 {
		return usageErr("restore: --hold %s: want a positive duration such as 720h", *hold)
	}
	if *batch != 0 {
		if err := policy.ValidateBatchSize(*batch); err != nil {
			return usageErr("restore: --batch-size: %v", err)
		}
	}
	pol, err := loadPolicy()
	if err != nil {
		return usageErr("restore: %v", err)
	}
	t, err := policy.Find(pol, *table)
	if err != nil {
		return usageErr("restore: %v", err)
	}
	if t.ModeOf() == policy.ModeDownsample {
		return exitError{code: 1, err: fmt.Errorf("restore refused: %s is downsampled: its samples were aggregated and deleted, and an aggregate cannot be turned back into its samples (the aggregates stay in %s)", t.Name, t.Archive)}
	}
	req.Policy = &t
	if cfg, err := config.Load(); err != nil {
		return err
	} else if err := refuseShared(ctx, cfg, pol, []string{t.Name}); err != nil {
		return err
	}
	cfg, c, err := dial(ctx, logger)
	if err != nil {
		return err
	}
	defer c.Close()
	if !req.DryRun {
		busy, err := busyTables(ctx, c, []string{t.Name})
		if err != nil {
			return err
		}
		if len(busy) > 0 {
			return exitError{code: 1, err: fmt.Errorf("restore refused: %s; a restore and an archive run never work on one table at once", busy[0])}
		}
	}
	id := workflows.RestoreWorkflowID(t.Name)
	if req.DryRun {
		id += "-dry-run-" + randomSuffix()
	}
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                       id,
		TaskQueue:                cfg.TaskQueue,
		WorkflowIDConflictPolicy: enums.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		WorkflowIDReusePolicy:    enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		StaticSummary:            workflows.RestoreSummary(req),
	}, workflows.RestoreWorkflowName, req)
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &started) {
		return exitError{code: 1, err: fmt.Errorf("restore refused: a restore of %s is running already (workflow %s)", t.Name, id)}
	}
	if err != nil {
		return fmt.Errorf("start restore: %w", err)
	}
	fmt.Fprintf(stdout, "started %s of %s, %s .. %s (dry run: %v)\nworkflow id: %s\nWeb UI: %s\n", workflows.RestoreWorkflowName, t.Name,
		req.After.Format(time.RFC3339), req.Before.Format(time.RFC3339), req.DryRun, run.GetID(), webUILink(cfg, run.GetID(), run.GetRunID()))
	if *noWait {
		return nil
	}
	var res workflows.RestoreResult
	runErr := run.Get(ctx, &res)
	printRestore(stdout, res)
	if runErr != nil {
		var appErr *temporal.ApplicationError
		if errors.As(runErr, &appErr) {
			runErr = errors.New(appErr.Error())
		}
		return exitError{code: 1, err: fmt.Errorf("restore %s failed: %w", run.GetID(), runErr)}
	}
	return nil
}

func printRestore(w io.Writer, r workflows.RestoreResult) {
	p := r.Plan
	verb := "restored"
	if r.DryRun {
		verb = "would restore"
	}
	fmt.Fprintf(w, "%s: %s\n", r.Table, verb)
	fmt.Fprintf(w, "  from the archive table:   %d rows\n", p.ArchiveRows)
	if p.Files > 0 {
		fmt.Fprintf(w, "  with their files from S3: %d files\n", p.Files)
	}
	for _, e := range p.Exports {
		fmt.Fprintf(w, "  from export %d (%s, whole partition %s .. %s): %d rows, %s\n", e.ID, e.Partition,
			e.Lower.Format("2006-01-02"), e.Upper.Format("2006-01-02"), e.Rows, e.Location)
	}
	if p.Grant != "" {
		fmt.Fprintf(w, "  the worker may not insert into the live table yet; before the restore run: %s\n", p.Grant)
	}
	if r.DryRun {
		return
	}
	fmt.Fprintf(w, "done: %d rows from the archive, %d from exports, %d files, %d batches; job %s\n",
		r.RowsFromArchive, r.RowsFromExports, r.Files, r.Batches, r.JobID)
	fmt.Fprintf(w, "archive runs leave %s .. %s in the live table until %s\n",
		p.HoldAfter.Format(time.RFC3339), p.HoldBefore.Format(time.RFC3339), r.HeldUntil.Format(time.RFC3339))
}
