package activities_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"go.temporal.io/sdk/temporal"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/coldstore"
	"github.com/mockupaws/archiver/internal/objectstore"
	"github.com/mockupaws/archiver/internal/policy"
	"github.com/mockupaws/archiver/internal/testenv"
)

// exportFixture: logs archived into monthly partitions from 2017-11 on;
// with retention at `before`, 16 partitions (2017-11 .. 2019-02) expire.
func exportFixture(t *testing.T, format string) (bundle, *objectstore.Store, policy.Table, map[string][2]string) {
	t.Helper()
	b := setup(t)
	var times []time.Time
	for ts := time.Date(2017, 11, 20, 0, 0, 0, 0, time.UTC); ts.Before(cutoff); ts = ts.Add(13 * time.Hour) {
		times = append(times, ts)
	}
	testenv.InsertLogs(t, b.db, times)
	b.ensure(t)
	for i := 1; b.move(t, fmt.Sprintf("00000000-0000-4000-8000-%012d", i), 5000).More; i++ {
	}
	st := testenv.Store(t)
	b.acts.Store = st
	entry, _ := policy.Lookup("logs")
	entry.Export = &policy.Export{Prefix: "cold", Format: format}
	// Each expiring partition's count and content checksum, before.
	want := map[string][2]string{}
	for _, p := range partitions(t, b, "scenario_logs_archive") {
		if p >= "scenario_logs_archive_y2019m03" {
			continue
		}
		desc, err := catalog.Describe(context.Background(), b.db, p)
		if err != nil {
			t.Fatal(err)
		}
		var n, sum string
		if err := b.db.QueryRow(context.Background(), coldstore.ChecksumSQL(p, coldstore.Columns(desc))).Scan(&n, &sum); err != nil {
			t.Fatal(err)
		}
		want[p] = [2]string{n, sum}
	}
	if len(want) != 16 {
		t.Fatalf("fixture: %d expiring partitions, want 16", len(want))
	}
	return b, st, entry, want
}

func retentionBefore() time.Time { return asOf.Add(-7 * 365 * 24 * time.Hour) }

func objectKeys(t *testing.T, st *objectstore.Store) []string {
	t.Helper()
	var out []string
	p := s3.NewListObjectsV2Paginator(st.Client, &s3.ListObjectsV2Input{Bucket: aws.String(st.Bucket())})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page.Contents {
			out = append(out, aws.ToString(o.Key))
		}
	}
	return out
}

// checkExports: one dropped manifest per expired partition, matching the
// partition's count and checksum from before, one object each, no other.
func checkExports(t *testing.T, b bundle, st *objectstore.Store, want map[string][2]string, deep bool) []activities.Export {
	t.Helper()
	ctx := context.Background()
	ex, err := activities.Exports(ctx, b.db, "scenario_logs_archive")
	if err != nil {
		t.Fatal(err)
	}
	if len(ex) != len(want) {
		t.Fatalf("%d manifests, want %d", len(ex), len(want))
	}
	keys := map[string]bool{}
	for _, k := range objectKeys(t, st) {
		keys[k] = true
	}
	if len(keys) != len(want) {
		t.Fatalf("%d objects in the bucket, want %d: %v", len(keys), len(want), keys)
	}
	for _, e := range ex {
		w, ok := want[e.Partition]
		if !ok {
			t.Fatalf("manifest for %s, which was not to expire", e.Partition)
		}
		if e.State != activities.ExportDropped || e.Checksum != w[1] || itoa(e.Rows) != w[0] {
			t.Fatalf("%s: manifest %s %d rows %s; want dropped, %s rows, %s", e.Partition, e.State, e.Rows, e.Checksum, w[0], w[1])
		}
		if !keys[e.Key] {
			t.Fatalf("%s: no object at %s", e.Partition, e.Key)
		}
		if testenv.Count(t, b.db, `SELECT count(*) FROM pg_class WHERE relname = $1`, e.Partition) != 0 {
			t.Fatalf("%s still exists", e.Partition)
		}
		if err := activities.VerifyExport(ctx, st, e, deep, t.TempDir()); err != nil {
			t.Fatalf("verify %s: %v", e.Key, err)
		}
	}
	return ex
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestExportBeforeDrop(t *testing.T) {
	for _, format := range []string{policy.ExportParquet, policy.ExportCSV} {
		t.Run(format, func(t *testing.T) {
			b, st, entry, want := exportFixture(t, format)
			ctx := context.Background()
			res, err := b.acts.ApplyRetention(ctx, activities.RetentionInput{Table: "logs", Entry: &entry, Before: retentionBefore()})
			if err != nil {
				t.Fatalf("retention: %v", err)
			}
			if len(res.Partitions) != 16 || len(res.Exports) != 16 || res.ExportedRows == 0 {
				t.Fatalf("retention result %+v", res)
			}
			ex := checkExports(t, b, st, want, true)
			// Hive-style keys.
			if k := ex[0].Key; k[:len("cold/scenario_logs_archive/year=2017/month=11/part-scenario_logs_archive_y2017m11-")] != "cold/scenario_logs_archive/year=2017/month=11/part-scenario_logs_archive_y2017m11-" {
				t.Fatalf("key %s", k)
			}
			// A second pass exports nothing and uploads nothing.
			again, err := b.acts.ApplyRetention(ctx, activities.RetentionInput{Table: "logs", Entry: &entry, Before: retentionBefore()})
			if err != nil || len(again.Partitions) != 0 {
				t.Fatalf("second pass %+v (%v)", again, err)
			}
			checkExports(t, b, st, want, false)
		})
	}
}

// TestExportResumes stops the retention after each step of one
// partition's export (the activity's context is cancelled there, as a lost
// worker's would be) and runs it again: every time, exactly one object and
// one manifest per partition, and no partition dropped unverified.
func TestExportResumes(t *testing.T) {
	for _, step := range []string{"manifest", "uploaded", "verified", "dropped"} {
		t.Run(step, func(t *testing.T) {
			b, st, entry, want := exportFixture(t, policy.ExportParquet)
			ctx, cancel := context.WithCancel(context.Background())
			seen := 0
			b.acts.AfterExportStep = func(s, _ string) {
				if s == step {
					seen++
					if seen == 3 { // in the third partition
						cancel()
					}
				}
			}
			if _, err := b.acts.ApplyRetention(ctx, activities.RetentionInput{Table: "logs", Entry: &entry, Before: retentionBefore()}); err == nil && step != "dropped" {
				t.Fatal("the interrupted retention succeeded")
			}
			// Nothing unverified is gone.
			ex, err := activities.Exports(context.Background(), b.db, "scenario_logs_archive")
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ex {
				gone := testenv.Count(t, b.db, `SELECT count(*) FROM pg_class WHERE relname = $1`, e.Partition) == 0
				if gone && e.State == activities.ExportUploading {
					t.Fatalf("%s was dropped with its export unverified", e.Partition)
				}
			}
			b.acts.AfterExportStep = nil
			if _, err := b.acts.ApplyRetention(context.Background(), activities.RetentionInput{Table: "logs", Entry: &entry, Before: retentionBefore()}); err != nil {
				t.Fatalf("resumed retention: %v", err)
			}
			checkExports(t, b, st, want, false)
		})
	}
}

// TestVerifyCatchesCorruption: an object changed on S3 after its export
// fails verification, shallow (SHA-256) and deep.
func TestVerifyCatchesCorruption(t *testing.T) {
	b, st, entry, want := exportFixture(t, policy.ExportParquet)
	ctx := context.Background()
	if _, err := b.acts.ApplyRetention(ctx, activities.RetentionInput{Table: "logs", Entry: &entry, Before: retentionBefore()}); err != nil {
		t.Fatal(err)
	}
	ex := checkExports(t, b, st, want, true)
	e := ex[4]
	body, err := st.Get(ctx, e.Key)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(body)
	body.Close()
	data[len(data)/2] ^= 0x01
	if _, err := st.Client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(st.Bucket()), Key: aws.String(e.Key), Body: bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}
	for _, deep := range []bool{false, true} {
		err := activities.VerifyExport(ctx, st, e, deep, t.TempDir())
		var appErr *temporal.ApplicationError
		if !errors.As(err, &appErr) || appErr.Type() != activities.ErrExportMismatch {
			t.Fatalf("deep=%v: verify of a corrupted object: %v, want %s", deep, err, activities.ErrExportMismatch)
		}
	}
}

// TestRestoreRefusals: a restored row whose key is live again, or whose
// live partition is gone, fails the batch at once (non-retryable, saying
// what to do) and moves nothing.
func TestRestoreRefusals(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	times := testenv.SpreadTimes(50, cutoff.Add(-24*time.Hour), time.Hour)
	ids := testenv.InsertLogs(t, b.db, times)
	b.ensure(t)
	b.move(t, "00000000-0000-4000-8000-000000000001", 1000)
	if _, err := b.db.Exec(ctx, `GRANT INSERT ON scenario_logs TO archiver_worker`); err != nil {
		t.Fatal(err)
	}
	// A row with an archived row's id is live again.
	if _, err := b.db.Exec(ctx, `INSERT INTO scenario_logs SELECT id, scenario_id, received_at, message_hash, message_preview, source, size_bytes, has_pii, token_count, sqs_blocks
		FROM scenario_logs_archive WHERE id = $1`, ids[7]); err != nil {
		t.Fatal(err)
	}
	_, err := b.acts.RestoreBatch(ctx, activities.RestoreBatchInput{Table: "logs", JobID: b.jobID, BatchID: "00000000-0000-4000-8000-0000000000f1",
		After: times[0].Add(-time.Hour), Before: cutoff, Limit: 1000})
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || !appErr.NonRetryable() || appErr.Type() != activities.ErrCannotRestore || !strings.Contains(err.Error(), "already holds a row with the key") {
		t.Fatalf("restore over a live key: %v, want a non-retryable %s", err, activities.ErrCannotRestore)
	}
	if strings.Contains(err.Error(), ids[7].String()) {
		t.Fatal("the key's value is in the error")
	}
	if n := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_logs_archive`); n != 50 {
		t.Fatalf("%d rows archived after the refused restore, want all 50", n)
	}
}
