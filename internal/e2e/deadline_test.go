package e2e

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/workflows"
)

// TestRunDeadline: a run whose deadline passes while its first batch is in
// flight lets that batch finish, starts no other, and records
// stopped_at_deadline in its result and in archive_jobs, without failing;
// every row it moved is counted once in the ledger, and the next run moves
// the rest.
func TestRunDeadline(t *testing.T) {
	b := setup(t)
	before := b.snapshot(t)
	// The deadline is a wall-clock instant; the first batch's answer is
	// held (after its commit) until well after that instant, so the
	// workflow's clock, when it next looks, is past the deadline. Well
	// after: the SDK moves the workflow's clock at a local activity's
	// result by the time elapsed since it began processing the workflow
	// task, so the clock lags the wall by however long the task waited
	// before processing began (seconds on a loaded machine: held only
	// 50 ms past the deadline, a run under make test's load saw a clock
	// still short of it and started a second batch). A first batch that only
	// began after the deadline would make the test meaningless: it fails
	// then.
	deadline := time.Now().Add(6 * time.Second).UTC().Truncate(time.Millisecond)
	var once sync.Once
	var lateStart bool
	b.acts.AfterCommit = func(ctx context.Context, _ activities.MoveBatchResult) error {
		once.Do(func() {
			lateStart = !time.Now().Before(deadline)
			select {
			case <-time.After(time.Until(deadline) + 3*time.Second):
			case <-ctx.Done():
			}
		})
		return nil
	}
	res, run, err := b.run(t, workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf, BatchSize: 1000, MinBatch: 1000, MaxBatch: 1000, Deadline: deadline})
	if err != nil {
		t.Fatalf("a run stopped at its deadline failed: %v", err)
	}
	if lateStart {
		t.Fatal("the first batch committed after the deadline: the machine is too slow for this test's 6 s")
	}
	record(t, b.c, run, "archive-logs-deadline-v1.json")
	tr := res.Tables[0]
	if tr.Status != workflows.StatusCompleted || !tr.StoppedAtDeadline || tr.Batches != 1 || tr.RowsArchived != 1000 || tr.Retention != nil {
		t.Fatalf("summary %+v, want completed, stopped at the deadline after its one batch of 1000 rows, no retention step", tr)
	}
	if !res.Deadline.Equal(deadline) {
		t.Fatalf("result deadline %s, want %s", res.Deadline, deadline)
	}

	after := b.snapshot(t)
	if after.allN != before.allN || after.allSum != before.allSum {
		t.Fatalf("live ∪ archive changed: %d rows (%s) -> %d (%s)", before.allN, before.allSum, after.allN, after.allSum)
	}
	ledger := testenv.Count(t, b.db, `SELECT COALESCE(sum(rows_moved), 0) FROM archive_batches`)
	if after.archN != 1000 || ledger != after.archN {
		t.Fatalf("archive holds %d rows, the ledger counts %d: want 1000 each", after.archN, ledger)
	}
	if n := testenv.Count(t, b.db, `
		SELECT count(*) FROM archive_batches b
		WHERE b.rows_moved <> (SELECT count(*) FROM scenario_logs_archive a WHERE a.archive_batch_id = b.batch_id)`); n != 0 {
		t.Fatalf("%d ledger batches do not count exactly the rows carrying their id", n)
	}
	if n := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_logs l JOIN scenario_logs_archive a USING (id)`); n != 0 {
		t.Fatalf("%d rows are in both tables", n)
	}
	var status string
	var stopped bool
	if err := b.db.QueryRow(context.Background(), `SELECT status, stopped_at_deadline FROM archive_jobs WHERE id = $1`, tr.JobID).Scan(&status, &stopped); err != nil {
		t.Fatal(err)
	}
	if status != "completed" || !stopped {
		t.Fatalf("archive_jobs: status %s, stopped_at_deadline %v; want completed and true", status, stopped)
	}

	// The next run, without a deadline, moves the rest: nothing was lost.
	again, _, err := b.run(t, workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf, BatchSize: 1000})
	if err != nil {
		t.Fatalf("the next run failed: %v", err)
	}
	final := b.snapshot(t)
	if again.Tables[0].StoppedAtDeadline || final.archN != before.eligibleN || final.archSum != before.eligibleSum || final.allSum != before.allSum {
		t.Fatalf("after the next run the archive holds %d rows (%s), want the %d eligible (%s)", final.archN, final.archSum, before.eligibleN, before.eligibleSum)
	}
	if n := testenv.Count(t, b.db, `SELECT count(*) FROM archive_jobs WHERE stopped_at_deadline`); n != 1 {
		t.Fatalf("%d jobs record stopped_at_deadline, want only the first run's", n)
	}
}
