package torture

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/csv"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/parquet-go/parquet-go"

	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/coldstore"
	"github.com/mockupaws/archiver/internal/database"
	"github.com/mockupaws/archiver/internal/testenv"
)

// everyType has a column of each type the archiver maps, and of types it
// carries as text (arrays, interval, an enum, a domain, inet, char(n)), with
// the values that are hard to carry: infinities, NaN, -0, years past 9999
// and before 1970, empty strings beside NULLs, quotes, commas, CR LF.
const everyType = `
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy, "really"', '');
CREATE DOMAIN short_text AS varchar(10);
CREATE TABLE every_type (
    id     bigint PRIMARY KEY,
    at     timestamptz NOT NULL,
    at3    timestamp(3) with time zone,
    local  timestamp,
    day    date,
    uid    uuid,
    small  smallint,
    mid    integer,
    big    bigint,
    r      real,
    d      double precision,
    flag   boolean,
    j      json,
    jb     jsonb,
    n      numeric,
    n2     numeric(10,2),
    blob   bytea,
    txt    text,
    vc     varchar(20),
    ch     char(3),
    ints   int[],
    texts  text[],
    span   interval,
    m      mood,
    sh     short_text,
    addr   inet,
    "Odd, ""name"""  text
);
INSERT INTO every_type VALUES
 (1, '2019-03-01 12:34:56.789012+00', '2019-03-01 12:34:56.789+00', '2019-03-01 12:34:56.000001', '2019-03-01',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', -32768, -2147483648, -9223372036854775808,
  'NaN', 'NaN', true, '{"b": 1,  "a": [1, 2], "s": "x\"y\\u0000"}', '{"k": [1, "two", null]}', 'NaN', 'NaN',
  '\x00ff10', '', '', '', '{1,NULL,3}', '{"a,b",NULL,"","x\"y","NULL"}',
  '1 year 2 mons -3 days 04:05:06.789', 'happy, "really"', '', '10.0.0.1/8', ''),
 (2, 'infinity', 'infinity', 'infinity', 'infinity',
  '00000000-0000-0000-0000-000000000000', 32767, 2147483647, 9223372036854775807,
  'Infinity', 'Infinity', false, '""', 'null', 'Infinity', 99999999.99,
  '', 'a "quoted", comma
newline and \ backslash', 'crlf' || E'\r\n' || 'x', 'ab', '{}', '{}',
  '-1 day', 'sad', 'ten chars!', '::1', 'x'),
 (3, '-infinity', '-infinity', '-infinity', '-infinity',
  'ffffffff-ffff-ffff-ffff-ffffffffffff', 0, 0, 0,
  '-Infinity', '-Infinity', NULL, '[]', '""', '-Infinity', -0.01,
  NULL, ' leading and trailing ', '\N', ' ', '{{1,2},{3,4}}', '{" "}',
  '00:00:00', '', 'a,b"c', NULL, '\.'),
 (4, '1969-12-31 23:59:59.999999+00', '0001-01-01 00:00:00+00', '0001-01-01 00:00:00', '0001-01-01',
  NULL, NULL, NULL, NULL,
  '-0', '-0', NULL, NULL, '{}', '-0.000001', 0,
  '\x', 'é😀 ✓', E'\t\\', NULL, NULL, NULL,
  '-178000000 years', 'ok', NULL, NULL, NULL),
 (5, '10000-01-01 00:00:00+00', '200000-06-15 01:02:03.456+00', '99999-12-31 23:59:59.999999', '5874897-12-31',
  NULL, 1, 1, 1,
  '1e-45', '5e-324', true, NULL, NULL, '1000000000000000000000000000000.000000000000000000000000000001', 12345678.90,
  NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL),
 (6, '2000-02-29 00:00:00+00', NULL, NULL, '1969-12-25',
  NULL, NULL, NULL, NULL,
  '3.4028235e38', '0.1', NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL),
 (7, '1970-01-01 00:00:00+00', NULL, NULL, NULL,
  NULL, NULL, NULL, NULL,
  '0.33333334', '0.30000000000000004', NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL);
`

// pinned begins a transaction with the session settings objectDigests
// digests under, for the original rows' digests.
func pinned(t *testing.T, db *pgxpool.Pool) pgx.Tx {
	t.Helper()
	ctx := context.Background()
	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(ctx) })
	for _, s := range digestSettings {
		if _, err := tx.Exec(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	return tx
}

func tableDigests(t *testing.T, db *pgxpool.Pool, table string, cols []Column) []string {
	t.Helper()
	tx := pinned(t, db)
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = catalog.Quote(c.Name)
	}
	rows, err := tx.Query(context.Background(), "SELECT md5(row("+strings.Join(names, ", ")+")::text) FROM "+catalog.Quote(table))
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func digestsOf(t *testing.T, db *pgxpool.Pool, body []byte, format string, cols []Column) ([]string, error) {
	t.Helper()
	ctx := context.Background()
	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	return objectDigests(ctx, tx, body, format, cols)
}

func sameMultiset(t *testing.T, what string, got, want []string) {
	t.Helper()
	got, want = slices.Clone(got), slices.Clone(want)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s: digests differ\n got %d: %v\nwant %d: %v", what, len(got), got, len(want), want)
	}
}

// TestObjectDigests writes every_type with the archiver's own writer, in
// both formats, and reads each object back with the oracle's readers: the
// digests must be the table's.
func TestObjectDigests(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, url := testenv.NewDB(t)
	if _, err := db.Exec(ctx, everyType); err != nil {
		t.Fatal(err)
	}
	// The archiver's sessions have their settings pinned: write as it does.
	wdb, err := database.Open(ctx, url, "torture-test")
	if err != nil {
		t.Fatal(err)
	}
	defer wdb.Close()
	tbl, err := catalog.Describe(ctx, wdb, "every_type")
	if err != nil {
		t.Fatal(err)
	}
	ccols := coldstore.Columns(tbl)
	cols := make([]Column, len(ccols))
	for i, c := range ccols {
		cols[i] = Column{Name: c.Name, Type: c.Type}
	}
	want := tableDigests(t, db, "every_type", cols)
	if len(want) != 7 {
		t.Fatalf("every_type has %d rows, want 7", len(want))
	}
	for _, format := range []string{coldstore.Parquet, coldstore.CSV} {
		t.Run(format, func(t *testing.T) {
			rows, err := wdb.Query(ctx, "SELECT "+coldstore.SelectList(ccols)+" FROM every_type")
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			n, err := coldstore.Write(format, &buf, ccols, rows, nil)
			rows.Close()
			if err != nil {
				t.Fatal(err)
			}
			if n != 7 {
				t.Fatalf("the writer wrote %d rows, want 7", n)
			}
			got, err := digestsOf(t, db, buf.Bytes(), format, cols)
			if err != nil {
				t.Fatal(err)
			}
			sameMultiset(t, format, got, want)

			// In another column order the object still maps by name.
			rev := slices.Clone(cols)
			slices.Reverse(rev)
			got, err = digestsOf(t, db, buf.Bytes(), format, rev)
			if err != nil {
				t.Fatal(err)
			}
			sameMultiset(t, format+", columns reversed", got, tableDigests(t, db, "every_type", rev))

			// Columns the oracle does not ask for are not read.
			got, err = digestsOf(t, db, buf.Bytes(), format, cols[1:])
			if err != nil {
				t.Fatal(err)
			}
			sameMultiset(t, format+", a column left out", got, tableDigests(t, db, "every_type", cols[1:]))

			// A column the object lacks, or one of another mapping, is refused.
			missing := append(slices.Clone(cols), Column{Name: "absent", Type: "text"})
			if _, err := digestsOf(t, db, buf.Bytes(), format, missing); err == nil || !strings.Contains(err.Error(), "absent") {
				t.Errorf("a column the object lacks: got %v, want an error naming it", err)
			}
			if format == coldstore.Parquet {
				wrong := slices.Clone(cols)
				for i := range wrong {
					if wrong[i].Name == "big" {
						wrong[i].Type = "integer"
					}
				}
				_, err := digestsOf(t, db, buf.Bytes(), format, wrong)
				if err == nil || !strings.Contains(err.Error(), `column "big" (integer) is INT64`) {
					t.Errorf("a bigint column read as integer: got %v, want a type mismatch naming it", err)
				}
			}
		})
	}
}

func gz(t *testing.T, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	if _, err := w.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestObjectDigestsCSV: the CSV scanner tells NULL from "" and keeps a CR
// LF inside a quoted value, which encoding/csv does neither of, and refuses
// what the archiver never writes.
func TestObjectDigestsCSV(t *testing.T) {
	t.Parallel()
	const body = "\"t\",\"id\"\n" +
		"\"\",\"1\"\n" +
		",\"2\"\n" +
		"\"a\r\nb\",\"3\"\n" +
		"\"say \"\"hi\"\", ok\",\"4\"\n"
	// Why not encoding/csv: it reads the CR LF value as "a\nb", and the
	// NULL of row 2 as the "" of row 1.
	recs, err := csv.NewReader(strings.NewReader(body)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if recs[3][0] != "a\nb" || recs[1][0] != recs[2][0] {
		t.Fatalf("encoding/csv read %q: the reason not to use it is gone", recs)
	}

	ctx := context.Background()
	db, _ := testenv.NewDB(t)
	cols := []Column{{"id", "integer"}, {"t", "text"}}
	got, err := digestsOf(t, db, gz(t, body), "csv", cols)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	rows, err := db.Query(ctx, `SELECT md5(row(id, t)::text) FROM (VALUES (1, ''), (2, NULL), (3, E'a\r\nb'), (4, 'say "hi", ok')) v(id, t)`)
	if err != nil {
		t.Fatal(err)
	}
	if want, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	sameMultiset(t, "csv", got, want)

	for _, bad := range []struct{ name, body, err string }{
		{"unquoted value", "\"id\",\"t\"\n1,\"x\"\n", "unquoted and not empty"},
		{"text after a closing quote", "\"id\",\"t\"\n\"1\"x,\"x\"\n", "after its closing quote"},
		{"truncated in a value", "\"id\",\"t\"\n\"1\",\"x", "never closes"},
		{"truncated at a record's end", "\"id\",\"t\"\n\"1\",\"x\"", "no line end"},
		{"short record", "\"id\",\"t\"\n\"1\"\n", "1 fields, the header has 2"},
		{"no header", "", "no header"},
		{"other columns", "\"id\",\"u\"\n", `no column "t"`},
	} {
		if _, err := digestsOf(t, db, gz(t, bad.body), "csv", cols); err == nil || !strings.Contains(err.Error(), bad.err) {
			t.Errorf("%s: got %v, want an error with %q", bad.name, err, bad.err)
		}
	}
}

// TestObjectDigestsPages: an object of many pages and row groups (the
// byte array reader's values must be copied before its next page).
func TestObjectDigestsPages(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, url := testenv.NewDB(t)
	if _, err := db.Exec(ctx, `CREATE TABLE many (id int NOT NULL, s text, b bytea, at timestamptz);
INSERT INTO many SELECT i, CASE WHEN i % 11 = 0 THEN NULL ELSE repeat(md5(i::text), 1 + i % 7) END,
       CASE WHEN i % 13 = 0 THEN NULL ELSE decode(repeat(md5((-i)::text), 1 + i % 5), 'hex') END,
       CASE WHEN i % 17 = 0 THEN NULL ELSE '2020-01-01'::timestamptz + i * interval '1.000001 second' END
FROM generate_series(1, 20000) i`); err != nil {
		t.Fatal(err)
	}
	wdb, err := database.Open(ctx, url, "torture-test")
	if err != nil {
		t.Fatal(err)
	}
	defer wdb.Close()
	tbl, err := catalog.Describe(ctx, wdb, "many")
	if err != nil {
		t.Fatal(err)
	}
	ccols := coldstore.Columns(tbl)
	cols := make([]Column, len(ccols))
	for i, c := range ccols {
		cols[i] = Column{Name: c.Name, Type: c.Type}
	}
	want := tableDigests(t, db, "many", cols)
	for _, format := range []string{coldstore.Parquet, coldstore.CSV} {
		rows, err := wdb.Query(ctx, "SELECT "+coldstore.SelectList(ccols)+" FROM many")
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		_, err = coldstore.Write(format, &buf, ccols, rows, nil, coldstore.WithRowGroupRows(8192))
		rows.Close()
		if err != nil {
			t.Fatal(err)
		}
		if format == coldstore.Parquet {
			f, err := parquet.OpenFile(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
			if err != nil {
				t.Fatal(err)
			}
			if n := len(f.RowGroups()); n < 2 {
				t.Fatalf("the object has %d row groups, want several", n)
			}
			pages := f.RowGroups()[0].ColumnChunks()[1].Pages() // column s
			n := 0
			for ; ; n++ {
				if _, err := pages.ReadPage(); err != nil {
					break
				}
			}
			pages.Close()
			if n < 2 {
				t.Fatalf("column s has %d pages in its first row group, want several", n)
			}
		}
		got, err := digestsOf(t, db, buf.Bytes(), format, cols)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d digests, want %d", format, len(got), len(want))
		}
		sameMultiset(t, format, got, want)
	}
}
