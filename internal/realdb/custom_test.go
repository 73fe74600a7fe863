package realdb

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/objectstore"
	"github.com/mockupaws/archiver/internal/policy"
	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/workflows"
)

// Tables that are not the seed's, archived by a declared policy: one test
// per mode, each checked by content (and, for downsampling, against SQL's
// GROUP BY over the original rows).

// declared parses a policy document as ARCHIVE_POLICY_FILE would be.
func declared(t *testing.T, doc string) []policy.Table {
	t.Helper()
	pol, err := policy.Parse("policy.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return pol
}

// runEntries archives the named entries of pol through the real workflow.
func (d *realDB) runEntries(pol []policy.Table, names ...string) (workflows.ArchiveResult, error) {
	d.t.Helper()
	return d.run(workflows.ArchiveInput{Tables: names, Policy: pol})
}

func TestDeclaredMove(t *testing.T) {
	t.Run("an append-only event table without a primary key, daily partitions", func(t *testing.T) {
		d := newRealDB(t, `CREATE TABLE app_events (
		    occurred_at timestamptz NOT NULL,
		    kind        text NOT NULL,
		    actor       text,
		    payload     jsonb,
		    weight      numeric(12,3)
		)`, `CREATE INDEX ON app_events (occurred_at)`)
		d.exec(fmt.Sprintf(`INSERT INTO app_events
			SELECT '%s'::timestamptz - i * interval '37 minutes', (ARRAY['login','logout','click'])[1 + i %% 3],
			       CASE WHEN i %% 4 = 0 THEN NULL ELSE 'user' || (i %% 50) END, jsonb_build_object('i', i, 's', repeat('x', i %% 20)), i / 7.0
			FROM generate_series(1, 4000) i`, asOf.Format(time.RFC3339)))
		// Two rows that are exact duplicates: without a key, each must still
		// move once.
		d.exec(`INSERT INTO app_events SELECT * FROM app_events WHERE occurred_at = (SELECT min(occurred_at) FROM app_events)`)
		d.migrate()
		pol := declared(t, `
tables:
  - name: events
    table: app_events
    time_column: occurred_at
    partition: day
    archive_after_days: 30
    retention_days: 400
    batch_size: 300`)
		// Without grants the worker is refused, told what to run.
		d.refusedEntries(pol, "events", `events: archiver_worker cannot archive app_events yet; run: GRANT SELECT, DELETE ON "app_events" TO "archiver_worker"; GRANT UPDATE ("occurred_at") ON "app_events" TO "archiver_worker"`)
		d.exec(`GRANT SELECT, DELETE ON app_events TO archiver_worker`, `GRANT UPDATE (occurred_at) ON app_events TO archiver_worker`)
		cols := "occurred_at, kind, actor, payload, weight"
		wantN, want := d.columns("app_events", cols, "")
		cutoff := asOf.Add(-30 * 24 * time.Hour)
		res, err := d.runEntries(pol, "events")
		if err != nil {
			t.Fatalf("run: %v", err)
		}
		n, sum := d.columns(`(SELECT `+cols+` FROM app_events UNION ALL SELECT `+cols+` FROM app_events_archive) u`, cols, "")
		if n != wantN || sum != want {
			t.Fatalf("live ∪ archive: %d rows (%s), want %d (%s)", n, sum, wantN, want)
		}
		if k := d.count(`SELECT count(*) FROM app_events WHERE occurred_at < $1`, cutoff); k != 0 {
			t.Fatalf("%d eligible rows left", k)
		}
		if k := d.count(`SELECT count(*) FROM app_events_archive WHERE occurred_at >= $1`, cutoff); k != 0 {
			t.Fatalf("%d archived rows are younger than the cut-off", k)
		}
		// Daily partitions, one per day with rows; the archive made from
		// the live table's definition.
		days := d.count(`SELECT count(DISTINCT date_trunc('day', occurred_at, 'UTC')) FROM app_events_archive`)
		if parts := d.count(`SELECT count(*) FROM pg_inherits WHERE inhparent = 'app_events_archive'::regclass`); parts != days || days < 50 {
			t.Fatalf("%d partitions for %d days with rows", parts, days)
		}
		if k := d.count(`SELECT count(*) FROM pg_class WHERE relname = 'app_events_archive_y2026m01d15'`); k != 1 {
			t.Fatal("no daily partition named app_events_archive_y2026m01d15")
		}
		if got := d.lines(`SELECT attname || ' ' || format_type(atttypid, atttypmod) || CASE WHEN attnotnull THEN ' not null' ELSE '' END
			FROM pg_attribute WHERE attrelid = 'app_events_archive'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`); !slices.Equal(got, []string{
			"occurred_at timestamp with time zone not null", "kind text not null", "actor text", "payload jsonb", "weight numeric(12,3)",
			"archived_at timestamp with time zone not null", "archive_batch_id uuid not null"}) {
			t.Fatalf("archive columns %q", got)
		}
		if res.Tables[0].Batches < 3 { // batches of 300 (growing under the lock budget)
			t.Fatalf("%d batches", res.Tables[0].Batches)
		}
		// A second run changes nothing.
		before := d.fingerprintOf("app_events", "app_events_archive")
		if _, err := d.runEntries(pol, "events"); err != nil {
			t.Fatal(err)
		}
		if after := d.fingerprintOf("app_events", "app_events_archive"); after != before {
			t.Fatal("a second run changed the tables")
		}
	})

	t.Run("orders with a composite key, only closed ones leave (structured where)", func(t *testing.T) {
		d := newRealDB(t, `CREATE SCHEMA shop`, `CREATE TABLE shop.orders (
		    tenant_id  int NOT NULL,
		    order_id   bigint NOT NULL,
		    placed_at  timestamptz NOT NULL,
		    status     text NOT NULL,
		    total      numeric(10,2) NOT NULL,
		    PRIMARY KEY (tenant_id, order_id)
		)`)
		d.exec(fmt.Sprintf(`INSERT INTO shop.orders
			SELECT i %% 5, i, '%s'::timestamptz - i * interval '3 hours', (ARRAY['open','delivered','cancelled','returned'])[1 + i %% 4], i * 1.25
			FROM generate_series(1, 3000) i`, asOf.Format(time.RFC3339)))
		d.migrate()
		d.exec(`GRANT USAGE, CREATE ON SCHEMA shop TO archiver_worker`, `GRANT SELECT, DELETE, UPDATE (status) ON shop.orders TO archiver_worker`)
		pol := declared(t, `
tables:
  - name: orders
    table: shop.orders
    time_column: placed_at
    archive_after_days: 180
    retention_days: 2555
    batch_size: 200
    where:
      - {column: status, op: in, value: [delivered, cancelled]}
      - {column: total, op: ">", value: "10"}`)
		cols := "tenant_id, order_id, placed_at, status, total"
		wantN, want := d.columns("shop.orders", cols, "")
		cutoff := asOf.Add(-180 * 24 * time.Hour)
		due := d.count(`SELECT count(*) FROM shop.orders WHERE placed_at < $1 AND status IN ('delivered', 'cancelled') AND total > 10`, cutoff)
		if _, err := d.runEntries(pol, "orders"); err != nil {
			t.Fatalf("run: %v", err)
		}
		n, sum := d.columns(`(SELECT `+cols+` FROM shop.orders UNION ALL SELECT `+cols+` FROM shop.orders_archive) u`, cols, "")
		if n != wantN || sum != want {
			t.Fatalf("live ∪ archive: %d rows, want %d", n, wantN)
		}
		if k := d.count(`SELECT count(*) FROM shop.orders_archive`); k != due || due == 0 {
			t.Fatalf("%d archived orders, want the %d closed, old ones over 10", k, due)
		}
		if k := d.count(`SELECT count(*) FROM shop.orders_archive WHERE status NOT IN ('delivered', 'cancelled') OR total <= 10 OR placed_at >= $1`, cutoff); k != 0 {
			t.Fatalf("%d archived orders the filter keeps live", k)
		}
		if k := d.count(`SELECT count(*) FROM shop.orders WHERE placed_at < $1 AND status = 'open'`, cutoff); k == 0 {
			t.Fatal("old open orders should stay live")
		}
		// The archive's key is the live key with the time column.
		if got := d.lines(`SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'shop.orders_archive'::regclass AND contype = 'p'`); !slices.Equal(got, []string{"PRIMARY KEY (tenant_id, order_id, placed_at)"}) {
			t.Fatalf("archive key %q", got)
		}
	})
}

func TestDeclaredDownsample(t *testing.T) {
	t.Run("sensor samples kept as hourly aggregates equal to GROUP BY, merged across batches", func(t *testing.T) {
		d := newRealDB(t, `CREATE TABLE sensor_readings (
		    id          bigserial PRIMARY KEY,
		    sensor_id   int NOT NULL,
		    kind        text,
		    read_at     timestamptz NOT NULL,
		    temperature double precision NOT NULL,
		    humidity    numeric(5,2),
		    note        text
		)`)
		d.exec(fmt.Sprintf(`INSERT INTO sensor_readings (sensor_id, kind, read_at, temperature, humidity, note)
			SELECT i %% 4, CASE WHEN i %% 9 = 0 THEN NULL ELSE (ARRAY['indoor','outdoor'])[1 + i %% 2] END,
			       '%s'::timestamptz - i * interval '47 seconds', 15 + (i %% 200) / 10.0,
			       CASE WHEN i %% 7 = 0 THEN NULL ELSE 40 + (i %% 30) END, 'n' || i
			FROM generate_series(1, 40000) i`, asOf.Add(-13*24*time.Hour).Format(time.RFC3339)))
		d.migrate()
		d.exec(`GRANT SELECT, DELETE, UPDATE (id) ON sensor_readings TO archiver_worker`)
		pol := declared(t, `
tables:
  - name: sensor_hourly
    table: sensor_readings
    time_column: read_at
    mode: downsample
    archive_after_days: 14
    retention_days: 730
    batch_size: 1500
    downsample:
      group_by: [sensor_id, kind]
      bucket: hour
      aggregates:
        temperature: [avg, min, max]
        humidity: [avg, count]`)
		cutoff := pol[0].Cutoff(asOf)
		want := d.lines(`SELECT concat_ws(' ', sensor_id, coalesce(kind, 'NULL'), to_char(date_trunc('hour', read_at, 'UTC') AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24'),
		        count(*), round(avg(temperature)::numeric, 6), min(temperature), max(temperature), round(avg(humidity), 6), count(humidity))
			FROM sensor_readings WHERE read_at < $1 GROUP BY sensor_id, kind, date_trunc('hour', read_at, 'UTC') ORDER BY 1`, cutoff)
		res := d.mustRunEntries(pol, "sensor_hourly")
		got := d.lines(`SELECT concat_ws(' ', sensor_id, coalesce(kind, 'NULL'), to_char(read_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24'),
		        sample_count, round(temperature_avg, 6), temperature_min, temperature_max, round(humidity_avg, 6), humidity_count)
			FROM sensor_readings_archive ORDER BY 1`)
		if strings.Join(got, "\n") != strings.Join(want, "\n") || len(want) < 100 {
			t.Fatalf("%d aggregates, want GROUP BY's %d\nfirst: %q\nwant:  %q", len(got), len(want), first(got), first(want))
		}
		if res.Tables[0].RowsMerged == 0 {
			t.Fatalf("summary %+v: batches of 1,500 split hours and must merge", res.Tables[0])
		}
		if k := d.count(`SELECT count(*) FROM sensor_readings WHERE read_at < $1`, cutoff); k != 0 {
			t.Fatalf("%d eligible samples left", k)
		}
		if k := d.count(`SELECT sum(sample_count) FROM sensor_readings_archive`) + d.count(`SELECT count(*) FROM sensor_readings`); k != 40000 {
			t.Fatalf("the aggregates and live rows count %d samples, want 40000", k)
		}
		if k := d.count(`SELECT count(*) FROM archive_batches b WHERE rows_moved <> (SELECT count(*) FROM sensor_readings_archive a WHERE a.archive_batch_id = b.batch_id)`); k != 0 {
			t.Fatalf("%d ledger rows disagree with the rows carrying their batch id", k)
		}
	})
}

func TestDeclaredOffload(t *testing.T) {
	t.Run("uploaded files to their own bucket and prefix, rows to uploads_archive", func(t *testing.T) {
		d := newRealDB(t, `CREATE TABLE uploads (
		    id           bigint PRIMARY KEY,
		    owner        text NOT NULL,
		    storage_path text NOT NULL,
		    content_type text,
		    uploaded_at  timestamptz NOT NULL
		)`)
		d.migrate()
		d.exec(`GRANT SELECT, DELETE, UPDATE (id) ON uploads TO archiver_worker`)
		root := t.TempDir()
		store := testenv.Store(t) // the worker's default bucket
		other := testenv.Store(t) // the entry's own
		files := map[int][]byte{}
		for i := 1; i <= 12; i++ {
			files[i] = testenv.CSV(100+i, 20000+i*100)
			p := filepath.Join(root, "u", fmt.Sprintf("%d.bin", i))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, files[i], 0o644); err != nil {
				t.Fatal(err)
			}
			at := asOf.Add(-time.Duration(80+i*3) * 24 * time.Hour) // 83..116 days old
			d.exec(fmt.Sprintf(`INSERT INTO uploads VALUES (%d, 'owner%d', 'u/%d.bin', 'text/csv', '%s')`, i, i%3, i, at.Format(time.RFC3339)))
		}
		pol := declared(t, fmt.Sprintf(`
tables:
  - name: uploads
    table: uploads
    time_column: uploaded_at
    mode: offload
    archive_after_days: 90
    retention_days: 1825
    batch_size: 5
    offload:
      path_column: storage_path
      root: %s
      bucket: %s
      prefix: uploads/`, root, other.Bucket()))
		d.worker(func(a *activities.Activities) { a.Store = store })
		cols := "id, owner, storage_path, content_type, uploaded_at"
		wantN, want := d.columns("uploads", cols, "")
		res := d.mustRunEntries(pol, "uploads")
		cutoff := asOf.Add(-90 * 24 * time.Hour)
		due := 0
		for i := 1; i <= 12; i++ {
			old := asOf.Add(-time.Duration(80+i*3) * 24 * time.Hour).Before(cutoff)
			_, err := os.Stat(filepath.Join(root, "u", fmt.Sprintf("%d.bin", i)))
			if old {
				due++
				if !os.IsNotExist(err) {
					t.Fatalf("upload %d is archived but its file is still there", i)
				}
				var loc, comp string
				if err := d.db.QueryRow(context.Background(), `SELECT s3_location, archive_info->>'compression' FROM uploads_archive WHERE id = $1`, i).Scan(&loc, &comp); err != nil {
					t.Fatalf("upload %d: %v", i, err)
				}
				if !strings.HasPrefix(loc, "s3://"+other.Bucket()+"/uploads/") {
					t.Fatalf("upload %d went to %s, want the entry's bucket and prefix", i, loc)
				}
				if !bytes.Equal(testenv.Restore(t, other, loc, comp), files[i]) {
					t.Fatalf("upload %d: the object does not restore the file", i)
				}
			} else if err != nil {
				t.Fatalf("upload %d is not due but its file is gone: %v", i, err)
			}
		}
		if res.Tables[0].RowsArchived != int64(due) || due == 0 {
			t.Fatalf("summary %+v, want %d archived", res.Tables[0], due)
		}
		n, sum := d.columns(`(SELECT `+cols+` FROM uploads UNION ALL SELECT `+cols+` FROM uploads_archive) u`, cols, "")
		if n != wantN || sum != want {
			t.Fatalf("live ∪ archive: %d rows, want %d", n, wantN)
		}
		if _, err := objectstore.New(context.Background(), other.Options()); err != nil {
			t.Fatal(err)
		}
	})
}

// Bad inputs only the catalogue can tell: each refused, naming the entry,
// the table or column and what is wrong, before anything is written.
func TestDeclaredRefusals(t *testing.T) {
	d := newRealDB(t, `CREATE TABLE things (id bigint PRIMARY KEY, made_on date NOT NULL, made_at timestamptz NOT NULL, label text, size int)`)
	d.migrate()
	d.exec(`GRANT SELECT, DELETE, UPDATE (id) ON things TO archiver_worker`)
	d.worker(nil)
	entry := "tables:\n  - name: things\n    table: things\n    time_column: made_at\n    archive_after_days: 30\n    retention_days: 60\n"
	for _, tc := range []struct{ name, doc, want string }{
		{"an unknown table", strings.Replace(entry, "table: things", "table: thingz", 1), "things: table thingz does not exist"},
		{"a time column that is not a timestamp", strings.Replace(entry, "time_column: made_at", "time_column: made_on", 1), "things.made_on must be a timestamptz (or timestamp, read as UTC) column; found date"},
		{"an unknown time column", strings.Replace(entry, "time_column: made_at", "time_column: made", 1), "things.made must be a timestamptz (or timestamp, read as UTC) column; found no such column"},
		{"a where on a missing column", entry + "    where: [{column: colour, op: \"=\", value: red}]\n", `things: where[0]: things has no column "colour"`},
		{"a where value of the wrong type", entry + "    where: [{column: size, op: \">\", value: big}]\n", `things: where[0]: "big" is not a integer value for things.size`},
		{"an average of text", entry + "    mode: downsample\n    downsample: {group_by: [size], bucket: day, aggregates: {label: [avg]}}\n", "things: downsample.aggregates.label: things.label is text: only numbers have a sum or an average"},
		{"an unknown group column", entry + "    mode: downsample\n    downsample: {group_by: [colour], bucket: day, aggregates: {size: [sum]}}\n", `things: downsample.group_by: things has no column "colour"`},
		{"an unknown path column", entry + "    mode: offload\n    offload: {path_column: file, root: /tmp}\n", `things: offload.path_column: things has no column "file"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pol := declared(t, tc.doc)
			p := pol[0]
			_, err := d.acts.Preview(context.Background(), activities.PreviewInput{Table: p.Name, Entry: &p, Cutoff: p.Cutoff(asOf), RetentionLimit: p.RetentionLimit(asOf)})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("preview: %v\nwant %q", err, tc.want)
			}
			_, err = d.acts.EnsurePartitions(context.Background(), activities.EnsurePartitionsInput{Table: p.Name, Entry: &p, Cutoff: p.Cutoff(asOf)})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ensure partitions: %v\nwant %q", err, tc.want)
			}
			if k := d.count(`SELECT count(*) FROM pg_class WHERE relname = 'things_archive'`); k != 0 {
				t.Fatal("a refused entry made its archive table")
			}
		})
	}
}

// mustRunEntries runs and fails the test unless every entry completed.
func (d *realDB) mustRunEntries(pol []policy.Table, names ...string) workflows.ArchiveResult {
	d.t.Helper()
	res, err := d.runEntries(pol, names...)
	if err != nil {
		d.t.Fatalf("run failed: %v (summary %+v)", err, res.Tables)
	}
	return res
}

// refusedEntries runs and checks the refusal names cause and nothing moved.
func (d *realDB) refusedEntries(pol []policy.Table, name, cause string) {
	d.t.Helper()
	res, err := d.runEntries(pol, name)
	if err == nil || !strings.Contains(err.Error(), cause) {
		d.t.Fatalf("run: %v\nwant a refusal naming %q", err, cause)
	}
	if res.Tables[0].RowsDeleted != 0 {
		d.t.Fatal("a refused run moved rows")
	}
}

// fingerprintOf digests the rows of the given tables.
func (d *realDB) fingerprintOf(tables ...string) string {
	d.t.Helper()
	var out []string
	for _, tbl := range tables {
		n, s := d.rows(tbl, "")
		out = append(out, fmt.Sprintf("%s:%d:%s", tbl, n, s))
	}
	return strings.Join(out, " ")
}
