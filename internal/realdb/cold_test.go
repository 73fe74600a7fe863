package realdb

import (
	"context"
	"fmt"
	"github.com/jackc/pgx/v5"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/policy"
	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/workflows"
)

// TestDeclaredColdArchive: a table our migrations did not make (its own
// schema, a composite key, uuid, numeric, jsonb, bool, timestamp and
// nullable columns) archived by a declared entry with a Parquet export:
// the partitions past retention are exported and dropped, verify accounts
// for every batch, and a restore of a window that reaches into exported
// and archived months brings its rows back identical by content.
func TestDeclaredColdArchive(t *testing.T) {
	d := newRealDB(t, `CREATE SCHEMA billing`, `CREATE TABLE billing.invoices (
	    tenant_id  int NOT NULL,
	    invoice_id uuid NOT NULL,
	    issued_at  timestamptz NOT NULL,
	    due_on     timestamp,
	    amount     numeric(14,4) NOT NULL,
	    paid       boolean,
	    lines      jsonb,
	    note       text,
	    PRIMARY KEY (tenant_id, invoice_id)
	)`, `CREATE INDEX ON billing.invoices (issued_at)`)
	d.exec(fmt.Sprintf(`INSERT INTO billing.invoices
		SELECT i %% 7, md5('inv' || i)::uuid, '%s'::timestamptz - i * interval '5 hours 13 minutes',
		       CASE WHEN i %% 5 = 0 THEN NULL ELSE '2026-01-01'::timestamp + i * interval '1 hour' END,
		       i * 3.1415, CASE WHEN i %% 3 = 0 THEN NULL ELSE i %% 2 = 0 END,
		       jsonb_build_object('n', i, 'sku', 'A"' || (i %% 11)),
		       CASE WHEN i %% 4 = 0 THEN NULL WHEN i %% 4 = 1 THEN '' ELSE 'note, with "quotes"' END
		FROM generate_series(1, 5000) i`, asOf.Format(time.RFC3339)))
	d.migrate()
	d.exec(`GRANT USAGE, CREATE ON SCHEMA billing TO archiver_worker`, `GRANT SELECT, DELETE, UPDATE (note) ON billing.invoices TO archiver_worker`)
	st := testenv.Store(t)
	d.worker(func(a *activities.Activities) { a.Store = st })
	pol := declared(t, `
tables:
  - name: invoices
    table: billing.invoices
    time_column: issued_at
    archive_after_days: 60
    retention_days: 300
    batch_size: 400
    export: {prefix: cold/, format: parquet}`)
	cols := "tenant_id, invoice_id, issued_at, due_on, amount, paid, lines, note"
	const window = "issued_at >= '2025-04-20' AND issued_at < '2025-12-01'"
	// The restore widens to the exported months it touches: from 2025-04-01.
	const wide = "issued_at >= '2025-04-01' AND issued_at < '2025-12-01'"
	wantN, want := d.columns("billing.invoices", cols, wide)
	res := d.mustRunEntries(pol, "invoices")
	r := res.Tables[0].Retention
	if r == nil || len(r.Exports) == 0 || r.ExportedRows == 0 {
		t.Fatalf("retention %+v: want partitions exported", r)
	}
	ex, err := activities.Exports(context.Background(), d.db, "billing.invoices_archive")
	if err != nil || len(ex) != len(r.Exports) {
		t.Fatalf("%d manifests (%v), want %d", len(ex), err, len(r.Exports))
	}
	for _, e := range ex {
		if e.State != activities.ExportDropped || e.Key[:len("cold/invoices_archive/year=")] != "cold/invoices_archive/year=" {
			t.Fatalf("manifest %s: %s %s", e.Partition, e.State, e.Key)
		}
	}
	entry := pol[0]
	rep, err := d.acts.Verify(context.Background(), activities.VerifyInput{Entries: pol, Deep: true})
	if err != nil || rep.Failed() {
		t.Fatalf("verify: %+v (%v)", rep, err)
	}
	d.exec(`GRANT INSERT ON billing.invoices TO archiver_worker`)
	got := d.restore(entry, time.Date(2025, 4, 20, 0, 0, 0, 0, time.UTC), time.Date(2025, 12, 1, 0, 0, 0, 0, time.UTC))
	if got.RowsFromExports == 0 || got.RowsFromArchive == 0 {
		t.Fatalf("restore %+v: want rows from exports and from the archive", got)
	}
	if n, sum := d.columns("billing.invoices", cols, wide); n != wantN || sum != want {
		t.Fatalf("the window after the restore: %d rows (%s), want %d (%s)", n, sum, wantN, want)
	}
	if k := d.count(`SELECT count(*) FROM billing.invoices_archive WHERE ` + window); k != 0 {
		t.Fatalf("%d rows of the window still archived", k)
	}
	if rep, err := d.acts.Verify(context.Background(), activities.VerifyInput{Entries: []policy.Table{entry}}); err != nil || rep.Failed() {
		t.Fatalf("verify after the restore: %+v (%v)", rep, err)
	}
}

// TestColdArchivePartitionedLive: the cold archive's paths (export before
// drop, restore from the export and from the archive, verify) on a live
// table partitioned by month with a DEFAULT partition, as pg_partman makes
// them, in a database whose sessions default to DateStyle 'SQL, DMY',
// IntervalStyle 'sql_standard' and Chatham time (UTC+12:45): the restored
// rows route back into their live partitions, identical by content.
func TestColdArchivePartitionedLive(t *testing.T) {
	ddl := []string{`CREATE SCHEMA app`, `CREATE TABLE app.events (
	    id       bigint NOT NULL,
	    at       timestamptz NOT NULL,
	    kind     text NOT NULL,
	    payload  jsonb,
	    took     interval,
	    PRIMARY KEY (id, at)
	) PARTITION BY RANGE (at)`}
	ddl = append(ddl, monthlyPartitions("app.events")...)
	ddl = append(ddl, `CREATE TABLE app.events_default PARTITION OF app.events DEFAULT`)
	d := newRealDB(t, ddl...)
	// From 2023-08 (the DEFAULT partition) to the run's instant.
	d.exec(fmt.Sprintf(`INSERT INTO app.events
		SELECT i, '%s'::timestamptz - i * interval '3 hours 7 minutes', 'k' || (i %% 5),
		       CASE WHEN i %% 4 = 0 THEN NULL ELSE jsonb_build_object('i', i) END, i * interval '1 second'
		FROM generate_series(1, 7000) i`, asOf.Format(time.RFC3339)))
	d.exec(`DO $$ BEGIN
		EXECUTE format('ALTER DATABASE %I SET DateStyle = ''SQL, DMY''', current_database());
		EXECUTE format('ALTER DATABASE %I SET IntervalStyle = ''sql_standard''', current_database());
		EXECUTE format('ALTER DATABASE %I SET TimeZone = ''Pacific/Chatham''', current_database()); END $$`)
	d.migrate()
	d.exec(`GRANT USAGE, CREATE ON SCHEMA app TO archiver_worker`, `GRANT SELECT, DELETE, UPDATE (id) ON app.events TO archiver_worker`)
	st := testenv.Store(t)
	d.worker(func(a *activities.Activities) { a.Store = st })
	pol := declared(t, `
tables:
  - name: events
    table: app.events
    time_column: at
    archive_after_days: 60
    retention_days: 400
    batch_size: 500
    export: {prefix: cold/, format: parquet}`)
	const cols = "id, at, kind, payload, took"
	allN, all := d.columns("app.events", cols, "")
	res := d.mustRunEntries(pol, "events")
	if r := res.Tables[0].Retention; r == nil || len(r.Exports) == 0 {
		t.Fatalf("retention %+v: want exported partitions", r)
	}
	if n, sum := d.columns(fmt.Sprintf(`(SELECT %[1]s FROM app.events UNION ALL SELECT %[1]s FROM app.events_archive) u`, cols), cols, ""); n >= allN || n == 0 {
		t.Fatalf("live ∪ archive holds %d rows (%s) of %d: want the exported ones gone from both", n, sum, allN)
	}
	if rep, err := d.acts.Verify(context.Background(), activities.VerifyInput{Entries: pol, Deep: true}); err != nil || rep.Failed() {
		t.Fatalf("verify: %+v (%v)", rep, err)
	}
	// Everything before the archive cut-off comes back: from the exports
	// (older than retention) and from the archive.
	entry := pol[0]
	d.exec(`GRANT INSERT ON app.events TO archiver_worker`)
	got := d.restore(entry, time.Date(2023, 1, 1, 0, 0, 0, 0, time.UTC), asOf)
	if got.RowsFromExports == 0 || got.RowsFromArchive == 0 {
		t.Fatalf("restore %+v: want rows from exports and from the archive", got)
	}
	if n, sum := d.columns("app.events", cols, ""); n != allN || sum != all {
		t.Fatalf("after the restore the live table holds %d rows (%s), want the original %d (%s)", n, sum, allN, all)
	}
	// Each row is back in the partition its time routes to.
	if k := d.count(`SELECT count(*) FROM app.events_default WHERE at >= '2024-01-01 00:00:00+00'`); k != 0 {
		t.Fatalf("%d restored rows landed in the DEFAULT partition", k)
	}
	if k := d.count(`SELECT count(*) FROM app.events_archive`); k != 0 {
		t.Fatalf("%d rows still archived after restoring everything", k)
	}
	if rep, err := d.acts.Verify(context.Background(), activities.VerifyInput{Entries: []policy.Table{entry}}); err != nil || rep.Failed() {
		t.Fatalf("verify after the restore: %+v (%v)", rep, err)
	}
}

// restore runs RestoreWorkflow for entry's window [after, before) and
// fails the test unless it completes.
func (d *realDB) restore(entry policy.Table, after, before time.Time) workflows.RestoreResult {
	d.t.Helper()
	run, err := d.c.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{ID: "realdb-restore-" + testenv.RandomID(), TaskQueue: d.queue},
		workflows.RestoreWorkflowName, workflows.RestoreRequest{Table: entry.Name, Policy: &entry, After: after, Before: before})
	if err != nil {
		d.t.Fatal(err)
	}
	var got workflows.RestoreResult
	if err := testenv.Wait(d.t, d.c, run, testenv.DefaultWait, &got); err != nil {
		d.t.Fatalf("restore: %v", err)
	}
	return got
}

// TestColdArchiveGeneratedColumns: a ledger table with an identity column
// (GENERATED ALWAYS AS IDENTITY) and a stored generated column, archived,
// exported with its values, dropped past retention, and restored: every
// row comes back identical, the generated values recomputed equal.
func TestColdArchiveGeneratedColumns(t *testing.T) {
	d := newRealDB(t, `CREATE SCHEMA ledger`, `CREATE TABLE ledger.entries (
	    id           bigint GENERATED ALWAYS AS IDENTITY,
	    booked_at    timestamptz NOT NULL,
	    amount       numeric(12,2) NOT NULL,
	    amount_cents bigint GENERATED ALWAYS AS ((amount * 100)::bigint) STORED,
	    memo         text,
	    PRIMARY KEY (id)
	)`, `CREATE INDEX ON ledger.entries (booked_at)`)
	d.exec(fmt.Sprintf(`INSERT INTO ledger.entries (booked_at, amount, memo)
		SELECT '%s'::timestamptz - i * interval '7 hours 11 minutes', i * 1.37 - 900,
		       CASE WHEN i %% 3 = 0 THEN NULL ELSE 'entry ' || i END
		FROM generate_series(1, 4000) i`, asOf.Format(time.RFC3339)))
	d.migrate()
	d.exec(`GRANT USAGE, CREATE ON SCHEMA ledger TO archiver_worker`, `GRANT SELECT, DELETE, UPDATE (memo) ON ledger.entries TO archiver_worker`)
	st := testenv.Store(t)
	d.worker(func(a *activities.Activities) { a.Store = st })
	pol := declared(t, `
tables:
  - name: entries
    table: ledger.entries
    time_column: booked_at
    archive_after_days: 60
    retention_days: 300
    batch_size: 500
    export: {prefix: cold/, format: parquet}`)
	const cols = "id, booked_at, amount, amount_cents, memo"
	allN, all := d.columns("ledger.entries", cols, "")
	res := d.mustRunEntries(pol, "entries")
	r := res.Tables[0].Retention
	if r == nil || len(r.Exports) == 0 || r.ExportedRows == 0 {
		t.Fatalf("retention %+v: want partitions exported", r)
	}
	ex, err := activities.Exports(context.Background(), d.db, "ledger.entries_archive")
	if err != nil || len(ex) != len(r.Exports) {
		t.Fatalf("%d manifests (%v), want %d", len(ex), err, len(r.Exports))
	}
	for _, e := range ex {
		if e.State != activities.ExportDropped {
			t.Fatalf("manifest %s: %s", e.Partition, e.State)
		}
		var names []string
		for _, c := range e.Columns {
			names = append(names, c.Name)
		}
		if got := strings.Join(names, ", "); !strings.HasPrefix(got, cols) {
			t.Fatalf("%s exported the columns %s, want %s first", e.Partition, got, cols)
		}
	}
	// The exported rows are gone from the database; the rest are live or
	// archived, identical.
	if n, _ := d.columns(fmt.Sprintf(`(SELECT %[1]s FROM ledger.entries UNION ALL SELECT %[1]s FROM ledger.entries_archive) u`, cols), cols, ""); n+r.ExportedRows != allN {
		t.Fatalf("live ∪ archive holds %d rows and %d were exported, want %d in all", n, r.ExportedRows, allN)
	}
	if rep, err := d.acts.Verify(context.Background(), activities.VerifyInput{Entries: pol, Deep: true}); err != nil || rep.Failed() {
		t.Fatalf("verify: %+v (%v)", rep, err)
	}
	d.exec(`GRANT INSERT ON ledger.entries TO archiver_worker`)
	got := d.restore(pol[0], time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), asOf)
	if got.RowsFromExports == 0 || got.RowsFromArchive == 0 {
		t.Fatalf("restore %+v: want rows from exports and from the archive", got)
	}
	if n, sum := d.columns("ledger.entries", cols, ""); n != allN || sum != all {
		t.Fatalf("after the restore the live table holds %d rows (%s), want the original %d (%s)", n, sum, allN, all)
	}
	// A new row still gets its identity and its generated value.
	d.exec(`INSERT INTO ledger.entries (booked_at, amount) VALUES (now(), 1)`)
	if k := d.count(`SELECT count(*) FROM ledger.entries WHERE amount_cents <> (amount * 100)::bigint`); k != 0 {
		t.Fatalf("%d rows whose generated column is not its expression's", k)
	}
}

// TestColdArchiveFloatDigits: an application that set extra_float_digits
// = 0 on its database (PostgreSQL's text form of a float then rounds to
// 15 significant digits): floats inside arrays are exported through their
// text form, and come back exactly as they were, in both formats.
func TestColdArchiveFloatDigits(t *testing.T) {
	for _, format := range []string{"parquet", "csv"} {
		t.Run(format, func(t *testing.T) {
			d := newRealDB(t, `CREATE TABLE readings (
			    id      bigint PRIMARY KEY,
			    at      timestamptz NOT NULL,
			    samples float8[],
			    ratios  real[]
			)`, `CREATE INDEX ON readings (at)`)
			d.exec(fmt.Sprintf(`INSERT INTO readings
				SELECT i, '%s'::timestamptz - i * interval '9 hours', ARRAY[i / 3.0, 0.1 + 0.2, 1e-310]::float8[], ARRAY[i / 7.0]::real[]
				FROM generate_series(1, 3000) i`, asOf.Format(time.RFC3339)))
			d.exec(`DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET extra_float_digits = 0', current_database()); END $$`)
			d.migrate()
			d.exec(`GRANT SELECT, DELETE, UPDATE (id), INSERT ON readings TO archiver_worker`, `GRANT USAGE, CREATE ON SCHEMA public TO archiver_worker`)
			st := testenv.Store(t)
			d.worker(func(a *activities.Activities) { a.Store = st })
			pol := declared(t, fmt.Sprintf(`
tables:
  - name: readings
    table: readings
    time_column: at
    archive_after_days: 60
    retention_days: 300
    batch_size: 500
    export: {prefix: cold/, format: %s}`, format))
			// Digests taken with every digit of every float.
			digest := func() (int64, string) {
				var n int64
				var sum string
				err := pgx.BeginFunc(context.Background(), d.db, func(tx pgx.Tx) error {
					if _, err := tx.Exec(context.Background(), `SET LOCAL extra_float_digits = 3`); err != nil {
						return err
					}
					return tx.QueryRow(context.Background(), `SELECT count(*), md5(string_agg(md5(row(id, at, samples, ratios)::text), '' ORDER BY id)) FROM readings`).Scan(&n, &sum)
				})
				if err != nil {
					t.Fatal(err)
				}
				return n, sum
			}
			wantN, want := digest()
			res := d.mustRunEntries(pol, "readings")
			if r := res.Tables[0].Retention; r == nil || r.ExportedRows == 0 {
				t.Fatalf("retention %+v: want partitions exported", r)
			}
			got := d.restore(pol[0], time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), asOf)
			if got.RowsFromExports == 0 {
				t.Fatalf("restore %+v: want rows from exports", got)
			}
			if n, sum := digest(); n != wantN || sum != want {
				t.Fatalf("after export and restore the table holds %d rows (%s), want the original %d (%s): floats lost digits on the way", n, sum, wantN, want)
			}
		})
	}
}
