package coldstore_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/klauspost/compress/gzip"
	"github.com/parquet-go/parquet-go"

	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/coldstore"
	"github.com/mockupaws/archiver/internal/testenv"
)

// allTypes has every column type of the seed's tables, and the others the
// mapping names, with NULLs, empty strings, quotes, newlines, infinities.
const allTypes = `
CREATE TABLE every_type (
    id              BIGINT PRIMARY KEY,
    uid             UUID NOT NULL,
    received_at     TIMESTAMPTZ NOT NULL,
    local_at        TIMESTAMP,
    day             DATE,
    message_hash    VARCHAR(64),
    preview         TEXT,
    code            CHAR(3),
    has_pii         BOOLEAN,
    small           SMALLINT,
    token_count     INTEGER,
    value           DOUBLE PRECISION,
    ratio           REAL,
    amount          NUMERIC(18,6),
    free_number     NUMERIC,
    extra_data      JSONB,
    raw             JSON,
    blob            BYTEA,
    addr            INET,
    tags            TEXT[]
);
INSERT INTO every_type
SELECT i,
       md5(i::text)::uuid,
       '2019-03-01 00:00:00+00'::timestamptz + i * interval '17 minutes 3.123457 seconds',
       CASE WHEN i % 5 = 0 THEN NULL ELSE '2019-03-01 12:00:00'::timestamp + i * interval '1 second' END,
       CASE WHEN i % 6 = 0 THEN NULL ELSE '1969-12-25'::date + i END,
       md5(i::text),
       CASE WHEN i % 7 = 0 THEN NULL WHEN i % 7 = 1 THEN '' WHEN i % 7 = 2 THEN 'a "quoted", comma
newline and \ backslash' ELSE 'row ' || i END,
       CASE WHEN i % 4 = 0 THEN NULL ELSE 'ab' END,
       CASE WHEN i % 3 = 0 THEN NULL ELSE i % 2 = 0 END,
       (i % 300 - 150)::smallint,
       i * 7,
       CASE WHEN i = 3 THEN 'NaN'::float8 WHEN i = 4 THEN 'Infinity' WHEN i = 5 THEN -1e-300 ELSE i / 3.0 END,
       (i / 7.0)::real,
       (i * 1.000001)::numeric(18,6),
       CASE WHEN i % 9 = 0 THEN NULL ELSE (10::numeric ^ 30) + i END,
       CASE WHEN i % 8 = 0 THEN NULL ELSE jsonb_build_object('k', i, 's', 'x"y', 'n', NULL) END,
       CASE WHEN i % 8 = 0 THEN NULL ELSE '{"b": 1,  "a": [1, 2]}'::json END,
       CASE WHEN i % 10 = 0 THEN NULL WHEN i % 10 = 1 THEN ''::bytea ELSE decode(md5(i::text), 'hex') END,
       ('10.0.0.' || (i % 250))::inet,
       ARRAY['a', 'b,c', NULL]
FROM generate_series(1, 3000) i;
INSERT INTO every_type (id, uid, received_at, local_at, day)
VALUES (0, '00000000-0000-0000-0000-000000000000', 'infinity', '-infinity', 'infinity');
`

func setup(t *testing.T) (*pgxpool.Pool, []coldstore.Column) {
	t.Helper()
	db, _ := testenv.EmptyDB(t)
	if _, err := db.Exec(context.Background(), allTypes); err != nil {
		t.Fatal(err)
	}
	tbl, err := catalog.Describe(context.Background(), db, "every_type")
	if err != nil {
		t.Fatal(err)
	}
	return db, coldstore.Columns(tbl)
}

func export(t *testing.T, db *pgxpool.Pool, cols []coldstore.Column, format string) []byte {
	t.Helper()
	rows, err := db.Query(context.Background(), "SELECT "+coldstore.SelectList(cols)+" FROM every_type")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var buf bytes.Buffer
	n, err := coldstore.Write(format, &buf, cols, rows, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3001 {
		t.Fatalf("wrote %d rows, want 3001", n)
	}
	return buf.Bytes()
}

// restoreInto loads a CSV (as COPY reads it) into a fresh table of the
// columns' types and returns its content checksum.
func restoreInto(t *testing.T, db *pgxpool.Pool, cols []coldstore.Column, name string, csv io.Reader) (int64, string) {
	t.Helper()
	ctx := context.Background()
	if _, err := db.Exec(ctx, coldstore.TableSQL("CREATE TABLE", name, cols)); err != nil {
		t.Fatal(err)
	}
	conn, err := db.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Conn().PgConn().CopyFrom(ctx, csv, "COPY "+name+" FROM STDIN (FORMAT csv, HEADER true)"); err != nil {
		t.Fatalf("COPY the file back: %v", err)
	}
	return checksum(t, db, name, cols)
}

func checksum(t *testing.T, db *pgxpool.Pool, rel string, cols []coldstore.Column) (int64, string) {
	t.Helper()
	var n int64
	var sum string
	if err := db.QueryRow(context.Background(), coldstore.ChecksumSQL(rel, cols)).Scan(&n, &sum); err != nil {
		t.Fatal(err)
	}
	return n, sum
}

// TestParquetValues reads the exported file with the Parquet library's own
// reader (not ours) and compares each value with the row PostgreSQL holds.
func TestParquetValues(t *testing.T) {
	db, cols := setup(t)
	file := export(t, db, cols, coldstore.Parquet)
	f, err := parquet.OpenFile(bytes.NewReader(file), int64(len(file)))
	if err != nil {
		t.Fatal(err)
	}
	if f.NumRows() != 3001 {
		t.Fatalf("footer says %d rows, want 3001", f.NumRows())
	}
	var names []string
	for _, fl := range f.Schema().Fields() {
		names = append(names, fl.Name())
	}
	if err := coldstore.CheckSame(names, cols); err != nil {
		t.Fatalf("column order: %v (%v)", err, names)
	}
	// Typed columns: each leaf's logical type.
	want := map[string]string{"received_at": "TIMESTAMP(isAdjustedToUTC=true,unit=MICROS)", "uid": "UUID", "day": "DATE", "extra_data": "JSON", "preview": "STRING", "small": "INT(16,true)", "id": "INT(64,true)"}
	for _, fl := range f.Schema().Fields() {
		if w, ok := want[fl.Name()]; ok {
			if got := fl.Type().LogicalType().String(); got != w {
				t.Errorf("%s: logical type %s, want %s", fl.Name(), got, w)
			}
		}
		if fl.Name() == "received_at" && fl.Optional() {
			t.Errorf("received_at is NOT NULL but the file has it optional")
		}
		if fl.Name() == "preview" && !fl.Optional() {
			t.Errorf("preview is nullable but the file has it required")
		}
	}
	byID := map[int64]parquet.Row{}
	rd := parquet.NewReader(f)
	buf := make([]parquet.Row, 100)
	for {
		n, err := rd.ReadRows(buf)
		for _, r := range buf[:n] {
			byID[r[0].Int64()] = r.Clone()
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	rows, err := db.Query(context.Background(), `SELECT id, uid, received_at, preview, has_pii, small, value, amount::text, extra_data::text, blob, day FROM every_type`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	checked := 0
	for rows.Next() {
		var (
			id       int64
			uid      uuid.UUID
			at       any
			preview  *string
			pii      *bool
			small    *int16
			value    *float64
			amount   *string
			extra    *string
			blob     []byte
			day      any
			colIndex = func(name string) int {
				for i, c := range cols {
					if c.Name == name {
						return i
					}
				}
				t.Fatalf("no column %s", name)
				return -1
			}
		)
		if err := rows.Scan(&id, &uid, &at, &preview, &pii, &small, &value, &amount, &extra, &blob, &day); err != nil {
			t.Fatal(err)
		}
		r, ok := byID[id]
		if !ok {
			t.Fatalf("row %d is not in the file", id)
		}
		v := func(name string) parquet.Value { return r[colIndex(name)] }
		if !bytes.Equal(v("uid").ByteArray(), uid[:]) {
			t.Errorf("row %d uid %x, want %s", id, v("uid").ByteArray(), uid)
		}
		if ts, ok := at.(time.Time); ok && v("received_at").Int64() != ts.UnixMicro() {
			t.Errorf("row %d received_at %d µs, want %s", id, v("received_at").Int64(), ts)
		}
		if id == 0 && v("received_at").Int64() != math.MaxInt64 {
			t.Errorf("infinity stored as %d", v("received_at").Int64())
		}
		checkText := func(name string, want *string) {
			got := v(name)
			if want == nil != got.IsNull() || want != nil && string(got.ByteArray()) != *want {
				t.Errorf("row %d %s = %q (null %v), want %v", id, name, got.ByteArray(), got.IsNull(), deref(want))
			}
		}
		checkText("preview", preview)
		checkText("amount", amount)
		checkText("extra_data", extra)
		if pii == nil != v("has_pii").IsNull() || pii != nil && *pii != v("has_pii").Boolean() {
			t.Errorf("row %d has_pii differs", id)
		}
		if small != nil && int16(v("small").Int32()) != *small {
			t.Errorf("row %d small %d, want %d", id, v("small").Int32(), *small)
		}
		if value != nil && !(math.IsNaN(*value) && math.IsNaN(v("value").Double())) && v("value").Double() != *value {
			t.Errorf("row %d value %v, want %v", id, v("value").Double(), *value)
		}
		if blob == nil != v("blob").IsNull() || !bytes.Equal(blob, v("blob").ByteArray()) {
			t.Errorf("row %d blob %x, want %x", id, v("blob").ByteArray(), blob)
		}
		if d, ok := day.(time.Time); ok && int64(v("day").Int32()) != d.Unix()/86400 {
			t.Errorf("row %d day %d, want %s", id, v("day").Int32(), d)
		}
		checked++
	}
	if checked != 3001 {
		t.Fatalf("compared %d rows", checked)
	}
}

// TestRoundTrip: a Parquet and a CSV export read back into a table of the
// same types hold the same rows, by content checksum.
func TestRoundTrip(t *testing.T) {
	db, cols := setup(t)
	wantN, wantSum := checksum(t, db, "every_type", cols)
	for _, format := range []string{coldstore.Parquet, coldstore.CSV} {
		t.Run(format, func(t *testing.T) {
			file := export(t, db, cols, format)
			var csv io.Reader
			if format == coldstore.Parquet {
				var out bytes.Buffer
				n, err := coldstore.ParquetToCSV(bytes.NewReader(file), int64(len(file)), cols, &out)
				if err != nil || n != wantN {
					t.Fatalf("read back %d rows (%v), want %d", n, err, wantN)
				}
				csv = &out
				rows, names, err := coldstore.Footer(bytes.NewReader(file), int64(len(file)))
				if err != nil || rows != wantN || len(names) != len(cols) {
					t.Fatalf("footer: %d rows, %v (%v)", rows, names, err)
				}
			} else {
				gz, err := gzip.NewReader(bytes.NewReader(file))
				if err != nil {
					t.Fatal(err)
				}
				csv = gz
			}
			n, sum := restoreInto(t, db, cols, "back_"+format, csv)
			if n != wantN || sum != wantSum {
				t.Fatalf("read back %d rows, checksum %s; want %d, %s", n, sum, wantN, wantSum)
			}
		})
	}
	// The checksum sees one changed value.
	if _, err := db.Exec(context.Background(), `UPDATE back_parquet SET preview = preview || '.' WHERE id = 10`); err != nil {
		t.Fatal(err)
	}
	if _, sum := checksum(t, db, "back_parquet", cols); sum == wantSum {
		t.Fatal("the content checksum did not change with a value")
	}
}

// TestCorruptParquet: a flipped byte in a page fails the deep read or
// changes the rows, while the footer alone may still open.
func TestCorruptParquet(t *testing.T) {
	db, cols := setup(t)
	file := export(t, db, cols, coldstore.Parquet)
	bad := append([]byte(nil), file...)
	for i := 100; i < 200; i++ {
		bad[i] ^= 0xff
	}
	_, err := coldstore.CountRows(bytes.NewReader(bad), int64(len(bad)))
	var out strings.Builder
	_, err2 := coldstore.ParquetToCSV(bytes.NewReader(bad), int64(len(bad)), cols, &out)
	if err == nil && err2 == nil {
		t.Fatal("a corrupted page read back without an error")
	}
	if hex.EncodeToString(bad[:4]) != hex.EncodeToString(file[:4]) {
		t.Fatal("the magic bytes changed; the test corrupts pages only")
	}
	fmt.Fprint(io.Discard, err, err2)
}

func deref(s *string) any {
	if s == nil {
		return nil
	}
	return *s
}

// TestValuesThatCannotRoundTrip: a value the format cannot carry back as
// it is stops the export with a *ValueError naming its column; the
// extremes it can carry come back identical.
func TestValuesThatCannotRoundTrip(t *testing.T) {
	db, _ := testenv.EmptyDB(t)
	ctx := context.Background()
	for i, tc := range []struct {
		typ, value string
		refused    []string // the formats that refuse it
	}{
		{"timestamptz", "0044-03-15 12:00:00+00 BC", []string{coldstore.Parquet, coldstore.CSV}},
		{"timestamptz", "0001-01-01 00:30:00+01", []string{coldstore.Parquet, coldstore.CSV}}, // 1 BC in UTC
		{"timestamp", "0001-01-01 00:00:00 BC", []string{coldstore.Parquet, coldstore.CSV}},
		{"date", "4713-01-01 BC", []string{coldstore.Parquet, coldstore.CSV}},
		{"timestamp", "294276-12-31 23:59:59.999999", []string{coldstore.Parquet}},
		{"timestamptz", "294276-12-31 23:59:59.999999+00", []string{coldstore.Parquet}},
		// One microsecond before the end of int64: as Parquet it would be
		// the writer's code for infinity.
		{"timestamptz", "294247-01-10 04:00:54.775807+00", []string{coldstore.Parquet}},
		{"timestamp", "294247-01-10 04:00:54.775807", []string{coldstore.Parquet}},
		{"timestamptz", "294247-01-10 04:00:54.775806+00", nil},
		{"timestamptz", "294247-01-01 00:00:00+00", nil},
		{"timestamp", "0001-01-01 00:00:00", nil},
		{"date", "5874897-12-31", nil},
		{"date", "0001-01-01", nil},
	} {
		table := fmt.Sprintf("edge_%d", i)
		if _, err := db.Exec(ctx, fmt.Sprintf(`CREATE TABLE %[1]s (id int, v %[2]s); INSERT INTO %[1]s VALUES (1, NULL), (2, 'infinity'), (3, '%[3]s')`, table, tc.typ, tc.value)); err != nil {
			t.Fatal(err)
		}
		desc, err := catalog.Describe(ctx, db, table)
		if err != nil {
			t.Fatal(err)
		}
		cols := coldstore.Columns(desc)
		wantN, wantSum := checksum(t, db, table, cols)
		for _, format := range []string{coldstore.Parquet, coldstore.CSV} {
			rows, err := db.Query(ctx, "SELECT "+coldstore.SelectList(cols)+" FROM "+table+" ORDER BY id")
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			_, err = coldstore.Write(format, &buf, cols, rows, nil)
			rows.Close()
			refused := false
			for _, f := range tc.refused {
				refused = refused || f == format
			}
			var bad *coldstore.ValueError
			if refused {
				if !errors.As(err, &bad) || bad.Column != "v" {
					t.Fatalf("%s %s '%s': %v, want a ValueError naming column v", format, tc.typ, tc.value, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s %s '%s': %v", format, tc.typ, tc.value, err)
			}
			var csv io.Reader
			if format == coldstore.Parquet {
				var out bytes.Buffer
				if _, err := coldstore.ParquetToCSV(bytes.NewReader(buf.Bytes()), int64(buf.Len()), cols, &out); err != nil {
					t.Fatal(err)
				}
				csv = &out
			} else if csv, err = gzip.NewReader(&buf); err != nil {
				t.Fatal(err)
			}
			if n, sum := restoreInto(t, db, cols, table+"_"+format, csv); n != wantN || sum != wantSum {
				t.Fatalf("%s %s '%s' read back %d rows (%s), want %d (%s)", format, tc.typ, tc.value, n, sum, wantN, wantSum)
			}
		}
	}
}

// TestChecksumCoversTheWholeRow: the content checksum of a table with a
// column named t (the rows' alias in ChecksumSQL) covers every column, and
// for other tables it is what it was when the row was named t (so the
// manifests written before stay comparable).
func TestChecksumCoversTheWholeRow(t *testing.T) {
	db, _ := testenv.EmptyDB(t)
	ctx := context.Background()
	if _, err := db.Exec(ctx, `CREATE TABLE shadow (t int, u text);
		INSERT INTO shadow SELECT i, repeat('x', i % 9) FROM generate_series(1, 500) i;
		CREATE TABLE plain (i int, u text, at timestamptz, a int[]);
		INSERT INTO plain SELECT i, CASE WHEN i % 3 = 0 THEN NULL ELSE 'q"u,o(t)e' END, now(), ARRAY[i, NULL] FROM generate_series(1, 500) i`); err != nil {
		t.Fatal(err)
	}
	sumOf := func(sql string) string {
		t.Helper()
		var s string
		if err := db.QueryRow(ctx, sql).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	cols := func(name string) []coldstore.Column {
		tbl, err := catalog.Describe(ctx, db, name)
		if err != nil {
			t.Fatal(err)
		}
		return coldstore.Columns(tbl)
	}
	_, shadow := checksum(t, db, "shadow", cols("shadow"))
	if onlyT := sumOf(`SELECT sum(('x' || left(md5(t::text), 16))::bit(64)::bigint::numeric)::text FROM shadow`); shadow == onlyT {
		t.Fatal("the checksum of shadow covers its column t only")
	}
	if _, err := db.Exec(ctx, `UPDATE shadow SET u = u || '!' WHERE t = 7`); err != nil {
		t.Fatal(err)
	}
	if _, again := checksum(t, db, "shadow", cols("shadow")); again == shadow {
		t.Fatal("a change to column u left the checksum of shadow as it was")
	}
	_, plain := checksum(t, db, "plain", cols("plain"))
	if before := sumOf(`SELECT sum(('x' || left(md5(t::text), 16))::bit(64)::bigint::numeric)::text FROM (SELECT i, u, at, a FROM plain) t`); plain != before {
		t.Fatalf("the checksum of plain is %s, it was %s: manifests written before would not compare", plain, before)
	}
}
