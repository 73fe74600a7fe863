package activities_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/temporal"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/objectstore"
	"github.com/mockupaws/archiver/internal/testenv"
)

var reportsCutoff = asOf.Add(-180 * 24 * time.Hour)

type reportBundle struct {
	bundle
	dir   string
	store *objectstore.Store
	job   string
}

func setupReports(t *testing.T) reportBundle {
	t.Helper()
	b := setup(t)
	rb := reportBundle{bundle: b, dir: t.TempDir(), store: testenv.Store(t)}
	rb.acts.Store, rb.acts.ReportsDir = rb.store, rb.dir
	rb.job = uuid.NewString()
	if _, err := rb.acts.StartJob(context.Background(), activities.StartJobInput{
		JobID: rb.job, Table: "reports", WorkflowID: "wf", RunID: "run", AsOf: asOf, Cutoff: reportsCutoff}); err != nil {
		t.Fatal(err)
	}
	return rb
}

func (rb reportBundle) add(t *testing.T, r testenv.Report) testenv.Report {
	t.Helper()
	if r.ID == uuid.Nil {
		r.ID = uuid.New()
	}
	if r.Created.IsZero() {
		r.Created = reportsCutoff.Add(-48 * time.Hour)
	}
	if r.Format == "" {
		r.Format = "csv"
	}
	if r.File == "" {
		r.File = filepath.Join("2025", r.ID.String()+".csv")
	}
	testenv.InsertReports(t, rb.db, rb.dir, []testenv.Report{r})
	if _, err := rb.acts.EnsurePartitions(context.Background(), activities.EnsurePartitionsInput{Table: "reports", Cutoff: reportsCutoff}); err != nil {
		t.Fatal(err)
	}
	return r
}

func (rb reportBundle) upload(t *testing.T, id uuid.UUID) (activities.UploadReportResult, error) {
	t.Helper()
	return rb.acts.UploadReport(context.Background(), activities.UploadReportInput{ReportID: id.String()})
}

func (rb reportBundle) finalize(t *testing.T, id uuid.UUID, batch string, obj activities.ReportObject) activities.FinalizeReportResult {
	t.Helper()
	res, err := rb.acts.FinalizeReport(context.Background(), activities.FinalizeReportInput{ReportID: id.String(), JobID: rb.job, BatchID: batch, Object: obj})
	if err != nil {
		t.Fatalf("FinalizeReport: %v", err)
	}
	return res
}

// restore downloads and decompresses a report's object.
func (rb reportBundle) restore(t *testing.T, id uuid.UUID) []byte {
	t.Helper()
	var loc, comp string
	if err := rb.db.QueryRow(context.Background(), `
		SELECT s3_location, extra_data->'archive'->>'compression' FROM reports_archive WHERE id = $1`, id).Scan(&loc, &comp); err != nil {
		t.Fatalf("archived row of %s: %v", id, err)
	}
	return testenv.Restore(t, rb.store, loc, comp)
}

func (rb reportBundle) assertUntouched(t *testing.T, r testenv.Report) {
	t.Helper()
	if n := testenv.Count(t, rb.db, `SELECT count(*) FROM reports WHERE id = $1`, r.ID); n != 1 {
		t.Fatal("the reports row is gone")
	}
	if n := testenv.Count(t, rb.db, `SELECT count(*) FROM reports_archive WHERE id = $1`, r.ID); n != 0 {
		t.Fatal("the report was archived")
	}
	if r.Content != nil && !r.Missing {
		got, err := os.ReadFile(filepath.Join(rb.dir, r.File))
		if err != nil || !bytes.Equal(got, r.Content) {
			t.Fatalf("the local file changed or is gone: %v", err)
		}
	}
}

func assertErrType(t *testing.T, err error, typ string) {
	t.Helper()
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || appErr.Type() != typ || !appErr.NonRetryable() {
		t.Fatalf("error %v: want a non-retryable %s", err, typ)
	}
}

func TestReports(t *testing.T) {
	for _, comp := range []string{"gzip", "zstd"} {
		t.Run("upload, finalize, remove: the object restores the original bytes ("+comp+")", func(t *testing.T) {
			rb := setupReports(t)
			rb.acts.Compression = comp
			r := rb.add(t, testenv.Report{Content: testenv.CSV(7, 12<<20)}) // multipart with 5 MiB parts
			up, err := rb.upload(t, r.ID)
			if err != nil {
				t.Fatalf("UploadReport: %v", err)
			}
			if up.Object.SourceBytes != int64(len(r.Content)) || up.Object.Size >= up.Object.SourceBytes || up.Object.Checksum == "" {
				t.Fatalf("uploaded %+v: want the original size, a smaller object and a server checksum", up.Object)
			}
			fin := rb.finalize(t, r.ID, uuid.NewString(), up.Object)
			if fin.RowsMoved != 1 || fin.Bytes != int64(len(r.Content)) {
				t.Fatalf("finalize %+v", fin)
			}
			if rm, err := rb.acts.RemoveReportFile(context.Background(), activities.RemoveReportFileInput{ReportID: r.ID.String()}); err != nil || !rm.Removed {
				t.Fatalf("RemoveReportFile: %+v, %v", rm, err)
			}
			if !bytes.Equal(rb.restore(t, r.ID), r.Content) {
				t.Fatal("the object does not restore the original bytes")
			}
			if _, err := os.Stat(filepath.Join(rb.dir, r.File)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("local file still there: %v", err)
			}
			var deleted bool
			var size int64
			var loc string
			if err := rb.db.QueryRow(context.Background(), `SELECT deleted_locally, file_size_bytes, s3_location FROM reports_archive WHERE id = $1`, r.ID).Scan(&deleted, &size, &loc); err != nil {
				t.Fatal(err)
			}
			want := "s3://" + rb.store.Bucket() + "/" + activities.ReportKey(r.ID.String(), "csv", r.Created, comp)
			if !deleted || size != int64(len(r.Content)) || loc != want {
				t.Fatalf("archived row: deleted_locally=%v size=%d location=%s; want true, %d, %s", deleted, size, loc, len(r.Content), want)
			}
			if n := testenv.Count(t, rb.db, `SELECT count(*) FROM reports WHERE id = $1`, r.ID); n != 0 {
				t.Fatal("the reports row is still there")
			}
		})
	}

	t.Run("an upload to a missing bucket leaves the row and the file untouched", func(t *testing.T) {
		rb := setupReports(t)
		r := rb.add(t, testenv.Report{Content: testenv.CSV(1, 1000)})
		missing, err := objectstore.New(context.Background(), objectstore.Options{
			Bucket: "missing-" + testenv.RandomID(), Endpoint: os.Getenv("AWS_ENDPOINT_URL"), Region: "us-east-1"})
		if err != nil {
			t.Fatal(err)
		}
		rb.acts.Store = missing
		_, err = rb.upload(t, r.ID)
		assertErrType(t, err, activities.ErrStorageConfig)
		rb.assertUntouched(t, r)
	})

	t.Run("paths outside REPORTS_DIR are refused, by .. or by symlink; a missing file too", func(t *testing.T) {
		rb := setupReports(t)
		outside := t.TempDir()
		secret := filepath.Join(outside, "secret.csv")
		if err := os.WriteFile(secret, []byte("not yours"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(secret, filepath.Join(rb.dir, "link.csv")); err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(rb.dir, secret)
		for _, r := range []testenv.Report{
			{File: rel},        // ../<tmp>/secret.csv
			{File: secret},     // absolute, outside
			{File: "link.csv"}, // symlink pointing outside
			{File: "gone.csv", Missing: true, Content: []byte("x")},
		} {
			r = rb.add(t, r)
			_, err := rb.upload(t, r.ID)
			assertErrType(t, err, activities.ErrReportUnavailable)
			rb.assertUntouched(t, r)
		}
		if b, err := os.ReadFile(secret); err != nil || string(b) != "not yours" {
			t.Fatal("the file outside REPORTS_DIR was touched")
		}
	})

	t.Run("a crash between upload and finalize: the next attempt reuses the object and finishes", func(t *testing.T) {
		rb := setupReports(t)
		r := rb.add(t, testenv.Report{Content: testenv.CSV(3, 200000)})
		first, err := rb.upload(t, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		// ... the worker dies here; the next run starts over ...
		again, err := rb.upload(t, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !again.Reused || again.Object.Checksum != first.Object.Checksum {
			t.Fatalf("second upload %+v: want the verified object reused, not uploaded twice", again)
		}
		batch := uuid.NewString()
		rb.finalize(t, r.ID, batch, again.Object)
		// Finalize itself retried after its commit: recorded, nothing twice.
		if rep := rb.finalize(t, r.ID, batch, again.Object); !rep.Replayed || rep.RowsMoved != 1 {
			t.Fatalf("finalize retry %+v: want the recorded result", rep)
		}
		if n := testenv.Count(t, rb.db, `SELECT count(*) FROM reports_archive WHERE id = $1`, r.ID); n != 1 {
			t.Fatalf("%d archived rows, want 1", n)
		}
		// And an upload after finalize knows the report is archived.
		if after, err := rb.upload(t, r.ID); err != nil || !after.AlreadyArchived {
			t.Fatalf("upload after finalize: %+v, %v", after, err)
		}
	})

	t.Run("a crash between finalize and removal is finished by CompleteRemovals", func(t *testing.T) {
		rb := setupReports(t)
		r := rb.add(t, testenv.Report{Content: testenv.CSV(4, 5000)})
		up, err := rb.upload(t, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		rb.finalize(t, r.ID, uuid.NewString(), up.Object)
		if _, err := os.Stat(filepath.Join(rb.dir, r.File)); err != nil {
			t.Fatal("file removed before its removal step")
		}
		res, err := rb.acts.CompleteRemovals(context.Background(), activities.CompleteRemovalsInput{Limit: 10})
		if err != nil || res.Removed != 1 || res.Failed != 0 {
			t.Fatalf("CompleteRemovals = %+v, %v", res, err)
		}
		if _, err := os.Stat(filepath.Join(rb.dir, r.File)); !errors.Is(err, os.ErrNotExist) {
			t.Fatal("file not removed")
		}
		if n := testenv.Count(t, rb.db, `SELECT count(*) FROM reports_archive WHERE deleted_locally`); n != 1 {
			t.Fatal("deleted_locally not set")
		}
	})

	t.Run("no local file is removed when its object is gone", func(t *testing.T) {
		rb := setupReports(t)
		r := rb.add(t, testenv.Report{Content: testenv.CSV(5, 5000)})
		up, err := rb.upload(t, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		rb.finalize(t, r.ID, uuid.NewString(), up.Object)
		if _, err := rb.store.Client.DeleteObject(context.Background(), deleteInput(rb.store.Bucket(), up.Object.Key)); err != nil {
			t.Fatal(err)
		}
		if _, err := rb.acts.RemoveReportFile(context.Background(), activities.RemoveReportFileInput{ReportID: r.ID.String()}); err == nil {
			t.Fatal("RemoveReportFile removed a file whose object is missing")
		}
		if _, err := os.Stat(filepath.Join(rb.dir, r.File)); err != nil {
			t.Fatalf("local file removed without a verified object: %v", err)
		}
	})
}
