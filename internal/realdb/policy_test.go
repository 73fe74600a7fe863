package realdb

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mockupaws/archiver/activities"
)

// Downsampling and policy entries on tables we did not create: weekly
// buckets that start before the samples' own partition span.

// TestDownsampleWeekly: a weekly aggregate is dated its Monday (date_bin
// with a Monday origin), which may lie in a partition span that holds no
// sample: the month before, or a day without samples. The archive
// partition of the bucket's start must exist for the run to archive.
func TestDownsampleWeekly(t *testing.T) {
	const ddl = `CREATE TABLE samples (
	    id        bigserial PRIMARY KEY,
	    sensor_id int NOT NULL,
	    taken_at  timestamptz NOT NULL,
	    reading   double precision NOT NULL
	)`
	entry := func(partition string) string {
		return `
tables:
  - name: samples_weekly
    table: samples
    time_column: taken_at
    mode: downsample
    partition: ` + partition + `
    archive_after_days: 30
    retention_days: 3650
    batch_size: 100
    downsample:
      group_by: [sensor_id]
      bucket: week
      aggregates:
        reading: [avg, count, min, max]`
	}
	check := func(d *realDB, wantWeeks []string, samples int64) {
		t := d.t
		weeks := d.lines(`SELECT DISTINCT to_char(taken_at AT TIME ZONE 'UTC', 'YYYY-MM-DD Dy') FROM samples_archive ORDER BY 1`)
		if strings.Join(weeks, ",") != strings.Join(wantWeeks, ",") {
			t.Fatalf("archived buckets %q, want %q", weeks, wantWeeks)
		}
		want := d.lines(`SELECT concat_ws(' ', sensor_id, to_char(date_bin('7 days', taken_at, '2000-01-03 00:00:00+00') AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
		        count(*), round(avg(reading)::numeric, 6), min(reading), max(reading))
			FROM samples_snapshot GROUP BY sensor_id, date_bin('7 days', taken_at, '2000-01-03 00:00:00+00') ORDER BY 1`)
		got := d.lines(`SELECT concat_ws(' ', sensor_id, to_char(taken_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
		        sample_count, round(reading_avg, 6), reading_min, reading_max) FROM samples_archive ORDER BY 1`)
		if strings.Join(got, "\n") != strings.Join(want, "\n") || len(want) == 0 {
			t.Fatalf("%d aggregates, want GROUP BY's %d\nfirst: %q\nwant:  %q", len(got), len(want), first(got), first(want))
		}
		if k := d.count(`SELECT count(*) FROM samples`); k != 0 {
			t.Fatalf("%d samples left live, want none (all are past the cut-off)", k)
		}
		if k := d.count(`SELECT sum(sample_count) FROM samples_archive`); k != samples {
			t.Fatalf("the aggregates count %d samples, want %d", k, samples)
		}
	}

	t.Run("samples from Thursday the 1st: the first week's Monday is in the month before", func(t *testing.T) {
		d := newRealDB(t, ddl)
		// 2026-01-01 is a Thursday: its week starts on Monday 2025-12-29.
		d.exec(`INSERT INTO samples (sensor_id, taken_at, reading)
			SELECT i % 3, '2026-01-01 00:00:00+00'::timestamptz + i * interval '1 hour', (i % 40) / 4.0
			FROM generate_series(0, 20 * 24 - 1) i`,
			`CREATE TABLE samples_snapshot AS SELECT * FROM samples`)
		d.migrate()
		d.exec(`GRANT SELECT, DELETE, UPDATE (id) ON samples TO archiver_worker`)
		pol := declared(t, entry("month"))
		if c := pol[0].Cutoff(asOf); !c.After(time.Date(2026, 1, 21, 0, 0, 0, 0, time.UTC)) {
			t.Fatalf("cut-off %s: the test wants every sample eligible", c)
		}
		d.mustRunEntries(pol, "samples_weekly")
		check(d, []string{"2025-12-29 Mon", "2026-01-05 Mon", "2026-01-12 Mon", "2026-01-19 Mon"}, 20*24)
		if k := d.count(`SELECT count(*) FROM pg_class WHERE relname = 'samples_archive_y2025m12'`); k != 1 {
			t.Fatal("no December partition for the week of Monday 2025-12-29")
		}
	})

	t.Run("daily partitions, samples from Wednesday to Friday: no sample on the Monday", func(t *testing.T) {
		d := newRealDB(t, ddl)
		d.exec(`INSERT INTO samples (sensor_id, taken_at, reading)
			SELECT i % 2, '2026-01-07 00:00:00+00'::timestamptz + i * interval '20 minutes', i % 17
			FROM generate_series(0, 3 * 72 - 1) i`,
			`INSERT INTO samples (sensor_id, taken_at, reading)
			SELECT i % 2, '2026-01-14 06:00:00+00'::timestamptz + i * interval '1 hour', i % 5
			FROM generate_series(0, 9) i`,
			`CREATE TABLE samples_snapshot AS SELECT * FROM samples`)
		d.migrate()
		d.exec(`GRANT SELECT, DELETE, UPDATE (id) ON samples TO archiver_worker`)
		pol := declared(t, entry("day"))
		d.mustRunEntries(pol, "samples_weekly")
		check(d, []string{"2026-01-05 Mon", "2026-01-12 Mon"}, 3*72+10)
		parts := d.lines(`SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'samples_archive'::regclass ORDER BY 1`)
		for _, p := range []string{"samples_archive_y2026m01d05", "samples_archive_y2026m01d12"} {
			if !strings.Contains(strings.Join(parts, ","), p) {
				t.Fatalf("archive partitions %q: no %s for the Monday bucket", parts, p)
			}
		}
	})
}

// TestWhereComparesValues: a condition's value is compared with the
// column's values, never first converted to the column's declared type,
// whose modifier truncates (varchar(10)) or rounds (numeric(10,2))
// silently, so that a value the column cannot hold matched rows it never
// named. A char(n) column keeps its comparison, blank-padded.
func TestWhereComparesValues(t *testing.T) {
	ddl := []string{`CREATE DOMAIN short_label AS varchar(10)`, `CREATE DOMAIN label AS short_label`, `CREATE TABLE deliveries (
	    id         bigserial PRIMARY KEY,
	    shipped_at timestamptz NOT NULL,
	    status     varchar(10) NOT NULL,
	    fee        numeric(10,2) NOT NULL,
	    code       char(6) NOT NULL,
	    tag        label
	)`}
	const rows = `INSERT INTO deliveries (shipped_at, status, fee, code, tag)
		SELECT '2025-06-01 00:00:00+00'::timestamptz + i * interval '1 hour',
		       (ARRAY['delivered_', 'delivered', 'cancelled'])[1 + i % 3], (ARRAY[1.01, 1.00, 2.50])[1 + i % 3], (ARRAY['ab', 'abc', 'x'])[1 + i % 3],
		       (ARRAY['delivered_', 'delivered', 'cancelled'])[1 + i % 3]
		FROM generate_series(0, 299) i`
	for _, tc := range []struct {
		name, where, moved string
	}{
		{"a varchar(10) value longer than 10 characters matches no row", `{column: status, op: in, value: [delivered_late, cancelled]}`, `status = 'cancelled'`},
		{"a varchar(10) value with = and <>", `{column: status, op: "<>", value: delivered_late}`, `true`},
		{"a numeric(10,2) value with three decimals matches no row", `{column: fee, op: "=", value: "1.005"}`, `false`},
		{"a numeric(10,2) value compared by <=", `{column: fee, op: "<=", value: "1.005"}`, `fee <= 1.005`},
		{"a value for a domain over varchar(10) matches no row", `{column: tag, op: "=", value: delivered_late}`, `false`},
		{"a char(6) value compares blank-padded", `{column: code, op: in, value: [ab, "x "]}`, `code IN ('ab', 'x')`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newRealDB(t, ddl...)
			d.exec(rows)
			d.migrate()
			d.exec(`GRANT SELECT, DELETE, UPDATE (id) ON deliveries TO archiver_worker`)
			pol := declared(t, `
tables:
  - name: deliveries
    table: deliveries
    time_column: shipped_at
    archive_after_days: 30
    retention_days: 3650
    where:
      - `+tc.where)
			want := d.lines(`SELECT id::text FROM deliveries WHERE ` + tc.moved + ` ORDER BY id`)
			d.mustRunEntries(pol, "deliveries")
			got := d.lines(`SELECT id::text FROM deliveries_archive ORDER BY id`)
			if strings.Join(got, ",") != strings.Join(want, ",") {
				left := d.lines(`SELECT DISTINCT concat_ws(' ', status, fee, code) FROM deliveries_archive a WHERE NOT (` + tc.moved + `) ORDER BY 1`)
				t.Fatalf("%d rows archived, want the %d where %s; archived that the condition does not name: %q", len(got), len(want), tc.moved, left)
			}
		})
	}
}

// TestSharedRelations: two entries that name one relation, however they
// spell it, are refused. The policy file's own check compares names with
// unqualified ones taken to be in public; the database resolves them
// through the search path in force, and a worker, which sees only its own
// entry, refuses an archive table the archiver made for another live
// table.
func TestSharedRelations(t *testing.T) {
	const orders = `(id bigint PRIMARY KEY, placed_at timestamptz NOT NULL, total numeric(10,2) NOT NULL)`
	t.Run("names resolved through the search path", func(t *testing.T) {
		d := newRealDB(t, `CREATE SCHEMA app`, `CREATE TABLE app.orders `+orders, `CREATE TABLE app.events `+orders, `CREATE TABLE public.events `+orders)
		d.exec(`DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET search_path = app, public', current_database()); END $$`)
		d.migrate()
		entry := func(name, table, archive string) string {
			s := "  - {name: " + name + ", table: " + table + ", time_column: placed_at, archive_after_days: 30, retention_days: 400"
			if archive != "" {
				s += ", archive_table: " + archive
			}
			return s + "}\n"
		}
		for _, tc := range []struct {
			name, doc string
			want      []string
		}{
			{"orders is app.orders", entry("a", "orders", "") + entry("b", "app.orders", "app.orders_old"),
				[]string{`entries "a" and "b" both archive app.orders (named orders and app.orders): one entry a table`}},
			{"an archive table not made yet, in the search path's first schema", entry("a", "app.events", "") + entry("b", "public.events", "events_archive"),
				[]string{`entries "a" and "b" share the archive table app.events_archive (named app.events_archive and events_archive): retention for one would drop the other's rows`}},
			{"a live table is another's archive", entry("a", "app.events", "") + entry("b", "events_archive", "events_archive2"),
				[]string{`app.events_archive is the archive table of entry "a" and the live table of entry "b" (named app.events_archive and events_archive)`}},
			{"other schemas are other tables", entry("a", "app.events", "") + entry("b", "public.events", "") + entry("c", "orders", ""), nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				pol := declared(t, "tables:\n"+tc.doc) // the file's own check passes them
				shared, err := activities.SharedRelations(context.Background(), d.db, pol)
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, s := range shared {
					got = append(got, s.Message)
				}
				if len(got) != len(tc.want) {
					t.Fatalf("shared %q\nwant %q", got, tc.want)
				}
				for i := range got {
					if !strings.Contains(got[i], tc.want[i]) {
						t.Fatalf("shared %q\nwant %q", got[i], tc.want[i])
					}
				}
			})
		}
	})

	t.Run("a worker refuses an archive table made for another live table", func(t *testing.T) {
		d := newRealDB(t, `CREATE TABLE orders_eu `+orders, `CREATE TABLE orders_us `+orders)
		d.exec(`INSERT INTO orders_eu SELECT i, '2025-06-01'::timestamptz + i * interval '1 hour', i FROM generate_series(1, 50) i`,
			`INSERT INTO orders_us SELECT 1000 + i, '2025-06-01'::timestamptz + i * interval '1 hour', i FROM generate_series(1, 50) i`)
		d.migrate()
		d.exec(`GRANT SELECT, DELETE, UPDATE (id) ON orders_eu, orders_us TO archiver_worker`)
		// Each entry reaches the worker alone (two files, or a workflow
		// started by hand): the file's check never saw them together.
		eu := declared(t, "tables:\n  - {name: orders_eu, table: orders_eu, time_column: placed_at, archive_table: orders_archive, archive_after_days: 30, retention_days: 400}\n")
		us := declared(t, "tables:\n  - {name: orders_us, table: orders_us, time_column: placed_at, archive_table: orders_archive, archive_after_days: 30, retention_days: 400}\n")
		d.mustRunEntries(eu, "orders_eu")
		if k := d.count(`SELECT count(*) FROM orders_archive`); k != 50 {
			t.Fatalf("%d rows archived from orders_eu, want 50", k)
		}
		d.refusedEntries(us, "orders_us", `orders_us: orders_archive is the archive table of orders_eu (policy entry orders_eu), not of orders_us`)
		if k := d.count(`SELECT count(*) FROM orders_us`); k != 50 {
			t.Fatalf("%d rows left in orders_us, want all 50", k)
		}
	})
}
