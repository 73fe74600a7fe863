package e2e

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/policy"
	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/workflows"
)

func (b bundle) restore(t *testing.T, req workflows.RestoreRequest) (workflows.RestoreResult, error) {
	t.Helper()
	run, err := b.c.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{
		ID: "e2e-restore-" + testenv.RandomID(), TaskQueue: b.queue,
	}, workflows.RestoreWorkflowName, req)
	if err != nil {
		t.Fatalf("start restore: %v", err)
	}
	var res workflows.RestoreResult
	err = testenv.Wait(t, b.c, run, testenv.DefaultWait, &res)
	return res, err
}

// TestColdArchiveRoundTrip: archive → export → drop → restore brings the
// window's rows back to the live table identical by content checksum,
// from the exported objects (whole partitions) and from the archive table
// (by batches, every committed batch's answer lost once and replayed from
// the ledger); verify accounts for every batch afterwards; the next
// archive run leaves the held window alone, and a second restore finds
// nothing left to bring back.
func TestColdArchiveRoundTrip(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	b.acts.Store = testenv.Store(t)
	logs, _ := policy.Lookup("logs")
	logs.Retention = 2 * 365 * policy.Day // partitions before 2024-03 expire as of 2026-03-15
	logs.Export = &policy.Export{Prefix: "cold"}
	in := workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf, Policy: []policy.Table{logs}}

	const after, before = "2024-01-10", "2024-04-20"
	wideAfter := "2024-01-01" // the exported partitions come back whole
	window := "received_at >= '" + wideAfter + "' AND received_at < '" + before + "'"
	wantN, wantSum := testenv.LogsChecksum(t, b.db, "scenario_logs", window)
	if wantN == 0 {
		t.Fatal("fixture: no rows in the window")
	}
	res, _, err := b.run(t, in)
	if err != nil {
		t.Fatalf("archive run: %v", err)
	}
	r := res.Tables[0].Retention
	if r == nil || len(r.Exports) < 10 || r.ExportedRows == 0 {
		t.Fatalf("retention %+v: want its partitions exported", r)
	}
	if n, _ := testenv.LogsChecksum(t, b.db, "v_scenario_logs_all", window); n >= wantN {
		t.Fatalf("%d rows of the window still in the database after the drop, want fewer than %d", n, wantN)
	}

	// The worker archives without INSERT on the live table: the restore
	// is refused with the GRANT to run, changing nothing.
	req := workflows.RestoreRequest{Table: "logs", Policy: &logs, After: mustDate(t, after), Before: mustDate(t, before), BatchSize: 700}
	if _, err := b.restore(t, req); err == nil || !strings.Contains(err.Error(), `GRANT INSERT ON "scenario_logs" TO "archiver_worker"`) {
		t.Fatalf("restore without INSERT: %v, want a refusal naming the GRANT", err)
	}
	if _, err := b.db.Exec(ctx, `GRANT INSERT ON scenario_logs TO archiver_worker`); err != nil {
		t.Fatal(err)
	}
	// Every restore batch's answer is lost once after its commit.
	var lost atomic.Int32
	seen := map[string]bool{}
	b.acts.AfterCommit = func(_ context.Context, r activities.MoveBatchResult) error {
		if !seen[r.BatchID] && !r.Replayed {
			seen[r.BatchID] = true
			lost.Add(1)
			return errors.New("fault: the batch's answer is lost after its commit")
		}
		return nil
	}
	got, err := b.restore(t, req)
	b.acts.AfterCommit = nil
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if len(got.Plan.Exports) != 2 || got.RowsFromExports == 0 || got.RowsFromArchive == 0 || lost.Load() < 3 {
		t.Fatalf("restore result %+v (answers lost %d): want 2 exports and archive rows, several batches replayed", got, lost.Load())
	}
	if n, sum := testenv.LogsChecksum(t, b.db, "scenario_logs", window); n != wantN || sum != wantSum {
		t.Fatalf("live rows of the window after the restore: %d %s, want %d %s", n, sum, wantN, wantSum)
	}
	if n := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_logs_archive WHERE `+window); n != 0 {
		t.Fatalf("%d rows of the window are still in the archive as well", n)
	}
	rep, err := b.acts.Verify(ctx, activities.VerifyInput{Entries: []policy.Table{logs}, Deep: true})
	if err != nil || rep.Failed() {
		t.Fatalf("verify after the restore: %+v (%v)", rep, err)
	}

	// The next run leaves the held window in the live table.
	in.AsOf = asOf.Add(24 * time.Hour)
	if _, _, err := b.run(t, in); err != nil {
		t.Fatalf("archive run after the restore: %v", err)
	}
	if n, sum := testenv.LogsChecksum(t, b.db, "scenario_logs", window); n != wantN || sum != wantSum {
		t.Fatalf("the next run moved held rows: %d %s, want %d %s", n, sum, wantN, wantSum)
	}
	// A second restore of the window has nothing left to bring back.
	again, err := b.restore(t, req)
	if err != nil || again.RowsFromArchive != 0 || again.RowsFromExports != 0 {
		t.Fatalf("second restore %+v (%v): want nothing", again, err)
	}
	if n, _ := testenv.LogsChecksum(t, b.db, "scenario_logs", window); n != wantN {
		t.Fatalf("after the second restore %d rows, want %d", n, wantN)
	}
}

func mustDate(t *testing.T, s string) time.Time {
	t.Helper()
	d, err := time.Parse("2006-01-02", s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
