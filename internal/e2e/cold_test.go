package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/google/uuid"
	"github.com/klauspost/compress/gzip"
	"go.temporal.io/sdk/client"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/policy"
	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/workflows"
)

func (b bundle) restore(t *testing.T, req workflows.RestoreRequest) (workflows.RestoreResult, error) {
	t.Helper()
	res, _, err := b.restoreRun(t, req)
	return res, err
}

func (b bundle) restoreRun(t *testing.T, req workflows.RestoreRequest) (workflows.RestoreResult, client.WorkflowRun, error) {
	t.Helper()
	run, err := b.c.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{
		ID: "e2e-restore-" + testenv.RandomID(), TaskQueue: b.queue,
	}, workflows.RestoreWorkflowName, req)
	if err != nil {
		t.Fatalf("start restore: %v", err)
	}
	var res workflows.RestoreResult
	err = testenv.Wait(t, b.c, run, testenv.DefaultWait, &res)
	return res, run, err
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
	res, run, err := b.run(t, in)
	if err != nil {
		t.Fatalf("archive run: %v", err)
	}
	record(t, b.c, run, "archive-logs-cold-export-v1.json")
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
	got, rrun, err := b.restoreRun(t, req)
	b.acts.AfterCommit = nil
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	record(t, b.c, rrun, "restore-logs-v1.json")
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

// TestRestoreReports: reports archived (files offloaded to S3 and removed)
// come back with their rows and their files, byte for byte, under
// REPORTS_DIR; a file that a different one has replaced meanwhile is not
// overwritten (the restore fails, naming it); verify --deep checks every
// object's content, and catches an object changed on S3.
func TestRestoreReports(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	dir := t.TempDir()
	st := testenv.Store(t)
	b.acts.Store, b.acts.ReportsDir = st, dir
	var reports []testenv.Report
	for i := 0; i < 24; i++ {
		id := uuid.New()
		reports = append(reports, testenv.Report{ID: id, Created: asOf.AddDate(0, -7-i, -1), Format: "csv",
			File: filepath.Join("r", id.String()+".csv"), Content: testenv.CSV(i+1, 30000+i*500)})
	}
	testenv.InsertReports(t, b.db, dir, reports)
	before := testenv.Count(t, b.db, `SELECT count(*) FROM reports`)
	if _, _, err := b.run(t, workflows.ArchiveInput{Tables: []string{"reports"}, AsOf: asOf}); err != nil {
		t.Fatalf("archive run: %v", err)
	}
	if n := testenv.Count(t, b.db, `SELECT count(*) FROM reports`); n != 0 || before != 24 {
		t.Fatalf("%d reports left live (of %d)", n, before)
	}
	for _, r := range reports {
		if _, err := os.Stat(filepath.Join(dir, r.File)); !os.IsNotExist(err) {
			t.Fatalf("%s still on disk after archiving (%v)", r.File, err)
		}
	}
	// A window of 10 months: reports 2..11 (created 9..18 months back).
	after, end := asOf.AddDate(0, -18, -2), asOf.AddDate(0, -8, -2)
	var want []testenv.Report
	for _, r := range reports {
		if !r.Created.Before(after) && r.Created.Before(end) {
			want = append(want, r)
		}
	}
	if len(want) != 10 {
		t.Fatalf("fixture: %d reports in the window", len(want))
	}
	// One path in the window is taken by another file meanwhile.
	squatter := filepath.Join(dir, want[3].File)
	if err := os.MkdirAll(filepath.Dir(squatter), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(squatter, []byte("someone else's file"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := b.db.Exec(ctx, `GRANT INSERT ON reports TO archiver_worker`); err != nil {
		t.Fatal(err)
	}
	rep, _ := policy.Lookup("reports")
	req := workflows.RestoreRequest{Table: "reports", Policy: &rep, After: after, Before: end, BatchSize: 4}
	_, err := b.restore(t, req)
	if err == nil || !strings.Contains(err.Error(), "a different file is at") {
		t.Fatalf("restore over a different file: %v, want a refusal naming it", err)
	}
	if got, _ := os.ReadFile(squatter); string(got) != "someone else's file" {
		t.Fatal("the other file was overwritten")
	}
	if err := os.Remove(squatter); err != nil {
		t.Fatal(err)
	}
	got, rrun, err := b.restoreRun(t, req)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	record(t, b.c, rrun, "restore-reports-v1.json")
	// The pages before the refused one were restored by the first run.
	if n := testenv.Count(t, b.db, `SELECT count(*) FROM reports`); n != 10 || got.RowsFromArchive == 0 {
		t.Fatalf("%d reports live after the restores (the second restored %d), want 10", n, got.RowsFromArchive)
	}
	for _, r := range want {
		data, err := os.ReadFile(filepath.Join(dir, r.File))
		if err != nil || !bytes.Equal(data, r.Content) {
			t.Fatalf("%s after the restore: %d bytes (%v), want its %d original bytes", r.File, len(data), err, len(r.Content))
		}
		var extra string
		if err := b.db.QueryRow(ctx, `SELECT extra_data::text FROM reports WHERE id = $1`, r.ID).Scan(&extra); err != nil {
			t.Fatalf("%s: its row is not back: %v", r.ID, err)
		}
		if strings.Contains(extra, `"archive"`) {
			t.Fatalf("%s: the archiver's record stayed in the restored row: %s", r.ID, extra)
		}
	}
	if n := testenv.Count(t, b.db, `SELECT count(*) FROM reports_archive WHERE created_at >= $1 AND created_at < $2`, after, end); n != 0 {
		t.Fatalf("%d rows of the window still archived", n)
	}
	// Verify, deep: every remaining object's content; then one changed.
	vr, err := b.acts.Verify(ctx, activities.VerifyInput{Entries: []policy.Table{rep}, Deep: true})
	if err != nil || vr.Failed() {
		t.Fatalf("verify: %+v (%v)", vr, err)
	}
	var loc string
	if err := b.db.QueryRow(ctx, `SELECT s3_location FROM reports_archive ORDER BY created_at LIMIT 1`).Scan(&loc); err != nil {
		t.Fatal(err)
	}
	key := strings.TrimPrefix(loc, "s3://"+st.Bucket()+"/")
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	_, _ = gz.Write([]byte("not the report"))
	_ = gz.Close()
	// Same size on S3 would pass a HEAD; the content check catches it.
	if _, err := st.Client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(st.Bucket()), Key: aws.String(key), Body: bytes.NewReader(buf.Bytes())}); err != nil {
		t.Fatal(err)
	}
	vr, err = b.acts.Verify(ctx, activities.VerifyInput{Entries: []policy.Table{rep}, Deep: true})
	if err != nil || !vr.Failed() {
		t.Fatalf("verify --deep after an object changed: %+v (%v), want a mismatch", vr, err)
	}
}
