package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.temporal.io/sdk/client"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/workflows"
)

// TestSweepAfterVacuumTakesHeldRows: rows an application transaction holds
// while the batch loop passes them are skipped (SKIP LOCKED) and left for
// the final sweep, which now runs after the VACUUM step
// (changeSweepAfterVacuum). The application also holds SHARE UPDATE
// EXCLUSIVE on the live table, which batches do not need and VACUUM does:
// while VACUUM waits for it, the loop has ended and the held rows are still
// live; once both are released, the sweep after VACUUM archives them.
func TestSweepAfterVacuumTakesHeldRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, url := testenv.NewDB(t)
	c := testenv.Temporal(t)
	// The admin login owns the tables, so VACUUM runs (the worker role
	// would be told it does not own them, and the step would not wait).
	acts := &activities.Activities{DB: testenv.Pool(t, url), VacuumShare: 0.2}
	b := bundle{db: db, url: url, c: c, acts: acts, queue: testenv.StartWorker(t, c, acts)}
	testenv.InsertLogs(t, db, testenv.SpreadTimes(3*365*16, asOf, 90*time.Minute))
	before := b.snapshot(t)
	cutoff := asOf.Add(-365 * 24 * time.Hour)

	app, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = app.Rollback(ctx) }()
	// The two oldest eligible rows and one in the middle of the loop's way.
	rows, err := app.Query(ctx, `
		SELECT id::text FROM scenario_logs WHERE id IN (
		    (SELECT id FROM scenario_logs WHERE received_at < $1 ORDER BY received_at LIMIT 2)
		    UNION ALL
		    (SELECT id FROM scenario_logs WHERE received_at < $1 ORDER BY received_at OFFSET 5000 LIMIT 1))
		FOR UPDATE`, cutoff)
	if err != nil {
		t.Fatal(err)
	}
	held, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(held) != 3 {
		t.Fatalf("held rows %v, %v: want 3", held, err)
	}
	if _, err := app.Exec(ctx, `LOCK TABLE scenario_logs IN SHARE UPDATE EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}

	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "e2e-sweep-" + testenv.RandomID(), TaskQueue: b.queue},
		workflows.ArchiveWorkflowName, workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf, BatchSize: 1000, MinBatch: 1000, MaxBatch: 1000})
	if err != nil {
		t.Fatal(err)
	}
	// The worker's VACUUM waits on the application's table lock.
	deadline := time.Now().Add(testenv.DefaultWait)
	for {
		var waiting bool
		if err := db.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_stat_activity
			WHERE datname = current_database() AND query LIKE 'VACUUM%' AND wait_event_type = 'Lock')`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no VACUUM waited on the table lock within %s", testenv.DefaultWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
	left := testenv.Count(t, db, `SELECT count(*) FROM scenario_logs WHERE received_at < $1`, cutoff)
	if left != int64(len(held)) {
		t.Fatalf("while VACUUM waits, %d eligible rows are live, want the %d held ones: the loop ends there, the sweep comes after", left, len(held))
	}
	if err := app.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	var res workflows.ArchiveResult
	if err := testenv.Wait(t, c, run, testenv.DefaultWait, &res); err != nil {
		t.Fatalf("run: %v", err)
	}
	record(t, c, run, "archive-logs-sweep-after-vacuum-v1.json")
	after := b.snapshot(t)
	if after.archN != before.eligibleN || after.archSum != before.eligibleSum || after.allSum != before.allSum {
		t.Fatalf("archive holds %d rows (%s), want the %d eligible rows (%s), every row once", after.archN, after.archSum, before.eligibleN, before.eligibleSum)
	}
	if n := testenv.Count(t, db, `SELECT count(*) FROM scenario_logs_archive WHERE id::text = ANY ($1)`, held); n != int64(len(held)) {
		t.Fatalf("%d of the %d held rows archived, want all: the sweep after VACUUM takes them", n, len(held))
	}
	tr := res.Tables[0]
	if tr.Status != workflows.StatusCompleted || tr.RowsArchived != before.eligibleN || tr.Vacuum == nil || !tr.Vacuum.Ran {
		t.Fatalf("summary %+v (vacuum %+v), want completed with every eligible row and VACUUM run", tr, tr.Vacuum)
	}
}
