package activities_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/policy"
	"github.com/mockupaws/archiver/internal/testenv"
)

// TestHoldWindowPerWindow: a hold belongs to its window. HoldWindow
// retried with the same window keeps one row; another window of the same
// table under the same workflow id (every restore of a table runs as
// restore-<table>) adds its own, and batches see both.
func TestHoldWindowPerWindow(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	until := time.Now().UTC().Add(24 * time.Hour).Truncate(time.Microsecond)
	jan := activities.RestoreInput{Table: "logs", WorkflowID: "restore-logs", HoldUntil: until,
		After: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), Before: time.Date(2024, 2, 1, 0, 0, 0, 0, time.UTC)}
	jun := jan
	jun.After, jun.Before = time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC), time.Date(2024, 7, 1, 0, 0, 0, 0, time.UTC)
	for _, in := range []activities.RestoreInput{jan, jan, jun, jun} {
		if err := b.acts.HoldWindow(ctx, in); err != nil {
			t.Fatalf("HoldWindow %s .. %s: %v", in.After, in.Before, err)
		}
	}
	for _, w := range []activities.RestoreInput{jan, jun} {
		if n := testenv.Count(t, b.db, `SELECT count(*) FROM archive_holds WHERE table_name = 'scenario_logs' AND workflow_id = 'restore-logs'
			AND after_ts = $1 AND before_ts = $2 AND hold_until = $3`, w.After, w.Before, until); n != 1 {
			t.Errorf("%d holds of %s .. %s, want 1", n, w.After.Format(time.DateOnly), w.Before.Format(time.DateOnly))
		}
	}
	if n := testenv.Count(t, b.db, `SELECT count(*) FROM archive_holds`); n != 2 {
		t.Fatalf("%d holds after holding two windows (each twice), want 2", n)
	}
	// Rows of both windows stay live through a batch.
	testenv.InsertLogs(t, b.db, []time.Time{
		time.Date(2024, 1, 10, 0, 0, 0, 0, time.UTC), time.Date(2024, 3, 10, 0, 0, 0, 0, time.UTC), time.Date(2024, 6, 10, 0, 0, 0, 0, time.UTC)})
	b.ensure(t)
	if res := b.move(t, "00000000-0000-4000-8000-0000000000a1", 1000); res.RowsMoved != 1 {
		t.Fatalf("the batch moved %d rows, want only March's", res.RowsMoved)
	}
	if n := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_logs`); n != 2 {
		t.Fatalf("%d rows live after the batch, want the two held", n)
	}
}

// TestRestoreExportGeneratedAndIdentity: a live table with a stored
// generated column and an identity column GENERATED ALWAYS, archived,
// exported and dropped by retention, comes back from the export: the
// identity values as they were, the generated ones computed anew and equal
// to the originals.
func TestRestoreExportGeneratedAndIdentity(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	for _, sql := range []string{
		`ALTER TABLE scenario_logs ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY,
		     ADD COLUMN size_kb numeric GENERATED ALWAYS AS (size_bytes / 1024.0) STORED`,
		`ALTER TABLE scenario_logs_archive ADD COLUMN seq bigint, ADD COLUMN size_kb numeric`,
	} {
		if _, err := b.db.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	var times []time.Time
	for ts := time.Date(2017, 11, 20, 0, 0, 0, 0, time.UTC); ts.Before(time.Date(2019, 6, 1, 0, 0, 0, 0, time.UTC)); ts = ts.Add(13 * time.Hour) {
		times = append(times, ts)
	}
	testenv.InsertLogs(t, b.db, times)
	// Identity values with gaps: new ones could not match by chance.
	if _, err := b.db.Exec(ctx, `DELETE FROM scenario_logs WHERE seq % 5 = 0`); err != nil {
		t.Fatal(err)
	}
	const cols = "id, received_at, size_bytes, seq, size_kb"
	const window = "received_at >= '2018-01-01 00:00:00+00' AND received_at < '2018-02-01 00:00:00+00'"
	wantN, want := digest(t, b, cols, "scenario_logs", window)
	if wantN == 0 {
		t.Fatal("fixture: no rows in January 2018")
	}
	b.ensure(t)
	for i := 1; b.move(t, "00000000-0000-4000-8000-0000000001"+itoa(int64(10+i)), 5000).More; i++ {
	}
	st := testenv.Store(t)
	b.acts.Store = st
	entry, _ := policy.Lookup("logs")
	entry.Export = &policy.Export{Prefix: "cold", Format: policy.ExportParquet}
	if _, err := b.acts.ApplyRetention(ctx, activities.RetentionInput{Table: "logs", Entry: &entry, Before: retentionBefore()}); err != nil {
		t.Fatalf("retention: %v", err)
	}
	ex, err := activities.Exports(ctx, b.db, "scenario_logs_archive")
	if err != nil {
		t.Fatal(err)
	}
	var id int64
	for _, e := range ex {
		if e.Partition == "scenario_logs_archive_y2018m01" && e.State == activities.ExportDropped {
			id = e.ID
		}
	}
	if id == 0 {
		t.Fatalf("no dropped export of scenario_logs_archive_y2018m01 among %d", len(ex))
	}
	if _, err := b.db.Exec(ctx, `GRANT INSERT ON scenario_logs TO archiver_worker`); err != nil {
		t.Fatal(err)
	}
	res, err := b.acts.RestoreExport(ctx, activities.RestoreExportInput{Table: "logs", Entry: &entry, JobID: b.jobID,
		BatchID: "00000000-0000-4000-8000-0000000002f1", ExportID: id})
	if err != nil {
		t.Fatalf("RestoreExport: %v", err)
	}
	if res.RowsMoved != wantN {
		t.Fatalf("restored %d rows, want %d", res.RowsMoved, wantN)
	}
	if n, sum := digest(t, b, cols, "scenario_logs", window); n != wantN || sum != want {
		t.Fatalf("January 2018 after the restore: %d rows (%s), want %d (%s)", n, sum, wantN, want)
	}
}

// TestArchiveColumnComputesNothing: an archive column that receives live
// values but computes its own (generated, as LIKE ... INCLUDING ALL makes
// it) or refuses them (an identity GENERATED ALWAYS) is refused before any
// batch, with the statement that makes it plain; nothing moves.
func TestArchiveColumnComputesNothing(t *testing.T) {
	for name, archiveCol := range map[string]string{
		"DROP EXPRESSION": `size_kb numeric GENERATED ALWAYS AS (size_bytes / 1024.0) STORED`,
		"DROP IDENTITY":   `size_kb bigint GENERATED ALWAYS AS IDENTITY`,
	} {
		t.Run(name, func(t *testing.T) {
			b := setup(t)
			ctx := context.Background()
			if _, err := b.db.Exec(ctx, `ALTER TABLE scenario_logs ADD COLUMN size_kb bigint NOT NULL DEFAULT 1; ALTER TABLE scenario_logs_archive ADD COLUMN `+archiveCol); err != nil {
				t.Fatal(err)
			}
			testenv.InsertLogs(t, b.db, testenv.SpreadTimes(20, cutoff.Add(-24*time.Hour), time.Hour))
			_, err := b.acts.EnsurePartitions(ctx, activities.EnsurePartitionsInput{Table: "logs", Cutoff: cutoff})
			if err == nil {
				_, err = b.acts.MoveBatch(ctx, activities.MoveBatchInput{Table: "logs", JobID: b.jobID, BatchID: "00000000-0000-4000-8000-0000000003a1", Cutoff: cutoff, Limit: 100})
			}
			assertNonRetryable(t, err)
			if !strings.Contains(err.Error(), "scenario_logs_archive.size_kb") || !strings.Contains(err.Error(), name) {
				t.Fatalf("refusal %q: want it to name scenario_logs_archive.size_kb and %s", err, name)
			}
			if n := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_logs`); n != 20 {
				t.Fatalf("%d rows live after the refusal, want 20", n)
			}
		})
	}
}

// digest is the count and an order-independent digest of the given
// columns of table's rows that meet where.
func digest(t *testing.T, b bundle, cols, table, where string) (int64, string) {
	t.Helper()
	var n int64
	var sum string
	if err := b.db.QueryRow(context.Background(), `SELECT count(*), COALESCE(md5(string_agg(h, '' ORDER BY h)), '')
		FROM (SELECT md5(row(`+cols+`)::text) AS h FROM `+table+` WHERE `+where+`) x`).Scan(&n, &sum); err != nil {
		t.Fatalf("digest %s: %v", table, err)
	}
	return n, sum
}
