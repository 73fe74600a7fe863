package activities

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/mockupaws/archiver/internal/policy"
)

// StartJobInput opens the archive_jobs row of one table in one run.
type StartJobInput struct {
	JobID      string
	Table      string
	WorkflowID string
	RunID      string
	AsOf       time.Time
	Cutoff     time.Time
	// Forced: a backfill window the operator forced into rows younger than
	// the policy's cut-off.
	Forced bool `json:",omitempty"`
	// Restore marks a restore's job: its job_type is "restore:<table>".
	Restore bool `json:",omitempty"`
	// Entry is the table's policy entry in force (nil: the built-in table
	// of that name).
	Entry *policy.Table `json:",omitempty"`
}

// StartJobResult says whether the row was new (false on a retried attempt).
type StartJobResult struct {
	JobID   string
	Created bool
}

// StartJob inserts the job row as running. The id comes from the workflow,
// so a retry finds the row it already wrote and changes nothing.
func (a *Activities) StartJob(ctx context.Context, in StartJobInput) (StartJobResult, error) {
	if _, err := entryFor(in.Table, in.Entry); err != nil {
		return StartJobResult{}, err
	}
	jobType := in.Table
	if in.Restore {
		jobType = "restore:" + in.Table
	}
	tag, err := a.DB.Exec(ctx, `
		INSERT INTO archive_jobs (id, job_type, status, workflow_id, run_id, as_of, cutoff, started_at, forced)
		VALUES ($1, $2, 'running', $3, $4, $5, $6, now(), $7)
		ON CONFLICT (id) DO NOTHING`,
		in.JobID, jobType, in.WorkflowID, in.RunID, in.AsOf, in.Cutoff, in.Forced)
	if err != nil {
		return StartJobResult{}, fmt.Errorf("start job %s for %s: %w", in.JobID, in.Table, err)
	}
	return StartJobResult{JobID: in.JobID, Created: tag.RowsAffected() == 1}, nil
}

// FinishJobInput closes a job row. Counts are not passed: they are read from
// the ledger, which is the record of what moved.
type FinishJobInput struct {
	JobID  string
	Failed bool
	Error  string
	// StoppedAtDeadline: the run's deadline came before the table was done
	// (not a failure); Vacuum is the VACUUM step's one-line outcome.
	StoppedAtDeadline bool   `json:",omitempty"`
	Vacuum            string `json:",omitempty"`
	// StoppedAtLoad is the signal past --critical-load that stopped the run
	// before the table was done (not a failure either).
	StoppedAtLoad string `json:",omitempty"`
}

// JobTotals are a job's figures as the ledger records them.
type JobTotals struct {
	JobID        string
	Table        string `json:",omitempty"`
	Status       string
	Batches      int64
	RowsArchived int64
	RowsMerged   int64
	RowsDeleted  int64
	Bytes        int64
}

// FinishJob sets the job completed or failed with the ledger's totals.
// Running it twice writes the same values.
func (a *Activities) FinishJob(ctx context.Context, in FinishJobInput) (JobTotals, error) {
	status := "completed"
	var errMsg, vacuum *string
	if in.Vacuum != "" {
		vacuum = &in.Vacuum
	}
	if in.Failed {
		status = "failed"
		errMsg = &in.Error
	}
	out := JobTotals{JobID: in.JobID}
	var completed time.Time
	err := a.DB.QueryRow(ctx, `
		WITH t AS (
			SELECT count(*) FILTER (WHERE state <> 'returned') AS batches,
			       COALESCE(sum(rows_moved), 0)::bigint AS archived,
			       COALESCE(sum(rows_merged), 0)::bigint AS merged,
			       COALESCE(sum(rows_deleted), 0)::bigint AS deleted,
			       COALESCE(sum(bytes), 0)::bigint AS bytes
			FROM archive_batches WHERE job_id = $1
		)
		UPDATE archive_jobs j
		SET status = $2, error_message = $3,
		    completed_at = COALESCE(j.completed_at, now()),
		    batches = t.batches, records_processed = t.deleted,
		    records_archived = t.archived + t.merged, records_deleted = t.deleted,
		    bytes_archived = t.bytes,
		    stopped_at_deadline = $4, vacuum = $5, stopped_at_load = $6
		FROM t WHERE j.id = $1
		RETURNING j.job_type, j.status, j.completed_at, j.batches, t.archived, t.merged, j.records_deleted, j.bytes_archived`,
		in.JobID, status, errMsg, in.StoppedAtDeadline, vacuum, nullIfEmpty(in.StoppedAtLoad)).Scan(&out.Table, &out.Status, &completed, &out.Batches, &out.RowsArchived, &out.RowsMerged, &out.RowsDeleted, &out.Bytes)
	if err != nil {
		return out, fmt.Errorf("finish job %s: %w", in.JobID, err)
	}
	// A restore is not a night's archive run: the job metrics (and the
	// "no success for a day" alert on them) leave it out.
	// A table stopped at its deadline is no failure, but its backlog is
	// not done either: the last success moves, the remaining rows stay.
	switch {
	case strings.HasPrefix(out.Table, "restore:"):
	case (in.StoppedAtDeadline || in.StoppedAtLoad != "") && !in.Failed:
		a.Metrics.SetLastSuccess(out.Table, completed)
	default:
		a.Metrics.JobFinished(ctx, out.Table, in.Failed, completed)
	}
	return out, nil
}

// nullIfEmpty is s, or NULL for "".
func nullIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
