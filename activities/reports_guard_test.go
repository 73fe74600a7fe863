package activities_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/policy"
	"github.com/mockupaws/archiver/internal/testenv"
)

// What must hold before a local file is removed or a row finalized
// (docs/design.md): nothing still referenced or changed is removed, and
// no row is archived against an object of other content.
func TestReportGuards(t *testing.T) {
	t.Run("two rows sharing a file: archiving the older keeps it for the younger, archiving the younger removes it", func(t *testing.T) {
		rb := setupReports(t)
		content := testenv.CSV(21, 30000)
		older := rb.add(t, testenv.Report{Content: content, File: "shared/monthly.csv"})
		// The younger row names the same file another way, and is not due.
		younger := rb.add(t, testenv.Report{File: "./shared//monthly.csv", Created: reportsCutoff.Add(24 * time.Hour)})

		up, err := rb.upload(t, older.ID)
		if err != nil {
			t.Fatal(err)
		}
		rb.finalize(t, older.ID, uuid.NewString(), up.Object)
		rm, err := rb.acts.RemoveReportFile(context.Background(), activities.RemoveReportFileInput{ReportID: older.ID.String()})
		if err != nil || rm.Removed || !strings.Contains(rm.Kept, "another live report") {
			t.Fatalf("RemoveReportFile = %+v, %v: want the file kept for the younger report", rm, err)
		}
		if got, err := os.ReadFile(filepath.Join(rb.dir, "shared/monthly.csv")); err != nil || !bytes.Equal(got, content) {
			t.Fatalf("the shared file is gone or changed: %v", err)
		}
		// The sweep keeps it too, and says so.
		if res, err := rb.acts.CompleteRemovals(context.Background(), activities.CompleteRemovalsInput{Limit: 10}); err != nil || res.Kept != 1 || res.Removed != 0 {
			t.Fatalf("CompleteRemovals = %+v, %v: want 1 kept", res, err)
		}

		// Months later the younger report is archived: the file goes, and
		// the older report's removal completes.
		if _, err := rb.db.Exec(context.Background(), `UPDATE reports SET created_at = $2 WHERE id = $1`, younger.ID, reportsCutoff.Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
		up2, err := rb.upload(t, younger.ID)
		if err != nil {
			t.Fatal(err)
		}
		rb.finalize(t, younger.ID, uuid.NewString(), up2.Object)
		if rm, err := rb.acts.RemoveReportFile(context.Background(), activities.RemoveReportFileInput{ReportID: younger.ID.String()}); err != nil || !rm.Removed {
			t.Fatalf("RemoveReportFile(younger) = %+v, %v", rm, err)
		}
		if _, err := os.Stat(filepath.Join(rb.dir, "shared/monthly.csv")); !os.IsNotExist(err) {
			t.Fatal("the file is still there after both reports were archived")
		}
		if res, err := rb.acts.CompleteRemovals(context.Background(), activities.CompleteRemovalsInput{Limit: 10}); err != nil || res.Removed != 1 {
			t.Fatalf("CompleteRemovals = %+v, %v: want the older report's removal completed", res, err)
		}
		if !bytes.Equal(rb.restore(t, older.ID), content) || !bytes.Equal(rb.restore(t, younger.ID), content) {
			t.Fatal("an object does not restore the shared file")
		}
	})

	t.Run("a file rewritten after the upload is never removed", func(t *testing.T) {
		rb := setupReports(t)
		r := rb.add(t, testenv.Report{Content: testenv.CSV(22, 20000)})
		up, err := rb.upload(t, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		rb.finalize(t, r.ID, uuid.NewString(), up.Object)
		rewritten := testenv.CSV(23, 20000) // same size, other content
		path := filepath.Join(rb.dir, r.File)
		if err := os.WriteFile(path, rewritten, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err = rb.acts.RemoveReportFile(context.Background(), activities.RemoveReportFileInput{ReportID: r.ID.String()})
		assertErrType(t, err, activities.ErrReportUnavailable)
		if !strings.Contains(err.Error(), "changed since it was archived") {
			t.Fatalf("error %q does not say why the file is kept", err)
		}
		if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, rewritten) {
			t.Fatalf("the rewritten file was removed or changed: %v", err)
		}
		// Marked kept: later sweeps leave it alone instead of failing on it
		// every night.
		if res, err := rb.acts.CompleteRemovals(context.Background(), activities.CompleteRemovalsInput{Limit: 10}); err != nil || res.Failed != 0 || res.Removed != 0 {
			t.Fatalf("CompleteRemovals = %+v, %v: want the kept file left alone", res, err)
		}
		if n := testenv.Count(t, rb.db, `SELECT count(*) FROM reports_archive WHERE id = $1 AND NOT deleted_locally AND extra_data->'archive'->>'kept' <> ''`, r.ID); n != 1 {
			t.Fatal("the archived row does not record that its file was kept")
		}
	})

	t.Run("a row whose file_path changed since the upload is not finalized against the old object", func(t *testing.T) {
		rb := setupReports(t)
		r := rb.add(t, testenv.Report{Content: testenv.CSV(24, 20000)})
		other := rb.add(t, testenv.Report{Content: testenv.CSV(25, 20000), Created: reportsCutoff.Add(24 * time.Hour)})
		up, err := rb.upload(t, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rb.db.Exec(context.Background(), `UPDATE reports SET file_path = $2 WHERE id = $1`, r.ID, other.File); err != nil {
			t.Fatal(err)
		}
		_, err = rb.acts.FinalizeReport(context.Background(), activities.FinalizeReportInput{ReportID: r.ID.String(), JobID: rb.job, BatchID: uuid.NewString(), Object: up.Object})
		assertErrType(t, err, activities.ErrReportUnavailable)
		if n := testenv.Count(t, rb.db, `SELECT count(*) FROM reports WHERE id = $1`, r.ID); n != 1 {
			t.Fatal("the changed row left the live table")
		}
		if n := testenv.Count(t, rb.db, `SELECT count(*) FROM reports_archive`); n != 0 {
			t.Fatal("the changed row was archived")
		}
		// The next run uploads the file the row names now.
		again, err := rb.upload(t, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		rb.finalize(t, r.ID, uuid.NewString(), again.Object)
		if !bytes.Equal(rb.restore(t, r.ID), testenv.CSV(25, 20000)) {
			t.Fatal("the archived object is not the file the row names")
		}
	})

	t.Run("a file changed between upload and finalize is not finalized", func(t *testing.T) {
		rb := setupReports(t)
		r := rb.add(t, testenv.Report{Content: testenv.CSV(26, 20000)})
		up, err := rb.upload(t, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(rb.dir, r.File)
		if err := os.WriteFile(path, testenv.CSV(27, 25000), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err = rb.acts.FinalizeReport(context.Background(), activities.FinalizeReportInput{ReportID: r.ID.String(), JobID: rb.job, BatchID: uuid.NewString(), Object: up.Object})
		assertErrType(t, err, activities.ErrReportUnavailable)
		if n := testenv.Count(t, rb.db, `SELECT count(*) FROM reports WHERE id = $1`, r.ID); n != 1 {
			t.Fatal("the row left the live table")
		}
	})

	t.Run("finalize verifies the object: removed or replaced since the upload, nothing moves", func(t *testing.T) {
		rb := setupReports(t)
		r := rb.add(t, testenv.Report{Content: testenv.CSV(28, 20000)})
		up, err := rb.upload(t, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rb.store.Client.DeleteObject(context.Background(), deleteInput(rb.store.Bucket(), up.Object.Key)); err != nil {
			t.Fatal(err)
		}
		if _, err := rb.acts.FinalizeReport(context.Background(), activities.FinalizeReportInput{ReportID: r.ID.String(), JobID: rb.job, BatchID: uuid.NewString(), Object: up.Object}); err == nil ||
			!strings.Contains(err.Error(), "is missing") {
			t.Fatalf("finalize after the object was removed: %v, want a refusal", err)
		}
		// Replaced by other content under the same key.
		if _, err := rb.store.Put(context.Background(), up.Object.Key, strings.NewReader("other content"), "application/gzip",
			map[string]string{"source-sha256": strings.Repeat("0", 64)}); err != nil {
			t.Fatal(err)
		}
		if _, err := rb.acts.FinalizeReport(context.Background(), activities.FinalizeReportInput{ReportID: r.ID.String(), JobID: rb.job, BatchID: uuid.NewString(), Object: up.Object}); err == nil ||
			!strings.Contains(err.Error(), "does not match") {
			t.Fatalf("finalize after the object was replaced: %v, want a refusal", err)
		}
		rb.assertUntouched(t, r)
	})
}

// A report the application deletes while a run goes on is nothing to
// archive, as a row deleted before its batch is in move mode: the run does
// not fail on it, and its file (the application's) stays.
func TestReportDeletedDuringTheRun(t *testing.T) {
	t.Run("deleted before its upload: nothing uploaded, no failure", func(t *testing.T) {
		rb := setupReports(t)
		r := rb.add(t, testenv.Report{Content: testenv.CSV(29, 20000)})
		if _, err := rb.db.Exec(context.Background(), `DELETE FROM reports WHERE id = $1`, r.ID); err != nil {
			t.Fatal(err)
		}
		up, err := rb.upload(t, r.ID)
		if err != nil || !up.AlreadyArchived || up.Object.Key != "" {
			t.Fatalf("UploadReport of a deleted report = %+v, %v: want nothing to do (the workflow skips it)", up, err)
		}
		if _, err := os.Stat(filepath.Join(rb.dir, r.File)); err != nil {
			t.Fatalf("the deleted report's file: %v", err)
		}
	})

	t.Run("deleted between upload and finalize: nothing moves, the file stays, no failure", func(t *testing.T) {
		rb := setupReports(t)
		r := rb.add(t, testenv.Report{Content: testenv.CSV(30, 20000)})
		up, err := rb.upload(t, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rb.db.Exec(context.Background(), `DELETE FROM reports WHERE id = $1`, r.ID); err != nil {
			t.Fatal(err)
		}
		if fin := rb.finalize(t, r.ID, uuid.NewString(), up.Object); fin.RowsMoved != 0 {
			t.Fatalf("finalize moved %d rows of a deleted report", fin.RowsMoved)
		}
		rm, err := rb.acts.RemoveReportFile(context.Background(), activities.RemoveReportFileInput{ReportID: r.ID.String()})
		if err != nil || rm.Removed {
			t.Fatalf("RemoveReportFile of a report deleted before it was archived = %+v, %v: want nothing done, no failure", rm, err)
		}
		if _, err := os.Stat(filepath.Join(rb.dir, r.File)); err != nil {
			t.Fatalf("the deleted report's file: %v", err)
		}
	})

	t.Run("a live report's file is still never removed by a removal called out of turn", func(t *testing.T) {
		rb := setupReports(t)
		r := rb.add(t, testenv.Report{Content: testenv.CSV(31, 20000)})
		_, err := rb.acts.RemoveReportFile(context.Background(), activities.RemoveReportFileInput{ReportID: r.ID.String()})
		assertErrType(t, err, activities.ErrInvalidInput)
		if _, err := os.Stat(filepath.Join(rb.dir, r.File)); err != nil {
			t.Fatalf("the live report's file: %v", err)
		}
	})
}

// A report the application changes while a run goes on so that the policy
// keeps it (its where no longer matches, a restore now holds its time) stays
// live, as a row changed before its batch does in move mode: the move
// re-checks what the listing checked, and the run does not fail on it.
func TestReportRequalifiedDuringTheRun(t *testing.T) {
	withWhere := func(t *testing.T) *policy.Table {
		t.Helper()
		e, err := policy.Lookup("reports")
		if err != nil {
			t.Fatal(err)
		}
		e.Where = []policy.Condition{{Column: "format", Op: "=", Values: []string{"csv"}}}
		return &e
	}
	cases := []struct {
		name   string
		entry  func(t *testing.T) *policy.Table
		change func(t *testing.T, rb reportBundle, r testenv.Report)
	}{
		{"its where no longer matches", withWhere, func(t *testing.T, rb reportBundle, r testenv.Report) {
			if _, err := rb.db.Exec(context.Background(), `UPDATE reports SET format = 'pdf' WHERE id = $1`, r.ID); err != nil {
				t.Fatal(err)
			}
		}},
		{"a restore now holds its time", func(*testing.T) *policy.Table { return nil }, func(t *testing.T, rb reportBundle, r testenv.Report) {
			if _, err := rb.db.Exec(context.Background(), `INSERT INTO archive_holds (table_name, after_ts, before_ts, hold_until, workflow_id)
				VALUES ('reports', $1, $2, now() + interval '1 day', 'restore-reports')`, r.Created.Add(-time.Hour), r.Created.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rb := setupReports(t)
			e := c.entry(t)
			r := rb.add(t, testenv.Report{Content: testenv.CSV(40+i, 20000)})
			up, err := rb.acts.UploadReport(context.Background(), activities.UploadReportInput{ReportID: r.ID.String(), Entry: e})
			if err != nil || up.AlreadyArchived {
				t.Fatalf("UploadReport = %+v, %v", up, err)
			}
			c.change(t, rb, r)
			fin, err := rb.acts.FinalizeReport(context.Background(), activities.FinalizeReportInput{
				ReportID: r.ID.String(), JobID: rb.job, BatchID: uuid.NewString(), Object: up.Object, Entry: e})
			if err != nil {
				t.Fatalf("FinalizeReport: %v", err)
			}
			if fin.RowsMoved != 0 {
				t.Fatalf("finalize moved %d rows of a report the policy now keeps", fin.RowsMoved)
			}
			rm, err := rb.acts.RemoveReportFile(context.Background(), activities.RemoveReportFileInput{ReportID: r.ID.String(), Entry: e})
			if err != nil || rm.Removed {
				t.Fatalf("RemoveReportFile of a report the policy now keeps = %+v, %v: want nothing done, no failure", rm, err)
			}
			if n := testenv.Count(t, rb.db, `SELECT count(*) FROM reports WHERE id = $1`, r.ID); n != 1 {
				t.Fatal("the reports row is gone")
			}
			if _, err := os.Stat(filepath.Join(rb.dir, r.File)); err != nil {
				t.Fatalf("the kept report's file: %v", err)
			}
		})
	}
}
