package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/mockupaws/archiver/internal/config"
	"github.com/mockupaws/archiver/internal/database"
	"github.com/mockupaws/archiver/internal/temporalclient"
	"github.com/mockupaws/archiver/workflows"
)

func cmdStatus(ctx context.Context, args []string, stdout io.Writer, logger *slog.Logger) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	limit := fs.Int("limit", 10, "how many recent jobs to show")
	asJSON := fs.Bool("json", false, "print the running runs' progress and the backfill queue as JSON")
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
	pool, err := database.Open(ctx, cfg.DatabaseURL, "archiver-starter")
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	defer pool.Close()
	rows, err := pool.Query(ctx, `
		SELECT job_type, status || CASE WHEN stopped_at_deadline THEN ' (stopped at deadline)' ELSE '' END || COALESCE(' (stopped at load: ' || stopped_at_load || ')', ''), started_at, completed_at, batches, records_archived,
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
	if *asJSON {
		return statusJSON(ctx, c, stdout)
	}
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
	if s, ok := backfillState(ctx, c); ok {
		fmt.Fprintf(stdout, "\nbackfill %s: %d queued, %d done, %d refused\n", workflows.BackfillWorkflowID, len(s.Queue), s.Served, len(s.Refused))
		if s.Current != nil {
			fmt.Fprintf(stdout, "  running: %s\n", s.Current)
		}
		for _, q := range s.Queue {
			fmt.Fprintf(stdout, "  queued:  %s\n", q)
		}
		for _, r := range s.Refused {
			fmt.Fprintf(stdout, "  refused: %s: %s\n", r.Request, r.Reason)
		}
	}
	return nil
}

func backfillState(ctx context.Context, c client.Client) (workflows.BackfillState, bool) {
	var s workflows.BackfillState
	v, err := c.QueryWorkflow(ctx, workflows.BackfillWorkflowID, "", workflows.BackfillQuery)
	if err != nil || v.Get(&s) != nil {
		return s, false
	}
	return s, true
}

func statusJSON(ctx context.Context, c client.Client, w io.Writer) error {
	ids, err := runningArchiveRuns(ctx, c)
	if err != nil {
		return err
	}
	out := struct {
		Running  map[string]workflows.ArchiveResult `json:"running"`
		Backfill *workflows.BackfillState           `json:"backfill,omitempty"`
	}{Running: map[string]workflows.ArchiveResult{}}
	for _, id := range ids {
		if v, err := c.QueryWorkflow(ctx, id, "", workflows.ProgressQuery); err == nil {
			var p workflows.ArchiveResult
			if v.Get(&p) == nil {
				out.Running[id] = p
			}
		}
	}
	if s, ok := backfillState(ctx, c); ok {
		out.Backfill = &s
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
