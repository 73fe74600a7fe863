package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/workflows"
)

// TestLoadControlBacksOffAndResumes: a run with --max-load under an
// application's load past it (16 pgbench sessions, each running a
// statement) rests and moves nothing; once the load is lowered it resumes
// and archives every eligible row exactly once, and its result records the
// rests. Asserted on what happened, not on how long it took.
func TestLoadControlBacksOffAndResumes(t *testing.T) {
	b := setup(t)
	before := b.snapshot(t)
	load := testenv.StartAppLoad(t, b.db, b.url, 16)
	run, err := b.c.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{ID: "e2e-load-" + testenv.RandomID(), TaskQueue: b.queue},
		workflows.ArchiveWorkflowName, workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf, BatchSize: 1000, MaxLoad: "active=10"})
	if err != nil {
		t.Fatal(err)
	}
	// The progress query answers between batches: wait for two rests.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var p workflows.ArchiveResult
		v, err := b.c.QueryWorkflow(context.Background(), run.GetID(), run.GetRunID(), workflows.ProgressQuery)
		if err == nil {
			err = v.Get(&p)
		}
		if err == nil && len(p.Tables) == 1 && p.Tables[0].LoadRests >= 2 {
			if tr := p.Tables[0]; tr.RowsDeleted != 0 || tr.MaxLoad != "active=10" || !strings.HasPrefix(tr.LastLoad, "active ") {
				t.Fatalf("under the load the run shows %+v, want rests naming the active sessions, max load active=10, nothing moved", tr)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the run showed no two rests for load in 2 minutes (last progress %+v, %v)", p, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	load.Stop(t)
	var res workflows.ArchiveResult
	if err := testenv.Wait(t, b.c, run, testenv.DefaultWait, &res); err != nil {
		t.Fatalf("the run failed: %v", err)
	}
	record(t, b.c, run, "archive-logs-load-v1.json")
	tr := res.Tables[0]
	if tr.Status != workflows.StatusCompleted || tr.StoppedAtLoad != "" || tr.LoadRests < 2 || tr.LoadRestSeconds <= 0 {
		t.Fatalf("summary %+v, want completed with its rests recorded", tr)
	}
	after := b.snapshot(t)
	if after.archN != before.eligibleN || after.archSum != before.eligibleSum || after.allSum != before.allSum {
		t.Fatalf("the archive holds %d rows (%s), want the %d eligible (%s), live ∪ archive unchanged", after.archN, after.archSum, before.eligibleN, before.eligibleSum)
	}
	if ledger := testenv.Count(t, b.db, `SELECT COALESCE(sum(rows_moved), 0) FROM archive_batches`); ledger != after.archN || tr.RowsArchived != after.archN {
		t.Fatalf("the ledger counts %d rows, the result %d, the archive holds %d", ledger, tr.RowsArchived, after.archN)
	}
}

// TestCriticalLoadStopsTheRun: past --critical-load a run moves nothing,
// ends completed (no failure) with stopped_at_load in its result and in
// archive_jobs, and skips retention; the next run, the load gone, moves
// every eligible row.
func TestCriticalLoadStopsTheRun(t *testing.T) {
	b := setup(t)
	before := b.snapshot(t)
	load := testenv.StartAppLoad(t, b.db, b.url, 16)
	res, run, err := b.run(t, workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf, BatchSize: 1000, CriticalLoad: "active=10"})
	if err != nil {
		t.Fatalf("a run stopped at the critical load failed: %v", err)
	}
	record(t, b.c, run, "archive-logs-critical-load-v1.json")
	tr := res.Tables[0]
	if tr.Status != workflows.StatusCompleted || !strings.HasPrefix(tr.StoppedAtLoad, "active ") || tr.RowsDeleted != 0 || tr.Retention != nil || tr.Vacuum != nil {
		t.Fatalf("summary %+v, want completed, stopped at the load, nothing moved, no retention step", tr)
	}
	var status, stopped string
	if err := b.db.QueryRow(context.Background(), `SELECT status, COALESCE(stopped_at_load, '') FROM archive_jobs WHERE id = $1`, tr.JobID).Scan(&status, &stopped); err != nil {
		t.Fatal(err)
	}
	if status != "completed" || stopped != tr.StoppedAtLoad {
		t.Fatalf("archive_jobs: status %s, stopped_at_load %q; want completed and %q", status, stopped, tr.StoppedAtLoad)
	}
	load.Stop(t)
	again, _, err := b.run(t, workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf, BatchSize: 1000, CriticalLoad: "active=10"})
	if err != nil {
		t.Fatalf("the next run failed: %v", err)
	}
	final := b.snapshot(t)
	if again.Tables[0].StoppedAtLoad != "" || final.archN != before.eligibleN || final.archSum != before.eligibleSum || final.allSum != before.allSum {
		t.Fatalf("after the next run (%+v) the archive holds %d rows (%s), want the %d eligible (%s)", again.Tables[0], final.archN, final.archSum, before.eligibleN, before.eligibleSum)
	}
}
