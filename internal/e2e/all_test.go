package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/workflows"
)

// TestAllTables: one run over eight years of logs, metrics and reports
// archives all three as the policy says, records a completed job per table
// with the ledger's counts, and a second run with the same as-of changes
// nothing.
func TestAllTables(t *testing.T) {
	b := setup(t) // logs: three years
	dir := t.TempDir()
	b.acts.Store, b.acts.ReportsDir = testenv.Store(t), dir
	ctx := context.Background()

	// Logs back to eight years: some past the 7-year retention once archived.
	testenv.InsertLogs(t, b.db, testenv.SpreadTimes(5*365, asOf.AddDate(-3, 0, 0), 24*time.Hour))
	// Metrics: 8 years, 6 samples a day.
	metricsEnd := activities.DayStart(asOf)
	testenv.InsertMetrics(t, b.db, testenv.MetricSamples(metricsEnd, 8*365, 6))
	// Reports: one a month for 8 years, 20-60 KB each.
	var reports []testenv.Report
	for i := 0; i < 96; i++ {
		id := uuid.New()
		reports = append(reports, testenv.Report{ID: id, Created: asOf.AddDate(0, -i, -1), Format: "csv",
			File: filepath.Join("r", id.String()+".csv"), Content: testenv.CSV(i+1, 20000+i*400)})
	}
	testenv.InsertReports(t, b.db, dir, reports)

	in := workflows.ArchiveInput{Tables: []string{"logs", "metrics", "reports"}, AsOf: asOf}
	res, run, err := b.run(t, in)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	record(t, b.c, run, "archive-all-v8.json")
	for _, tr := range res.Tables {
		if tr.Status != workflows.StatusCompleted || tr.RowsArchived == 0 {
			t.Fatalf("%s: %+v", tr.Table, tr)
		}
	}
	byTable := map[string]workflows.TableResult{}
	for _, tr := range res.Tables {
		byTable[tr.Table] = tr
	}

	// Logs: nothing eligible left; partitions wholly past 7 years dropped.
	logsCut := asOf.Add(-365 * 24 * time.Hour)
	if n := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_logs WHERE received_at < $1`, logsCut); n != 0 {
		t.Fatalf("%d eligible log rows left", n)
	}
	if byTable["logs"].Retention == nil || len(byTable["logs"].Retention.Partitions) == 0 {
		t.Fatal("no log partition past retention was dropped")
	}
	if n := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_logs_archive WHERE received_at < $1`, asOf.Add(-7*365*24*time.Hour).AddDate(0, -1, 0)); n != 0 {
		t.Fatalf("%d archived log rows older than retention remain", n)
	}

	// Metrics: only aggregates, one per group and day; sample counts add up.
	metricsCut := activities.DayStart(asOf.Add(-730 * 24 * time.Hour))
	if n := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_metrics WHERE timestamp < $1`, metricsCut); n != 0 {
		t.Fatalf("%d eligible samples left", n)
	}
	kept := testenv.Count(t, b.db, `SELECT COALESCE(sum(sample_count), 0) FROM scenario_metrics_archive`)
	deleted := byTable["metrics"].RowsDeleted
	if kept > deleted || kept == 0 {
		t.Fatalf("archive holds %d samples' aggregates, %d samples were deleted", kept, deleted)
	}

	// Reports: eligible ones offloaded, restorable, local files gone.
	reportsCut := asOf.Add(-180 * 24 * time.Hour)
	var eligible int
	for _, r := range reports {
		if !r.Created.Before(reportsCut) {
			continue
		}
		eligible++
		_, err := os.Stat(filepath.Join(dir, r.File))
		if !os.IsNotExist(err) {
			t.Fatalf("report %s: local file still there", r.ID)
		}
	}
	if got := byTable["reports"].RowsArchived; got != int64(eligible) {
		t.Fatalf("reports archived %d, want %d", got, eligible)
	}
	// Restore one byte for byte (metadata kept 5 years: the oldest are
	// dropped with their partitions, the objects stay for the lifecycle).
	recent := reports[7]
	var loc string
	if err := b.db.QueryRow(ctx, `SELECT s3_location FROM reports_archive WHERE id = $1`, recent.ID).Scan(&loc); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(testenv.Restore(t, b.acts.Store, loc, "gzip"), recent.Content) {
		t.Fatal("restored report differs from the original")
	}

	// archive_jobs: one completed row per table with the ledger's counts.
	rows, err := b.db.Query(ctx, `SELECT job_type, status, records_archived, records_deleted, bytes_archived FROM archive_jobs ORDER BY job_type`)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		var typ, status string
		var archived, del, bytesN int64
		if err := rows.Scan(&typ, &status, &archived, &del, &bytesN); err != nil {
			t.Fatal(err)
		}
		tr := byTable[typ]
		if status != "completed" || archived != tr.RowsArchived+tr.RowsMerged || del != tr.RowsDeleted || bytesN != tr.Bytes || bytesN <= 0 {
			t.Fatalf("archive_jobs %s: %s %d %d %d, want completed with %+v", typ, status, archived, del, bytesN, tr)
		}
		n++
	}
	if n != 3 {
		t.Fatalf("%d archive_jobs rows, want 3", n)
	}

	// A second run with the same as-of changes nothing.
	before := b.snapshot(t)
	metricsBefore := testenv.Count(t, b.db, `SELECT count(*) + COALESCE(sum(sample_count), 0) FROM scenario_metrics_archive`)
	again, _, err := b.run(t, in)
	if err != nil {
		t.Fatalf("second run: %v", err)
	}
	for _, tr := range again.Tables {
		if tr.RowsArchived != 0 || tr.RowsDeleted != 0 || (tr.Retention != nil && len(tr.Retention.Partitions) != 0) {
			t.Fatalf("second run changed %s: %+v", tr.Table, tr)
		}
	}
	if after := b.snapshot(t); after.liveSum != before.liveSum || after.archSum != before.archSum {
		t.Fatal("second run changed the log tables")
	}
	if m := testenv.Count(t, b.db, `SELECT count(*) + COALESCE(sum(sample_count), 0) FROM scenario_metrics_archive`); m != metricsBefore {
		t.Fatal("second run changed the metrics archive")
	}
}
