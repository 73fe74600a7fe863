package workflows

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/policy"
)

var testAsOf = time.Date(2026, 3, 15, 3, 0, 0, 0, time.UTC)

func newEnv(t *testing.T) *testsuite.TestWorkflowEnvironment {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterActivity(&activities.Activities{})
	return env
}

// mockLogsRun answers StartJob, EnsurePartitions and FinishJob, and moves
// batches of limit rows until total rows have moved.
// cursors records the cursor each MoveBatch got.
var cursors []*activities.Key

func mockLogsRun(env *testsuite.TestWorkflowEnvironment, total int64, batchIDs *[]string) {
	cursors = nil
	env.OnActivity(a.StartJob, mock.Anything, mock.Anything).Return(activities.StartJobResult{Created: true}, nil)
	oldest := testAsOf.AddDate(-3, 0, 0)
	env.OnActivity(a.ListExchangeable, mock.Anything, mock.Anything).Return(activities.ListExchangeableResult{}, nil).Maybe()
	env.OnActivity(a.EnsurePartitions, mock.Anything, mock.Anything).Return(activities.EnsurePartitionsResult{Created: []string{"p1", "p2"}, Oldest: &oldest}, nil)
	left := total
	env.OnActivity(a.MoveBatch, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.MoveBatchInput) (activities.MoveBatchResult, error) {
			*batchIDs = append(*batchIDs, in.BatchID)
			cursors = append(cursors, in.Cursor)
			n := min(left, int64(in.Limit))
			left -= n
			return activities.MoveBatchResult{BatchID: in.BatchID, RowsMoved: n, RowsDeleted: n, Bytes: n * 100, More: n == int64(in.Limit),
				Last: &activities.Key{TS: testAsOf, ID: in.BatchID}}, nil
		})
	env.OnActivity(a.ApplyRetention, mock.Anything, mock.Anything).Return(activities.RetentionResult{Mode: "drop", Partitions: []string{"old"}}, nil)
}

func TestArchiveWorkflow(t *testing.T) {
	t.Run("moves batches until a short one and reports the ledger's totals", func(t *testing.T) {
		env := newEnv(t)
		var ids []string
		mockLogsRun(env, 2500, &ids)
		var finished activities.FinishJobInput
		env.OnActivity(a.FinishJob, mock.Anything, mock.Anything).Return(
			func(_ context.Context, in activities.FinishJobInput) (activities.JobTotals, error) {
				finished = in
				return activities.JobTotals{JobID: in.JobID, Status: "completed", Batches: 3, RowsArchived: 2500, RowsDeleted: 2500, Bytes: 250000}, nil
			})
		batchesBeforeVacuum := -1
		env.OnActivity(a.VacuumTable, mock.Anything, mock.Anything).Return(
			func(_ context.Context, in activities.VacuumInput) (activities.VacuumResult, error) {
				batchesBeforeVacuum = len(ids)
				return activities.VacuumResult{Table: "scenario_logs", Ran: true}, nil
			})
		env.ExecuteWorkflow(ArchiveWorkflow, ArchiveInput{Tables: []string{"logs"}, AsOf: testAsOf, BatchSize: 1000})
		if !env.IsWorkflowCompleted() || env.GetWorkflowError() != nil {
			t.Fatalf("workflow did not complete: %v", env.GetWorkflowError())
		}
		var res ArchiveResult
		if err := env.GetWorkflowResult(&res); err != nil {
			t.Fatal(err)
		}
		if len(ids) != 4 {
			t.Fatalf("%d batches, want 4 (1000, 1000, 500, and a sweep finding nothing)", len(ids))
		}
		if ids[0] == ids[1] || ids[1] == ids[2] || ids[0] == ids[2] || ids[2] == ids[3] {
			t.Fatalf("batch ids repeat: %v", ids)
		}
		if cursors[0] != nil || cursors[1] == nil || cursors[1].ID != ids[0] || cursors[2].ID != ids[1] || cursors[3] != nil {
			t.Fatalf("cursors %v: want none, then each batch after the previous one, then a sweep without", cursors)
		}
		if batchesBeforeVacuum != 3 {
			t.Fatalf("VACUUM ran after %d batches, want 3: the sweep comes after it, over an index cleared of the deleted rows", batchesBeforeVacuum)
		}
		got := res.Tables[0]
		if got.Status != StatusCompleted || got.RowsArchived != 2500 || got.Batches != 3 || got.PartitionsCreated != 2 {
			t.Fatalf("result %+v", got)
		}
		if want := testAsOf.Add(-365 * 24 * time.Hour); !got.Cutoff.Equal(want) {
			t.Fatalf("cut-off %v, want %v", got.Cutoff, want)
		}
		if finished.Failed || finished.JobID != got.JobID {
			t.Fatalf("FinishJob got %+v, want the run's job closed as completed", finished)
		}
		if got.Retention == nil || len(got.Retention.Partitions) != 1 {
			t.Fatalf("retention result %+v, want the partition the step removed", got.Retention)
		}
	})

	t.Run("dry run only previews", func(t *testing.T) {
		env := newEnv(t)
		env.OnActivity(a.Preview, mock.Anything, mock.Anything).Return(
			func(_ context.Context, in activities.PreviewInput) (activities.PreviewResult, error) {
				return activities.PreviewResult{Table: in.Table, Rows: 42, PartitionsToCreate: []string{"x"}}, nil
			})
		env.ExecuteWorkflow(ArchiveWorkflow, ArchiveInput{Tables: []string{"logs"}, AsOf: testAsOf, DryRun: true})
		if err := env.GetWorkflowError(); err != nil {
			t.Fatal(err)
		}
		var res ArchiveResult
		_ = env.GetWorkflowResult(&res)
		if res.Tables[0].Preview == nil || res.Tables[0].Preview.Rows != 42 {
			t.Fatalf("preview missing from %+v", res.Tables[0])
		}
		// Any write activity would have panicked: none is mocked.
	})

	t.Run("a failing table closes its job as failed and fails the run with the summary", func(t *testing.T) {
		env := newEnv(t)
		env.OnActivity(a.StartJob, mock.Anything, mock.Anything).Return(activities.StartJobResult{Created: true}, nil)
		env.OnActivity(a.EnsurePartitions, mock.Anything, mock.Anything).Return(activities.EnsurePartitionsResult{},
			temporal.NewNonRetryableApplicationError("partition overlaps a hand-made one", "InvalidInput", nil))
		var finished activities.FinishJobInput
		env.OnActivity(a.FinishJob, mock.Anything, mock.Anything).Return(
			func(_ context.Context, in activities.FinishJobInput) (activities.JobTotals, error) {
				finished = in
				return activities.JobTotals{JobID: in.JobID, Status: "failed"}, nil
			})
		env.ExecuteWorkflow(ArchiveWorkflow, ArchiveInput{Tables: []string{"logs"}, AsOf: testAsOf})
		err := env.GetWorkflowError()
		var appErr *temporal.ApplicationError
		if !errors.As(err, &appErr) || appErr.Type() != ErrRunFailed {
			t.Fatalf("error %v, want %s", err, ErrRunFailed)
		}
		var res ArchiveResult
		if derr := appErr.Details(&res); derr != nil {
			t.Fatalf("details: %v", derr)
		}
		if res.Tables[0].Status != StatusFailed || res.Tables[0].Error == "" {
			t.Fatalf("summary %+v, want the table failed with its error", res.Tables[0])
		}
		if !finished.Failed || finished.Error == "" {
			t.Fatalf("FinishJob got %+v, want failed with the error", finished)
		}
	})

	t.Run("unknown tables, bad batch sizes and bad policies are refused", func(t *testing.T) {
		short := append([]policy.Table(nil), policy.Tables...)
		short[0].Retention = short[0].ArchiveAfter
		for _, in := range []ArchiveInput{
			{Tables: []string{"nope"}},
			{Tables: []string{"logs"}, Policy: short},
			{Tables: []string{"logs"}, RetentionMode: "shred"},
			{Tables: nil},
			{Tables: []string{"logs"}, BatchSize: -1},
		} {
			env := newEnv(t)
			env.ExecuteWorkflow(ArchiveWorkflow, in)
			var appErr *temporal.ApplicationError
			if err := env.GetWorkflowError(); !errors.As(err, &appErr) || appErr.Type() != activities.ErrInvalidInput {
				t.Fatalf("input %+v: error %v, want %s", in, err, activities.ErrInvalidInput)
			}
		}
	})

	t.Run("as-of defaults to the schedule's nominal time, else the start time", func(t *testing.T) {
		env := newEnv(t)
		var ids []string
		mockLogsRun(env, 0, &ids)
		env.OnActivity(a.FinishJob, mock.Anything, mock.Anything).Return(activities.JobTotals{}, nil)
		nominal := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
		env.SetTypedSearchAttributesOnStart(temporal.NewSearchAttributes(ScheduledStartTime.ValueSet(nominal)))
		env.ExecuteWorkflow(ArchiveWorkflow, ArchiveInput{Tables: []string{"logs"}})
		var res ArchiveResult
		if err := env.GetWorkflowResult(&res); err != nil {
			t.Fatal(err)
		}
		if !res.AsOf.Equal(nominal) {
			t.Fatalf("as-of %v, want the scheduled time %v", res.AsOf, nominal)
		}

		env = newEnv(t)
		mockLogsRun(env, 0, &ids)
		env.OnActivity(a.FinishJob, mock.Anything, mock.Anything).Return(activities.JobTotals{}, nil)
		start := time.Date(2026, 5, 6, 7, 8, 9, 123456789, time.UTC)
		env.SetStartTime(start)
		env.ExecuteWorkflow(ArchiveWorkflow, ArchiveInput{Tables: []string{"logs"}})
		if err := env.GetWorkflowResult(&res); err != nil {
			t.Fatal(err)
		}
		if want := start.Truncate(time.Microsecond); !res.AsOf.Equal(want) {
			t.Fatalf("as-of %v, want the start time to the microsecond %v", res.AsOf, want)
		}
	})
}
