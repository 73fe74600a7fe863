//go:build faults

package faults

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/workflows"
)

// TestS3OutageDuringReportsRun: the S3 server stops in the middle of a
// reports run and starts again; uploads retry, no local file is removed
// before its object is verified, the run completes, and every archived
// report's object restores the original bytes.
func TestS3OutageDuringReportsRun(t *testing.T) {
	if !long() {
		t.Skip("long fault test: make test-faults")
	}
	admin, dbURL := testenv.NewDB(t)
	store := testenv.Store(t)
	dir := t.TempDir()
	var reports []testenv.Report
	for i := 0; i < 24; i++ {
		id := uuid.New()
		reports = append(reports, testenv.Report{ID: id, Created: asOf.AddDate(0, -7, -i), Format: "csv",
			File: filepath.Join("r", id.String()+".csv"), Content: testenv.CSV(i+1, 3<<20)})
	}
	testenv.InsertReports(t, admin, dir, reports)
	c := testenv.Temporal(t)
	queue := "faults-" + testenv.RandomID()
	w := newWorker(t, workerURL(t, dbURL), queue, "REPORTS_DIR="+dir, "REPORTS_ARCHIVE_BUCKET="+store.Bucket())
	run := start(t, c, queue, workflows.ArchiveInput{Tables: []string{"reports"}, AsOf: asOf, BatchSize: 4, ActivityTimeout: 10 * time.Second})

	deadline := time.Now().Add(2 * time.Minute)
	for count(context.Background(), admin, `SELECT count(*) FROM reports_archive`) < 3 {
		if time.Now().After(deadline) {
			t.Fatal("no report archived in 2 minutes")
		}
		time.Sleep(20 * time.Millisecond)
	}
	stack(t, "s3-stop")
	// During the outage: a report whose file is gone must be archived with a
	// verified object; check it while uploads fail.
	outage := time.Now()
	for time.Since(outage) < 4*time.Second {
		assertNoFileLostWithoutObject(t, admin, dir, reports)
		time.Sleep(250 * time.Millisecond)
	}
	stack(t, "s3-start")

	var res workflows.ArchiveResult
	if err := testenv.Wait(t, c, run, runWait(), &res); err != nil {
		t.Fatalf("the run did not complete after the outage: %v\nworker output:\n%s", err, w.Output())
	}
	if res.Tables[0].RowsArchived != int64(len(reports)) {
		t.Fatalf("archived %d reports, want %d", res.Tables[0].RowsArchived, len(reports))
	}
	for _, r := range reports {
		var loc string
		if err := admin.QueryRow(context.Background(), `SELECT s3_location FROM reports_archive WHERE id = $1 AND deleted_locally`, r.ID).Scan(&loc); err != nil {
			t.Fatalf("report %s not archived and removed: %v", r.ID, err)
		}
		if !bytes.Equal(testenv.Restore(t, store, loc, "gzip"), r.Content) {
			t.Fatalf("report %s: the object does not restore the original bytes", r.ID)
		}
		if _, err := os.Stat(filepath.Join(dir, r.File)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("report %s: local file still there", r.ID)
		}
	}
	t.Logf("FAULTS s3: %d reports of 3 MiB, S3 down 4 s mid-run, all restored byte for byte", len(reports))
}

// assertNoFileLostWithoutObject: any report whose local file is gone is in
// reports_archive (its object was verified before the metadata moved).
func assertNoFileLostWithoutObject(t *testing.T, admin *pgxpool.Pool, dir string, reports []testenv.Report) {
	t.Helper()
	for _, r := range reports {
		if _, err := os.Stat(filepath.Join(dir, r.File)); !errors.Is(err, os.ErrNotExist) {
			continue
		}
		if n := count(context.Background(), admin, `SELECT count(*) FROM reports_archive WHERE id = '`+r.ID.String()+`'`); n != 1 {
			t.Fatalf("report %s: local file removed but the report is not archived", r.ID)
		}
	}
}
