package workflows

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"

	"github.com/mockupaws/archiver/activities"
)

func TestPartitionExchange(t *testing.T) {
	t.Run("whole partitions are exchanged first, an unfinished one under its own batch id; the rest moves by batches", func(t *testing.T) {
		env := newEnv(t)
		var ids []string
		jan := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
		env.OnActivity(a.ListExchangeable, mock.Anything, mock.Anything).Return(activities.ListExchangeableResult{
			Candidates: []activities.ExchangeCandidate{
				{Partition: "public.logs_p2023_12", OID: 41, Lower: jan.AddDate(0, -1, 0), Upper: jan, BatchID: "4ed5b7d3-0000-4000-8000-000000000001"},
				{Partition: "public.logs_p2024_01", OID: 42, Lower: jan, Upper: jan.AddDate(0, 1, 0)},
			},
			Skipped: []string{"public.logs_p2024_02: its bounds are not one archive month"},
		}, nil)
		mockLogsRun(env, 500, &ids) // after: the first matching mock answers
		env.OnActivity(a.FinishJob, mock.Anything, mock.Anything).Return(activities.JobTotals{Status: "completed"}, nil)
		var exchanged []activities.ExchangeInput
		env.OnActivity(a.ExchangePartition, mock.Anything, mock.Anything).Return(
			func(_ context.Context, in activities.ExchangeInput) (activities.ExchangeResult, error) {
				exchanged = append(exchanged, in)
				return activities.ExchangeResult{BatchID: in.BatchID, Rows: 1000, Bytes: 5000, LongestLockMillis: int64(30 * len(exchanged))}, nil
			})
		env.ExecuteWorkflow(ArchiveWorkflow, ArchiveInput{Tables: []string{"logs"}, AsOf: testAsOf, BatchSize: 1000})
		if err := env.GetWorkflowError(); err != nil {
			t.Fatal(err)
		}
		var res ArchiveResult
		_ = env.GetWorkflowResult(&res)
		if len(exchanged) != 2 || exchanged[0].BatchID != "4ed5b7d3-0000-4000-8000-000000000001" || exchanged[1].BatchID == "" ||
			exchanged[1].BatchID == exchanged[0].BatchID || exchanged[1].Partition.OID != 42 || exchanged[0].JobID == "" {
			t.Fatalf("exchanges %+v", exchanged)
		}
		tr := res.Tables[0]
		if tr.PartitionsExchanged != 2 || tr.LongestLockMillis != 60 || len(tr.ExchangeSkipped) != 1 || len(ids) == 0 {
			t.Fatalf("summary %+v (batches %d)", tr, len(ids))
		}
	})

	t.Run("RowByRow never exchanges", func(t *testing.T) {
		env := newEnv(t)
		var ids []string
		env.OnActivity(a.ListExchangeable, mock.Anything, mock.Anything).Return(
			func(context.Context, activities.ListExchangeableInput) (activities.ListExchangeableResult, error) {
				t.Error("ListExchangeable called in a row-by-row run")
				return activities.ListExchangeableResult{}, nil
			}).Maybe()
		mockLogsRun(env, 500, &ids)
		env.OnActivity(a.FinishJob, mock.Anything, mock.Anything).Return(activities.JobTotals{Status: "completed"}, nil)
		env.ExecuteWorkflow(ArchiveWorkflow, ArchiveInput{Tables: []string{"logs"}, AsOf: testAsOf, BatchSize: 1000, RowByRow: true})
		if err := env.GetWorkflowError(); err != nil {
			t.Fatal(err)
		}
	})
}
