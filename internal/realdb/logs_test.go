package realdb

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/workflows"
)

// logsRun archives logs in small batches, so that a run has many.
var logsRun = workflows.ArchiveInput{Tables: []string{"logs"}, BatchSize: 500, MinBatch: 500, MaxBatch: 500}

func TestLiveTableKinds(t *testing.T) {
	t.Run("partitioned by month, pg_partman style, with a DEFAULT partition", func(t *testing.T) {
		d := newRealDB(t, partmanLogsDDL()...)
		// From mid-2023 (the DEFAULT partition) to the run: every partition
		// holds rows whose addresses repeat across partitions.
		d.insertLogs("scenario_logs", 5000, asOf, 5*time.Hour)
		d.migrate()
		wantN, want := d.columns("scenario_logs", logColumns, "")
		youngN, young := d.columns("scenario_logs", logColumns, fmt.Sprintf("received_at >= '%s'", logsCutoff.Format(time.RFC3339Nano)))
		res := d.mustRun(logsRun)
		d.logsMoved(logColumns, wantN, want)
		if n, s := d.columns("scenario_logs", logColumns, ""); n != youngN || s != young {
			t.Fatalf("the live table holds %d rows, want its %d young rows unchanged", n, youngN)
		}
		if res.Tables[0].Batches < 5 {
			t.Fatalf("%d batches: the fixture should need several", res.Tables[0].Batches)
		}
	})

	t.Run("an inheritance parent with children", func(t *testing.T) {
		d := newRealDB(t, logsDDL(", PRIMARY KEY (id)", ""),
			`CREATE TABLE scenario_logs_2024 () INHERITS (scenario_logs)`,
			`CREATE TABLE scenario_logs_2025 () INHERITS (scenario_logs)`)
		// Each table's rows start at the same addresses.
		d.insertLogs("scenario_logs", 800, asOf, 11*time.Hour)
		d.insertLogs("scenario_logs_2024", 800, time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), 9*time.Hour)
		d.insertLogs("scenario_logs_2025", 800, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), 13*time.Hour)
		d.migrate()
		wantN, want := d.columns("scenario_logs", logColumns, "")
		d.mustRun(logsRun)
		d.logsMoved(logColumns, wantN, want)
	})

	t.Run("a plain table without a primary key", func(t *testing.T) {
		d := newRealDB(t, logsDDL("", ""))
		d.insertLogs("scenario_logs", 3000, asOf, 7*time.Hour)
		// Rows sharing one timestamp: without a key to break ties, batches
		// must still take each row once.
		d.exec(fmt.Sprintf(`UPDATE scenario_logs SET received_at = '%s' WHERE size_bytes %% 4 = 0 AND received_at < '%s'`,
			time.Date(2024, 6, 1, 12, 0, 0, 0, time.UTC).Format(time.RFC3339), logsCutoff.Format(time.RFC3339)))
		d.migrate()
		wantN, want := d.columns("scenario_logs", logColumns, "")
		d.mustRun(logsRun)
		d.logsMoved(logColumns, wantN, want)
	})
}

func TestColumns(t *testing.T) {
	t.Run("a column the application added, added to the archive too, is archived with its values", func(t *testing.T) {
		d := newRealDB(t, logsDDL(", tenant_id INTEGER NOT NULL DEFAULT 0, labels JSONB, PRIMARY KEY (id)", ""))
		d.insertLogs("scenario_logs", 2000, asOf, 9*time.Hour)
		d.exec(`UPDATE scenario_logs SET tenant_id = size_bytes % 13, labels = jsonb_build_object('k', size_bytes)`)
		d.migrate()
		d.exec(`ALTER TABLE scenario_logs_archive ADD COLUMN tenant_id INTEGER NOT NULL DEFAULT 0, ADD COLUMN labels JSONB`)
		cols := logColumns + ", tenant_id, labels"
		wantN, want := d.columns("scenario_logs", cols, "")
		d.mustRun(logsRun)
		d.logsMoved(cols, wantN, want)
		if n := d.count(`SELECT count(DISTINCT tenant_id) FROM scenario_logs_archive`); n != 13 {
			t.Fatalf("archived tenant_id takes %d values, want 13: the column was not copied", n)
		}
	})

	t.Run("a column the archive lacks is refused, naming it and the fix", func(t *testing.T) {
		d := newRealDB(t, logsDDL(", tenant_id INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (id)", ""))
		d.insertLogs("scenario_logs", 500, asOf, 24*time.Hour)
		d.migrate()
		d.refused(logsRun, `scenario_logs has column "tenant_id" that scenario_logs_archive lacks: archived rows would lose it; add it to the archive table first: ALTER TABLE "scenario_logs_archive" ADD COLUMN "tenant_id" integer`)
	})

	t.Run("a wider live column is refused with the fix; after the fix the run archives every value whole", func(t *testing.T) {
		d := newRealDB(t, strings.Replace(logsDDL(", PRIMARY KEY (id)", ""), "message_preview VARCHAR(500)", "message_preview VARCHAR(2000)", 1))
		d.insertLogs("scenario_logs", 500, asOf, 24*time.Hour)
		d.exec(`UPDATE scenario_logs SET message_preview = repeat('long ', 300) WHERE size_bytes % 10 = 1`)
		d.migrate()
		d.refused(logsRun, `scenario_logs.message_preview is character varying(2000) but scenario_logs_archive.message_preview is character varying(500)`)
		// The fix the message gives (the view over the column goes first).
		d.exec(`DROP VIEW v_scenario_logs_all`, `ALTER TABLE "scenario_logs_archive" ALTER COLUMN "message_preview" TYPE character varying(2000)`)
		wantN, want := d.columns("scenario_logs", logColumns, "")
		d.mustRun(logsRun)
		d.logsMoved(logColumns, wantN, want)
	})

	t.Run("a nullable live column whose archive column is NOT NULL is refused", func(t *testing.T) {
		d := newRealDB(t, strings.Replace(logsDDL(", PRIMARY KEY (id)", ""), "source          VARCHAR(100) NOT NULL", "source VARCHAR(100)", 1))
		d.insertLogs("scenario_logs", 300, asOf, 48*time.Hour)
		d.exec(`UPDATE scenario_logs SET source = NULL WHERE size_bytes % 9 = 0`)
		d.migrate()
		d.refused(logsRun, `scenario_logs.source is nullable but scenario_logs_archive.source is NOT NULL`)
	})

	t.Run("a timestamp without time zone is read as UTC", func(t *testing.T) {
		d := newRealDB(t, strings.Replace(logsDDL(", PRIMARY KEY (id)", ""), "received_at     TIMESTAMPTZ NOT NULL", "received_at TIMESTAMP NOT NULL", 1))
		d.insertLogs("scenario_logs", 2000, asOf, 9*time.Hour)
		d.migrate()
		// The archive's timestamptz, read back in UTC, is the live wall time.
		cols := "id, ts, message_hash, message_preview, source, size_bytes"
		wantN, want := d.columns(`(SELECT id, received_at AS ts, message_hash, message_preview, source, size_bytes FROM scenario_logs) l`, cols, "")
		d.mustRun(logsRun)
		n, sum := d.columns(`(SELECT id, received_at AS ts, message_hash, message_preview, source, size_bytes FROM scenario_logs
			UNION ALL SELECT id, received_at AT TIME ZONE 'UTC', message_hash, message_preview, source, size_bytes FROM scenario_logs_archive) u`,
			cols, "")
		if n != wantN || sum != want {
			t.Fatalf("live ∪ archive: %d rows (%s), want %d (%s)", n, sum, wantN, want)
		}
		if k := d.count(`SELECT count(*) FROM scenario_logs WHERE received_at < ($1::timestamptz AT TIME ZONE 'UTC')`, logsCutoff); k != 0 {
			t.Fatalf("%d eligible rows left", k)
		}
	})
}

func TestForeignKeys(t *testing.T) {
	for _, tc := range []struct{ name, action, effect string }{
		{"a foreign key that cascades deletes to rows nobody archived", "CASCADE", "change or delete rows of log_notes that were never archived"},
		{"a foreign key that restricts deletes", "RESTRICT", "fail on every row still referenced"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newRealDB(t, logsDDL(", PRIMARY KEY (id)", ""),
				`CREATE TABLE log_notes (id serial PRIMARY KEY, log_id uuid CONSTRAINT notes_of_logs REFERENCES scenario_logs (id) ON DELETE `+tc.action+`, note text)`)
			d.insertLogs("scenario_logs", 400, asOf, 24*time.Hour)
			d.exec(`INSERT INTO log_notes (log_id, note) SELECT id, 'note ' || size_bytes FROM scenario_logs WHERE size_bytes % 3 = 0`)
			d.migrate()
			notesN, notes := d.rows("log_notes", "")
			d.refused(logsRun, "scenario_logs is referenced by foreign key notes_of_logs on log_notes (ON DELETE "+tc.action+"): deleting archived rows would "+tc.effect)
			if n, s := d.rows("log_notes", ""); n != notesN || s != notes {
				t.Fatal("the referencing rows changed")
			}
		})
	}
}

func TestSessionSettings(t *testing.T) {
	t.Run("a database set to DateStyle SQL, DMY and New York time archives twice, in UTC months and days", func(t *testing.T) {
		d := newRealDB(t, logsDDL(", PRIMARY KEY (id)", ""), metricsDDL(""))
		d.exec(`DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET DateStyle = ''SQL, DMY''', current_database());
			EXECUTE format('ALTER DATABASE %I SET TimeZone = ''America/New_York''', current_database()); END $$`)
		d.insertLogs("scenario_logs", 3000, asOf, 5*time.Hour)
		d.insertMetrics(metricsCutoff, 40, 24, "")
		d.migrate()
		wantN, want := d.columns("scenario_logs", logColumns, "")
		wantAggs := d.groupBy("scenario_metrics", metricsCutoff)
		d.mustRun(workflows.ArchiveInput{Tables: []string{"logs", "metrics"}, BatchSize: 700, MinBatch: 700, MaxBatch: 700})
		// The second run reads the partitions the first made (their bounds
		// print as DMY text in New York time in such a session).
		later := asOf.Add(40 * 24 * time.Hour)
		d.mustRun(workflows.ArchiveInput{Tables: []string{"logs", "metrics"}, AsOf: later, BatchSize: 700, MinBatch: 700, MaxBatch: 700})
		n, sum := d.columns(`(SELECT `+logColumns+` FROM scenario_logs UNION ALL SELECT `+logColumns+` FROM scenario_logs_archive) u`, logColumns, "")
		if n != wantN || sum != want {
			t.Fatalf("live ∪ archive: %d rows, want %d", n, wantN)
		}
		if k := d.count(`SELECT count(*) FROM scenario_logs WHERE received_at < $1`, later.Add(-365*24*time.Hour)); k != 0 {
			t.Fatalf("%d eligible rows left after the second run", k)
		}
		// Every partition is a whole UTC month.
		if k := d.count(`SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
			WHERE i.inhparent = 'scenario_logs_archive'::regclass
			  AND pg_get_expr(c.relpartbound, c.oid) NOT LIKE 'FOR VALUES FROM (''____-__-01 00:00:00+00'') TO (''____-__-01 00:00:00+00'')'`); k != 0 {
			t.Fatalf("%d partitions are not whole UTC months", k)
		}
		d.aggregatesEqual(wantAggs)
	})
}

func TestJunkAndOrphans(t *testing.T) {
	t.Run("a row dated 1900 costs one partition; retention then drops it with its month", func(t *testing.T) {
		d := newRealDB(t, logsDDL(", PRIMARY KEY (id)", ""))
		d.insertLogs("scenario_logs", 1000, asOf, 12*time.Hour)
		d.exec(`INSERT INTO scenario_logs (` + logColumns + `) VALUES
			(gen_random_uuid(), gen_random_uuid(), '1900-01-01Z', 'junk', NULL, 'api', 1, false, 1, 1)`)
		d.migrate()
		cols := logColumns
		wantN, want := d.columns("scenario_logs", cols, "received_at >= '1901-01-01Z'")
		res := d.mustRun(logsRun)
		// After retention dropped 1900-01: one partition per month with rows,
		// not the 1,500 months since 1900.
		parts := d.count(`SELECT count(*) FROM pg_inherits WHERE inhparent = 'scenario_logs_archive'::regclass`)
		months := d.count(`SELECT count(DISTINCT date_trunc('month', received_at, 'UTC')) FROM scenario_logs_archive`)
		if parts != months || parts > 7 {
			t.Fatalf("%d partitions for %d months with rows, want one each (late 2024 to March 2025)", parts, months)
		}
		r := res.Tables[0].Retention
		if r == nil || !slices.Equal(r.Partitions, []string{"scenario_logs_archive_y1900m01"}) {
			t.Fatalf("retention removed %+v, want the 1900 partition (past 7 years)", r)
		}
		// Everything but the junk row (past retention) is live or archived.
		n, sum := d.columns(`(SELECT `+cols+` FROM scenario_logs UNION ALL SELECT `+cols+` FROM scenario_logs_archive) u`, cols, "")
		if n != wantN || sum != want {
			t.Fatalf("live ∪ archive: %d rows, want %d", n, wantN)
		}
	})

	t.Run("orphaned partitions of an interrupted drop: one re-attached for new rows, one past retention dropped", func(t *testing.T) {
		d := newRealDB(t, logsDDL(", PRIMARY KEY (id)", ""))
		d.insertLogs("scenario_logs", 2000, asOf, 7*time.Hour)
		d.migrate()
		// As the worker role would have left them: created, filled,
		// detached, never dropped.
		d.exec(`SET ROLE archiver_worker`,
			`CREATE TABLE scenario_logs_archive_y2025m01 PARTITION OF scenario_logs_archive FOR VALUES FROM ('2025-01-01 00:00:00+00') TO ('2025-02-01 00:00:00+00')`,
			`CREATE TABLE scenario_logs_archive_y2018m06 PARTITION OF scenario_logs_archive FOR VALUES FROM ('2018-06-01 00:00:00+00') TO ('2018-07-01 00:00:00+00')`,
			`INSERT INTO scenario_logs_archive (`+logColumns+`, archive_batch_id)
			 VALUES (gen_random_uuid(), gen_random_uuid(), '2018-06-02Z', 'old', 'archived in 2019', 'api', 1, true, 1, 1, gen_random_uuid())`,
			`ALTER TABLE scenario_logs_archive DETACH PARTITION scenario_logs_archive_y2025m01`,
			`ALTER TABLE scenario_logs_archive DETACH PARTITION scenario_logs_archive_y2018m06`,
			`RESET ROLE`)
		d.db.Reset()
		wantN, want := d.columns("scenario_logs", logColumns, "")
		res := d.mustRun(logsRun)
		d.logsMoved(logColumns, wantN, want)
		if k := d.count(`SELECT count(*) FROM scenario_logs_archive_y2025m01`); k == 0 {
			t.Fatal("January 2025's rows are not in its re-attached partition")
		}
		if k := d.count(`SELECT count(*) FROM pg_class WHERE relname = 'scenario_logs_archive_y2018m06'`); k != 0 {
			t.Fatal("the orphan past retention (with has_pii rows) is still there")
		}
		if r := res.Tables[0].Retention; r == nil || !slices.Contains(r.Partitions, "scenario_logs_archive_y2018m06") {
			t.Fatalf("retention removed %+v, want the orphan named", r)
		}
	})

	t.Run("retention drops exactly the months wholly older than as-of minus 7 years", func(t *testing.T) {
		d := newRealDB(t, logsDDL(", PRIMARY KEY (id)", ""))
		// Rows in late February and early March 2019, either side of the
		// limit's month (the limit is 2019-03-17 03:00: 7 × 365 days).
		d.exec(`INSERT INTO scenario_logs (` + logColumns + `)
			SELECT gen_random_uuid(), gen_random_uuid(), ts, 'h', NULL, 'api', 1, false, 1, 1
			FROM unnest(ARRAY['2019-01-31 23:00Z', '2019-02-28 23:59:59Z', '2019-03-01 00:00Z', '2019-03-31 23:00Z', '2019-04-01 00:00Z']::timestamptz[]) ts`)
		d.migrate()
		res := d.mustRun(logsRun)
		r := res.Tables[0].Retention
		want := []string{"scenario_logs_archive_y2019m01", "scenario_logs_archive_y2019m02"}
		if r == nil || !slices.Equal(r.Partitions, want) {
			t.Fatalf("retention removed %+v, want exactly %v (the limit is %s)", r, want, retentionEnd)
		}
		if k := d.count(`SELECT count(*) FROM scenario_logs_archive`); k != 3 {
			t.Fatalf("%d archived rows left, want the 3 of March and April 2019", k)
		}
	})
}

// TestVacuumPartitionedLive: the VACUUM step on a live table partitioned by
// month, as pg_partman makes it. The worker's login does not own it, so the
// run records the skip with the GRANT that would let it; the owner's VACUUM
// (ANALYZE) reaches every partition the rows left.
func TestVacuumPartitionedLive(t *testing.T) {
	d := newRealDB(t, partmanLogsDDL()...)
	d.insertLogs("scenario_logs", 5000, asOf, 5*time.Hour)
	d.migrate()
	d.worker(func(a *activities.Activities) { a.VacuumShare = 0.2 })
	res := d.mustRun(logsRun)
	tr := res.Tables[0]
	if tr.Vacuum == nil || tr.Vacuum.Ran || !strings.Contains(tr.Vacuum.Skipped, "does not own") || !strings.Contains(tr.Vacuum.Skipped, "GRANT") {
		t.Fatalf("vacuum step %+v: want a skip naming the ownership and the GRANT", tr.Vacuum)
	}
	counts := func() (v, a int64) {
		t.Helper()
		if err := d.db.QueryRow(context.Background(), `
			SELECT COALESCE(sum(s.vacuum_count), 0)::bigint, COALESCE(sum(s.analyze_count), 0)::bigint
			FROM pg_partition_tree('scenario_logs') p JOIN pg_stat_user_tables s ON s.relid = p.relid`).Scan(&v, &a); err != nil {
			t.Fatal(err)
		}
		return v, a
	}
	v0, a0 := counts()
	owner := &activities.Activities{DB: d.db, VacuumShare: 0.2}
	vr, err := owner.VacuumTable(context.Background(), activities.VacuumInput{Table: "logs", RowsDeleted: tr.RowsDeleted})
	if err != nil {
		t.Fatal(err)
	}
	v1, a1 := counts()
	if !vr.Ran || vr.Share < 0.2 || v1 < v0+2 || a1 <= a0 {
		t.Fatalf("owner's vacuum %+v: vacuum_count %d -> %d, analyze_count %d -> %d over the partitions; want it ran on them all", vr, v0, v1, a0, a1)
	}
}

// partmanLogsDDL is scenario_logs partitioned by month as pg_partman makes
// it: the seed's columns, a primary key with the partition key, monthly
// partitions and a DEFAULT partition.
func partmanLogsDDL() []string {
	ddl := []string{logsDDL(", PRIMARY KEY (id, received_at)", "PARTITION BY RANGE (received_at)")}
	ddl = append(ddl, monthlyPartitions("scenario_logs")...)
	return append(ddl, `CREATE TABLE scenario_logs_default PARTITION OF scenario_logs DEFAULT`)
}

// monthlyPartitions is the DDL of parent's monthly partitions from 2024-01
// to 2026-06, named <parent>_pYYYY_MM as pg_partman names them.
func monthlyPartitions(parent string) []string {
	var ddl []string
	for m := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC); m.Before(time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC)); m = m.AddDate(0, 1, 0) {
		ddl = append(ddl, fmt.Sprintf(`CREATE TABLE %s_p%s PARTITION OF %s FOR VALUES FROM ('%s') TO ('%s')`,
			parent, m.Format("2006_01"), parent, m.Format(time.RFC3339), m.AddDate(0, 1, 0).Format(time.RFC3339)))
	}
	return ddl
}
