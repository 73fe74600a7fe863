package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/mockupaws/archiver/internal/config"
	"github.com/mockupaws/archiver/internal/temporalclient"
	"github.com/mockupaws/archiver/workflows"
)

func cmdStatus(ctx context.Context, args []string, stdout io.Writer, logger *slog.Logger) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	limit := fs.Int("limit", 10, "how many recent jobs to show")
	if err := fs.Parse(args); err != nil {
		return usageErr("status: %v", err)
	}
	if *limit < 1 || *limit > 1000 {
		return usageErr("status: --limit %d: must be between 1 and 1000", *limit)
	}
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	defer pool.Close()
	rows, err := pool.Query(ctx, `
		SELECT job_type, status, started_at, completed_at, batches, records_archived,
		       records_deleted, bytes_archived, COALESCE(error_message, ''), workflow_id
		FROM archive_jobs ORDER BY started_at DESC NULLS LAST LIMIT $1`, *limit)
	if err != nil {
		return fmt.Errorf("read archive_jobs (%s): %w", config.Redact(cfg.DatabaseURL), err)
	}
	defer rows.Close()
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TABLE\tSTATUS\tSTARTED\tSECONDS\tBATCHES\tARCHIVED\tDELETED\tBYTES\tWORKFLOW\tERROR")
	for rows.Next() {
		var table, status, errMsg, wf string
		var started, completed *time.Time
		var batches, archived, deleted, bytes int64
		if err := rows.Scan(&table, &status, &started, &completed, &batches, &archived, &deleted, &bytes, &errMsg, &wf); err != nil {
			return fmt.Errorf("read archive_jobs: %w", err)
		}
		secs := "-"
		if started != nil && completed != nil {
			secs = fmt.Sprintf("%.1f", completed.Sub(*started).Seconds())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\n", table, status, dayPtr(started), secs, batches, archived, deleted, humanBytes(bytes), wf, errMsg)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read archive_jobs: %w", err)
	}
	_ = tw.Flush()

	c, err := temporalclient.Dial(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer c.Close()
	list, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
		Namespace: cfg.TemporalNamespace,
		Query:     fmt.Sprintf("WorkflowType = '%s' AND ExecutionStatus = 'Running'", workflows.ArchiveWorkflowName),
	})
	if err != nil {
		return fmt.Errorf("list running archive workflows: %w", err)
	}
	fmt.Fprintf(stdout, "\nrunning archive workflows: %d\n", len(list.GetExecutions()))
	for _, e := range list.GetExecutions() {
		id, runID := e.GetExecution().GetWorkflowId(), e.GetExecution().GetRunId()
		line := id
		if v, err := c.QueryWorkflow(ctx, id, runID, workflows.ProgressQuery); err == nil {
			var p workflows.ArchiveResult
			if v.Get(&p) == nil {
				line += "  " + progressLine(p)
			}
		}
		fmt.Fprintf(stdout, "  %s\n  %s\n", line, webUILink(cfg, id, runID))
	}
	return nil
}
