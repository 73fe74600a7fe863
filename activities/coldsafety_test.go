package activities_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/temporal"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/coldstore"
	"github.com/mockupaws/archiver/internal/objectstore"
	"github.com/mockupaws/archiver/internal/policy"
	"github.com/mockupaws/archiver/internal/testenv"
)

// firstExpiring is the partition retention exports first in exportFixture.
const firstExpiring = "scenario_logs_archive_y2017m11"

// measure is a table's row count and content checksum, as an export's
// manifest records them.
func measure(t *testing.T, db *pgxpool.Pool, table string) [2]string {
	t.Helper()
	ctx := context.Background()
	desc, err := catalog.Describe(ctx, db, table)
	if err != nil {
		t.Fatal(err)
	}
	if !desc.Exists() {
		t.Fatalf("%s does not exist", table)
	}
	var n, sum string
	if err := db.QueryRow(ctx, coldstore.ChecksumSQL("ONLY "+catalog.QuoteName(table), coldstore.Columns(desc))).Scan(&n, &sum); err != nil {
		t.Fatal(err)
	}
	return [2]string{n, sum}
}

// objectContent reads an export's object back into a temporary table, as
// a restore does, and returns its row count and content checksum.
func objectContent(t *testing.T, db *pgxpool.Pool, st *objectstore.Store, e activities.Export) [2]string {
	t.Helper()
	ctx := context.Background()
	body, err := st.Get(ctx, e.Key)
	if err != nil {
		t.Fatalf("get %s: %v", e.Key, err)
	}
	data, err := io.ReadAll(body)
	body.Close()
	if err != nil {
		t.Fatal(err)
	}
	var csv io.Reader
	if e.Format == coldstore.Parquet {
		var buf bytes.Buffer
		if _, err := coldstore.ParquetToCSV(bytes.NewReader(data), int64(len(data)), e.Columns, &buf); err != nil {
			t.Fatalf("read %s: %v", e.Key, err)
		}
		csv = &buf
	} else if csv, err = gzip.NewReader(bytes.NewReader(data)); err != nil {
		t.Fatalf("read %s: %v", e.Key, err)
	}
	var n, sum string
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, coldstore.TableSQL("CREATE TEMP TABLE", "readback", e.Columns)+" ON COMMIT DROP"); err != nil {
			return err
		}
		if _, err := tx.Conn().PgConn().CopyFrom(ctx, csv, `COPY readback FROM STDIN (FORMAT csv, HEADER true)`); err != nil {
			return err
		}
		return tx.QueryRow(ctx, coldstore.ChecksumSQL("readback", e.Columns)).Scan(&n, &sum)
	})
	if err != nil {
		t.Fatalf("load %s: %v", e.Key, err)
	}
	return [2]string{n, sum}
}

// addRow copies a row of a (detached) partition under a new id.
func addRow(t *testing.T, db *pgxpool.Pool, table string) {
	t.Helper()
	q := fmt.Sprintf(`INSERT INTO %[1]s SELECT (jsonb_populate_record(NULL::%[1]s, to_jsonb(x) || jsonb_build_object('id', gen_random_uuid()))).*
		FROM %[1]s x LIMIT 1`, catalog.Quote(table))
	if tag, err := db.Exec(context.Background(), q); err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("add a row to %s: %v", table, err)
	}
}

// contentOfObjects checks that every export's object holds exactly the
// rows want says its partition held when it was dropped.
func contentOfObjects(t *testing.T, b bundle, st *objectstore.Store, ex []activities.Export, want map[string][2]string) {
	t.Helper()
	for _, e := range ex {
		if got := objectContent(t, b.db, st, e); got != want[e.Partition] {
			t.Fatalf("%s: the object %s holds %s rows (%s); the partition held %s (%s) when it was dropped",
				e.Partition, e.Key, got[0], got[1], want[e.Partition][0], want[e.Partition][1])
		}
	}
}

// TestRetentionDropsOnlyExportedRows: a partition is dropped only when its
// export holds exactly its rows at that moment. Rows that reach it after
// its export was verified (written into the detached table, or moved in
// by a later run that attached it again for late rows of its month) are
// exported anew before the drop, never lost with it.
func TestRetentionDropsOnlyExportedRows(t *testing.T) {
	t.Run("a row reaches the detached partition after its export is verified", func(t *testing.T) {
		b, st, entry, want := exportFixture(t, policy.ExportParquet)
		added := false
		b.acts.AfterExportStep = func(step, _ string) {
			if step == "verified" && !added {
				added = true
				addRow(t, b.db, firstExpiring)
				want[firstExpiring] = measure(t, b.db, firstExpiring)
			}
		}
		if _, err := b.acts.ApplyRetention(context.Background(), activities.RetentionInput{Table: "logs", Entry: &entry, Before: retentionBefore()}); err != nil {
			t.Fatalf("retention: %v", err)
		}
		ex := checkExports(t, b, st, want, true)
		contentOfObjects(t, b, st, ex, want)
	})
	t.Run("the partition is attached again for late rows after its export is verified", func(t *testing.T) {
		b, st, entry, want := exportFixture(t, policy.ExportParquet)
		// The first partition's export is verified; the worker is lost
		// before the drop: the partition stays detached, its manifest
		// verified.
		ctx, cancel := context.WithCancel(context.Background())
		b.acts.AfterExportStep = func(step, _ string) {
			if step == "verified" {
				cancel()
			}
		}
		if _, err := b.acts.ApplyRetention(ctx, activities.RetentionInput{Table: "logs", Entry: &entry, Before: retentionBefore()}); err == nil {
			t.Fatal("the interrupted retention succeeded")
		}
		b.acts.AfterExportStep = nil
		ex, err := activities.Exports(context.Background(), b.db, "scenario_logs_archive")
		if err != nil || len(ex) != 1 || ex[0].Partition != firstExpiring || ex[0].State != activities.ExportVerified {
			t.Fatalf("after the interruption: %+v (%v), want %s verified", ex, err, firstExpiring)
		}
		// A late row of its month: the next run attaches the partition
		// again and moves the row into it.
		testenv.InsertLogs(t, b.db, []time.Time{time.Date(2017, 11, 25, 8, 0, 0, 0, time.UTC)})
		if res := b.ensure(t); len(res.Reattached) != 1 || res.Reattached[0] != firstExpiring {
			t.Fatalf("EnsurePartitions %+v: want %s attached again", res, firstExpiring)
		}
		if res := b.move(t, "00000000-0000-4000-8000-0000000f0001", 5000); res.RowsMoved != 1 {
			t.Fatalf("the late row: %+v", res)
		}
		want[firstExpiring] = measure(t, b.db, firstExpiring)
		if _, err := b.acts.ApplyRetention(context.Background(), activities.RetentionInput{Table: "logs", Entry: &entry, Before: retentionBefore()}); err != nil {
			t.Fatalf("retention: %v", err)
		}
		ex = checkExports(t, b, st, want, true)
		contentOfObjects(t, b, st, ex, want)
	})
}

// TestExportReadBack: between the upload and the drop the object is read
// back from S3 and checked; an object that is not what was written (cut
// short, altered at the same size, a Parquet of other rows carrying the
// manifest's metadata) keeps the partition with all its rows and the
// manifest uploading, and the next attempt uploads anew.
func TestExportReadBack(t *testing.T) {
	for _, tc := range []struct {
		name  string
		wrong func(t *testing.T, b bundle, data []byte) []byte
	}{
		{"truncated", func(t *testing.T, b bundle, data []byte) []byte { return data[:len(data)-100] }},
		{"altered at the same size", func(t *testing.T, b bundle, data []byte) []byte {
			out := bytes.Clone(data)
			out[len(out)/3] ^= 0x20
			return out
		}},
		{"a Parquet file of one row fewer", func(t *testing.T, b bundle, data []byte) []byte {
			ctx := context.Background()
			desc, err := catalog.Describe(ctx, b.db, firstExpiring)
			if err != nil {
				t.Fatal(err)
			}
			cols := coldstore.Columns(desc)
			rows, err := b.db.Query(ctx, `SELECT `+coldstore.SelectList(cols)+` FROM `+firstExpiring+` OFFSET 1`)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var buf bytes.Buffer
			if _, err := coldstore.Write(coldstore.Parquet, &buf, cols, rows, nil); err != nil {
				t.Fatal(err)
			}
			return buf.Bytes()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, st, entry, want := exportFixture(t, policy.ExportParquet)
			ctx := context.Background()
			var replaced string
			b.acts.AfterExportStep = func(step, _ string) {
				if step != "uploaded" || replaced != "" {
					return
				}
				ex, err := activities.Exports(ctx, b.db, "scenario_logs_archive")
				if err != nil || len(ex) != 1 {
					t.Fatalf("manifests at the upload: %+v (%v)", ex, err)
				}
				m := ex[0]
				body, err := st.Get(ctx, m.Key)
				if err != nil {
					t.Fatal(err)
				}
				data, _ := io.ReadAll(body)
				body.Close()
				// The manifest's metadata goes with the wrong object: only
				// reading it back tells them apart.
				if _, err := st.Put(ctx, m.Key, bytes.NewReader(tc.wrong(t, b, data)), coldstore.ContentType(m.Format), map[string]string{
					"sha256": m.SHA256, "rows": itoa(m.Rows), "partition": m.Partition, "content-checksum": m.Checksum,
				}); err != nil {
					t.Fatal(err)
				}
				replaced = m.Partition
			}
			_, err := b.acts.ApplyRetention(ctx, activities.RetentionInput{Table: "logs", Entry: &entry, Before: retentionBefore()})
			var appErr *temporal.ApplicationError
			if !errors.As(err, &appErr) || appErr.Type() != activities.ErrExportMismatch {
				t.Fatalf("retention over a wrong object: %v, want %s", err, activities.ErrExportMismatch)
			}
			if replaced != firstExpiring {
				t.Fatalf("replaced the object of %q, want %s", replaced, firstExpiring)
			}
			if got := measure(t, b.db, firstExpiring); got != want[firstExpiring] {
				t.Fatalf("%s holds %s rows (%s), want all its %s (%s)", firstExpiring, got[0], got[1], want[firstExpiring][0], want[firstExpiring][1])
			}
			ex, err := activities.Exports(ctx, b.db, "scenario_logs_archive")
			if err != nil || len(ex) != 1 || ex[0].State != activities.ExportUploading {
				t.Fatalf("manifests after the refused object: %+v (%v), want one uploading", ex, err)
			}
			// The next attempt writes and uploads every partition's object,
			// the refused one too, and drops them all.
			uploads := map[string]int{}
			b.acts.AfterExportStep = func(step, _ string) { uploads[step]++ }
			if _, err := b.acts.ApplyRetention(ctx, activities.RetentionInput{Table: "logs", Entry: &entry, Before: retentionBefore()}); err != nil {
				t.Fatalf("the next attempt: %v", err)
			}
			if uploads["uploaded"] != len(want) {
				t.Fatalf("the next attempt uploaded %d objects, want %d (the refused one anew)", uploads["uploaded"], len(want))
			}
			ex = checkExports(t, b, st, want, true)
			contentOfObjects(t, b, st, ex, want)
		})
	}
}

// TestExportComparesContent: the read-back compares the rows of the
// object with the partition's (their content checksum), not only its
// bytes with the manifest's. A manifest whose content checksum is not the
// object's rows' is never verified: the partition is kept.
func TestExportComparesContent(t *testing.T) {
	b, st, entry, want := exportFixture(t, policy.ExportParquet)
	ctx := context.Background()
	tampered := false
	b.acts.AfterExportStep = func(step, _ string) {
		if step == "manifest" && !tampered {
			tampered = true
			if _, err := b.db.Exec(ctx, `UPDATE archive_exports SET content_checksum = '12345' WHERE state = 'uploading'`); err != nil {
				t.Fatal(err)
			}
		}
	}
	_, err := b.acts.ApplyRetention(ctx, activities.RetentionInput{Table: "logs", Entry: &entry, Before: retentionBefore()})
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || appErr.Type() != activities.ErrCannotExport || !strings.Contains(err.Error(), firstExpiring) || !strings.Contains(err.Error(), "rows read back") {
		t.Fatalf("retention: %v, want the read-back to refuse %s's object by its rows", err, firstExpiring)
	}
	t.Logf("refused: %v", err)
	if got := measure(t, b.db, firstExpiring); got != want[firstExpiring] {
		t.Fatalf("%s holds %s rows, want all its %s", firstExpiring, got[0], want[firstExpiring][0])
	}
	ex, err := activities.Exports(ctx, b.db, "scenario_logs_archive")
	if err != nil || len(ex) != 1 || ex[0].State != activities.ExportUploading {
		t.Fatalf("manifests: %+v (%v), want one uploading", ex, err)
	}
	b.acts.AfterExportStep = nil
	if _, err := b.acts.ApplyRetention(ctx, activities.RetentionInput{Table: "logs", Entry: &entry, Before: retentionBefore()}); err != nil {
		t.Fatalf("the next attempt: %v", err)
	}
	contentOfObjects(t, b, st, checkExports(t, b, st, want, true), want)
}

// TestVerifyDeepComparesContent: `starter verify --deep` compares the
// rows of each object with its manifest's content checksum too: a
// manifest whose checksum is not its object's rows' is a finding.
func TestVerifyDeepComparesContent(t *testing.T) {
	b, st, entry, want := exportFixture(t, policy.ExportParquet)
	ctx := context.Background()
	if _, err := b.acts.ApplyRetention(ctx, activities.RetentionInput{Table: "logs", Entry: &entry, Before: retentionBefore()}); err != nil {
		t.Fatalf("retention: %v", err)
	}
	ex := checkExports(t, b, st, want, false)
	if _, err := b.db.Exec(ctx, `UPDATE archive_exports SET content_checksum = '12345' WHERE id = $1`, ex[2].ID); err != nil {
		t.Fatal(err)
	}
	rep, err := b.acts.Verify(ctx, activities.VerifyInput{Entries: []policy.Table{entry}, Deep: true})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range rep.Checks {
		if c.Check == "exports" {
			found = len(c.Mismatches) == 1 && strings.Contains(c.Mismatches[0], ex[2].Partition) && c.OK == int64(len(ex)-1)
		}
	}
	if !found {
		t.Fatalf("deep verify: %+v, want %s's content checksum reported, and only it", rep, ex[2].Partition)
	}
}

// TestExportRoundTrip: values the export formats and a restore carry
// exactly (infinite and extreme timestamps) are exported and read back
// identical; values they cannot carry (a timestamp before year 1, one
// past what Parquet's microseconds since 1970 hold) are refused at export
// with a non-retryable error naming the partition, the column and why,
// and the partition is kept whole.
func TestExportRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		format string
		values []string
		refuse string // "" when the values round-trip
	}{
		{policy.ExportParquet, []string{"infinity", "-infinity", "0001-01-01 00:00:00+00", "9999-12-31 23:59:59.999999+00", "12021-06-01 12:00:00+00"}, ""},
		{policy.ExportCSV, []string{"infinity", "-infinity", "0001-01-01 00:00:00+00", "12021-06-01 12:00:00+00", "294276-01-01 00:00:00+00"}, ""},
		{policy.ExportParquet, []string{"0044-03-15 12:00:00+00 BC"}, "before year 1"},
		{policy.ExportCSV, []string{"0001-12-31 23:00:00+00 BC"}, "before year 1"},
		{policy.ExportParquet, []string{"294276-01-01 00:00:00+00"}, "microseconds"},
	} {
		t.Run(tc.format+" "+strings.Join(tc.values, " "), func(t *testing.T) {
			b, st, entry, want := exportFixture(t, tc.format)
			ctx := context.Background()
			for i, v := range tc.values {
				if _, err := b.db.Exec(ctx, `UPDATE `+firstExpiring+` SET archived_at = $1::timestamptz
					WHERE id = (SELECT id FROM `+firstExpiring+` ORDER BY id OFFSET $2 LIMIT 1)`, v, i); err != nil {
					t.Fatal(err)
				}
			}
			want[firstExpiring] = measure(t, b.db, firstExpiring)
			_, err := b.acts.ApplyRetention(ctx, activities.RetentionInput{Table: "logs", Entry: &entry, Before: retentionBefore()})
			if tc.refuse == "" {
				if err != nil {
					t.Fatalf("retention: %v", err)
				}
				contentOfObjects(t, b, st, checkExports(t, b, st, want, true), want)
				return
			}
			var appErr *temporal.ApplicationError
			if !errors.As(err, &appErr) || !appErr.NonRetryable() || appErr.Type() != activities.ErrCannotExport {
				t.Fatalf("retention: %v, want a non-retryable %s", err, activities.ErrCannotExport)
			}
			t.Logf("refused: %v", err)
			for _, s := range []string{firstExpiring, `"archived_at"`, tc.refuse} {
				if !strings.Contains(err.Error(), s) {
					t.Fatalf("retention: %v\nwant the refusal to name %s", err, s)
				}
			}
			if got := measure(t, b.db, firstExpiring); got != want[firstExpiring] {
				t.Fatalf("%s holds %s rows (%s), want all its %s (%s)", firstExpiring, got[0], got[1], want[firstExpiring][0], want[firstExpiring][1])
			}
			ex, err := activities.Exports(ctx, b.db, "scenario_logs_archive")
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ex {
				if e.State != activities.ExportUploading {
					t.Fatalf("manifest %s is %s after the refusal", e.Partition, e.State)
				}
			}
			if keys := objectKeys(t, st); len(keys) != 0 {
				t.Fatalf("objects after the refusal: %v", keys)
			}
		})
	}
}

// TestRestoreExportCSV: a gzip CSV export is restored like a Parquet one:
// its rows come back to the live table, checked by count and content.
func TestRestoreExportCSV(t *testing.T) {
	b, st, entry, want := exportFixture(t, policy.ExportCSV)
	ctx := context.Background()
	if _, err := b.acts.ApplyRetention(ctx, activities.RetentionInput{Table: "logs", Entry: &entry, Before: retentionBefore()}); err != nil {
		t.Fatalf("retention: %v", err)
	}
	ex := checkExports(t, b, st, want, false)
	if _, err := b.db.Exec(ctx, `GRANT INSERT ON scenario_logs TO archiver_worker`); err != nil {
		t.Fatal(err)
	}
	e := ex[0]
	res, err := b.acts.RestoreExport(ctx, activities.RestoreExportInput{Table: "logs", Entry: &entry, JobID: b.jobID,
		BatchID: "00000000-0000-4000-8000-0000000c5401", ExportID: e.ID})
	if err != nil {
		t.Fatalf("restore %s: %v", e.Key, err)
	}
	n := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_logs WHERE received_at >= $1 AND received_at < $2`, e.Lower, e.Upper)
	if res.RowsMoved != e.Rows || n != e.Rows {
		t.Fatalf("restored %d rows, %d live in %s's month; want its %d", res.RowsMoved, n, e.Partition, e.Rows)
	}
}
