package e2e

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/workflows"
)

var asOf = time.Date(2026, 3, 15, 3, 0, 0, 0, time.UTC)
var cutoffStr = asOf.Add(-365 * 24 * time.Hour).Format(time.RFC3339Nano)

type bundle struct {
	db    *pgxpool.Pool
	url   string
	c     client.Client
	queue string
	acts  *activities.Activities
}

func setup(t *testing.T) bundle {
	t.Helper()
	t.Parallel()
	db, url := testenv.NewDB(t)
	c := testenv.Temporal(t)
	// The worker runs as the least-privilege role; fixtures and checks use
	// the admin pool.
	b := bundle{db: db, url: url, c: c, acts: &activities.Activities{DB: testenv.WorkerPool(t, url)}}
	b.queue = testenv.StartWorker(t, c, b.acts)
	// Three years of rows, one every 90 minutes: about two thirds eligible.
	testenv.InsertLogs(t, db, testenv.SpreadTimes(3*365*16, asOf, 90*time.Minute))
	return b
}

func (b bundle) run(t *testing.T, in workflows.ArchiveInput) (workflows.ArchiveResult, client.WorkflowRun, error) {
	t.Helper()
	run, err := b.c.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{
		ID: "e2e-" + testenv.RandomID(), TaskQueue: b.queue,
	}, workflows.ArchiveWorkflowName, in)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	var res workflows.ArchiveResult
	err = testenv.Wait(t, b.c, run, testenv.DefaultWait, &res)
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) && appErr.HasDetails() {
		_ = appErr.Details(&res)
	}
	return res, run, err
}

type snapshot struct {
	allN, liveN, archN, jobs, batches, partitions int64
	allSum, eligibleSum, liveSum, archSum         string
	eligibleN                                     int64
}

func (b bundle) snapshot(t *testing.T) snapshot {
	t.Helper()
	var s snapshot
	s.allN, s.allSum = testenv.LogsChecksum(t, b.db, "v_scenario_logs_all", "")
	s.liveN, s.liveSum = testenv.LogsChecksum(t, b.db, "scenario_logs", "")
	s.archN, s.archSum = testenv.LogsChecksum(t, b.db, "scenario_logs_archive", "")
	s.eligibleN, s.eligibleSum = testenv.LogsChecksum(t, b.db, "v_scenario_logs_all", "received_at < '"+cutoffStr+"'")
	s.jobs = testenv.Count(t, b.db, `SELECT count(*) FROM archive_jobs`)
	s.batches = testenv.Count(t, b.db, `SELECT count(*) FROM archive_batches`)
	s.partitions = testenv.Count(t, b.db, `SELECT count(*) FROM pg_inherits WHERE inhparent = 'scenario_logs_archive'::regclass`)
	return s
}

func TestLogsRun(t *testing.T) {
	t.Run("archives every eligible row once with its content, and a rerun changes nothing", func(t *testing.T) {
		b := setup(t)
		before := b.snapshot(t)
		// Batch size pinned (the lock-time budget would grow it) so the
		// batch count is exact.
		res, run, err := b.run(t, workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf, BatchSize: 1000, MinBatch: 1000, MaxBatch: 1000})
		if err != nil {
			t.Fatalf("run failed: %v", err)
		}
		record(t, b.c, run, "archive-logs-v10.json")
		after := b.snapshot(t)

		if after.allN != before.allN || after.allSum != before.allSum {
			t.Fatalf("v_scenario_logs_all changed: %d rows (%s) -> %d (%s)", before.allN, before.allSum, after.allN, after.allSum)
		}
		if after.archN != before.eligibleN || after.archSum != before.eligibleSum {
			t.Fatalf("archive holds %d rows (%s), want the %d eligible rows (%s)", after.archN, after.archSum, before.eligibleN, before.eligibleSum)
		}
		if n := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_logs WHERE received_at < $1`, asOf.Add(-365*24*time.Hour)); n != 0 {
			t.Fatalf("%d eligible rows left in the live table", n)
		}
		if n := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_logs l JOIN scenario_logs_archive a USING (id)`); n != 0 {
			t.Fatalf("%d rows are in both tables", n)
		}
		if n := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_logs_archive WHERE archive_batch_id IS NULL`); n != 0 {
			t.Fatalf("%d archived rows have no batch id", n)
		}
		tr := res.Tables[0]
		wantBatches := before.eligibleN/1000 + 1 + 1 // and the final sweep
		if tr.Status != workflows.StatusCompleted || tr.RowsArchived != before.eligibleN || tr.Batches != wantBatches {
			t.Fatalf("summary %+v, want completed, %d rows in %d batches", tr, before.eligibleN, wantBatches)
		}
		var status string
		var archived, deleted, bytes int64
		if err := b.db.QueryRow(context.Background(), `
			SELECT status, records_archived, records_deleted, bytes_archived FROM archive_jobs WHERE id = $1`, tr.JobID).
			Scan(&status, &archived, &deleted, &bytes); err != nil {
			t.Fatal(err)
		}
		if status != "completed" || archived != before.eligibleN || deleted != before.eligibleN || bytes != tr.Bytes || bytes <= 0 {
			t.Fatalf("archive_jobs row: %s %d %d %d, want completed with %d rows and %d bytes", status, archived, deleted, bytes, before.eligibleN, tr.Bytes)
		}

		again, _, err := b.run(t, workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf, BatchSize: 1000})
		if err != nil {
			t.Fatalf("rerun failed: %v", err)
		}
		if again.Tables[0].RowsArchived != 0 {
			t.Fatalf("rerun archived %d rows, want 0", again.Tables[0].RowsArchived)
		}
		final := b.snapshot(t)
		if final.liveSum != after.liveSum || final.archSum != after.archSum || final.batches != after.batches {
			t.Fatal("rerun with the same as-of changed the tables or the ledger")
		}
	})

	t.Run("a dry run reports what would move and writes nothing", func(t *testing.T) {
		b := setup(t)
		before := b.snapshot(t)
		res, run, err := b.run(t, workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf, DryRun: true})
		if err != nil {
			t.Fatalf("dry run failed: %v", err)
		}
		record(t, b.c, run, "archive-logs-dry-run-v4.json")
		if after := b.snapshot(t); after != before {
			t.Fatalf("dry run changed the database:\nbefore %+v\nafter  %+v", before, after)
		}
		p := res.Tables[0].Preview
		if p == nil || p.Rows != before.eligibleN || p.Bytes <= 0 || p.Oldest == nil || !p.Newest.Before(asOf.Add(-365*24*time.Hour)) {
			t.Fatalf("preview %+v, want %d eligible rows with bytes and a range below the cut-off", p, before.eligibleN)
		}
		if len(p.PartitionsToCreate) != 25 {
			t.Fatalf("preview lists %d partitions to create, want 25 (2023-03 .. 2025-03)", len(p.PartitionsToCreate))
		}
	})

	t.Run("a batch whose answer is lost after commit is retried without moving anything twice", func(t *testing.T) {
		b := setup(t)
		before := b.snapshot(t)
		var mu sync.Mutex
		lost := map[string]bool{}
		replayed := 0
		b.acts.AfterCommit = func(_ context.Context, r activities.MoveBatchResult) error {
			mu.Lock()
			defer mu.Unlock()
			if r.Replayed {
				replayed++
				return nil
			}
			if !lost[r.BatchID] {
				lost[r.BatchID] = true
				return errors.New("injected: connection lost after commit")
			}
			return nil
		}
		res, _, err := b.run(t, workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf, BatchSize: 2000})
		if err != nil {
			t.Fatalf("run failed: %v", err)
		}
		after := b.snapshot(t)
		if after.allSum != before.allSum || after.archN != before.eligibleN || after.archSum != before.eligibleSum {
			t.Fatal("rows were lost, duplicated or changed")
		}
		if res.Tables[0].RowsArchived != before.eligibleN {
			t.Fatalf("summary says %d rows, want %d", res.Tables[0].RowsArchived, before.eligibleN)
		}
		if replayed != len(lost) || after.batches != int64(len(lost)) {
			t.Fatalf("%d batches lost their answer, %d retries answered from the ledger, %d ledger rows: want all equal", len(lost), replayed, after.batches)
		}
	})

	t.Run("a failing batch fails the run and records the error in archive_jobs", func(t *testing.T) {
		b := setup(t)
		b.acts.AfterCommit = func(context.Context, activities.MoveBatchResult) error {
			return temporal.NewNonRetryableApplicationError("injected permanent fault", activities.ErrInvalidInput, nil)
		}
		res, run, err := b.run(t, workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf})
		var appErr *temporal.ApplicationError
		if !errors.As(err, &appErr) || appErr.Type() != workflows.ErrRunFailed {
			t.Fatalf("error %v, want %s", err, workflows.ErrRunFailed)
		}
		record(t, b.c, run, "archive-logs-failed-v4.json")
		if res.Tables[0].Status != workflows.StatusFailed {
			t.Fatalf("summary %+v, want failed", res.Tables[0])
		}
		var status, msg string
		if err := b.db.QueryRow(context.Background(), `SELECT status, error_message FROM archive_jobs`).Scan(&status, &msg); err != nil {
			t.Fatal(err)
		}
		if status != "failed" || msg == "" {
			t.Fatalf("archive_jobs: %s %q, want failed with the error", status, msg)
		}
	})
}

// record writes the run's history to testdata/histories for the replay
// tests when ARCHIVER_RECORD_HISTORY is set (testenv.RecordHistory).
func record(t *testing.T, c client.Client, run client.WorkflowRun, name string) {
	t.Helper()
	testenv.RecordHistory(t, c, run, name)
}
