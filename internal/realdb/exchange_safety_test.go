package realdb

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/testenv"
)

// Partition exchange on tables it must not lose rows of: a partition moves
// whole only when every row of it is due and the catalogue proves it can be
// attached to the archive; otherwise its rows move by batches, and a
// partition an exchange detached goes back to the live table rather than
// stay in neither.

// ownAll gives parent and its partitions to owner, as an application's
// migrations would have made them.
func (d *realDB) ownAll(owner string, tables ...string) {
	d.t.Helper()
	for _, parent := range tables {
		d.exec(fmt.Sprintf(`DO $$ DECLARE r regclass; BEGIN
			FOR r IN SELECT %[1]s::regclass UNION ALL SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = %[1]s::regclass LOOP
				EXECUTE format('ALTER TABLE %%s OWNER TO %[2]s', r);
			END LOOP; END $$`, quoteLit(parent), owner))
	}
}

func quoteLit(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// exchangeLogs is partitionedLogs with 3,200 rows every 6 hours back from
// the run (2024-01-05 to 2026-03-15): 14 months lie wholly before the
// cut-off, 2024-01 to 2025-02.
func exchangeLogs(t *testing.T) *realDB {
	d := partitionedLogs(t, true)
	d.insertLogs("scenario_logs", 3200, asOf, 6*time.Hour)
	return d
}

// liveRowsOf counts the rows of one calendar month in the live table.
func (d *realDB) liveRowsOf(month time.Time) int64 {
	d.t.Helper()
	return d.count(`SELECT count(*) FROM scenario_logs WHERE received_at >= $1 AND received_at < $2`, month, month.AddDate(0, 1, 0))
}

func TestExchangeNeverTakesRowsAWhereKeeps(t *testing.T) {
	owner := ownerRole(t)
	ddl := []string{`CREATE TABLE orders (
	    order_id  bigint NOT NULL,
	    placed_at timestamptz NOT NULL,
	    status    text NOT NULL,
	    total     numeric(10,2) NOT NULL,
	    PRIMARY KEY (order_id, placed_at)
	) PARTITION BY RANGE (placed_at)`}
	d := newRealDB(t, append(ddl, monthlyPartitions("orders")...)...)
	d.exec(fmt.Sprintf(`INSERT INTO orders
		SELECT i, '%s'::timestamptz - i * interval '7 hours', (ARRAY['open','delivered','pending','cancelled'])[1 + i %% 4], i * 1.25
		FROM generate_series(1, 2400) i`, asOf.Format(time.RFC3339)))
	d.ownAll(owner, "orders")
	d.migrate()
	d.exec(`GRANT ` + owner + ` TO archiver_worker`)
	pol := declared(t, `
tables:
  - name: orders
    table: orders
    time_column: placed_at
    archive_after_days: 180
    retention_days: 2555
    batch_size: 300
    where:
      - {column: status, op: in, value: [delivered, cancelled]}`)
	cutoff := pol[0].Cutoff(asOf)
	cols := "order_id, placed_at, status, total"
	wantN, want := d.columns("orders", cols, "")
	keptN, kept := d.columns("orders", cols, fmt.Sprintf(`status NOT IN ('delivered', 'cancelled') OR placed_at >= '%s'`, cutoff.Format(time.RFC3339Nano)))
	dueN, due := d.columns("orders", cols, fmt.Sprintf(`status IN ('delivered', 'cancelled') AND placed_at < '%s'`, cutoff.Format(time.RFC3339Nano)))

	// `starter policy check` prints the preview: it says why.
	d.worker(nil)
	p, err := d.acts.Preview(context.Background(), activities.PreviewInput{Table: "orders", Entry: &pol[0], Cutoff: cutoff})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.PartitionsToExchange) != 0 || len(p.ExchangeSkipped) == 0 || !strings.Contains(p.ExchangeSkipped[0], "where") {
		t.Fatalf("policy check: would exchange %v, skipped %q; want none exchanged, the where conditions named", p.PartitionsToExchange, p.ExchangeSkipped)
	}

	res := d.mustRunEntries(pol, "orders")
	tr := res.Tables[0]
	if n, s := d.columns("orders", cols, ""); n != keptN || s != kept {
		t.Fatalf("the live table holds %d orders, want the %d the policy keeps (open, pending, or young); %d old open or pending orders left it",
			n, keptN, d.count(`SELECT count(*) FROM orders_archive WHERE status NOT IN ('delivered', 'cancelled')`))
	}
	if n, s := d.columns("orders_archive", cols, ""); n != dueN || s != due || dueN == 0 {
		t.Fatalf("the archive holds %d orders, want the %d old delivered or cancelled ones", n, dueN)
	}
	if n, s := d.columns(`(SELECT `+cols+` FROM orders UNION ALL SELECT `+cols+` FROM orders_archive) u`, cols, ""); n != wantN || s != want {
		t.Fatalf("live ∪ archive: %d rows, want %d", n, wantN)
	}
	if tr.PartitionsExchanged != 0 || len(tr.ExchangeSkipped) == 0 || !strings.Contains(tr.ExchangeSkipped[0], "where") {
		t.Fatalf("summary %+v: want no exchange and the where conditions named", tr)
	}
}

func TestExchangeDropsForeignKeys(t *testing.T) {
	owner := ownerRole(t)
	ddl := []string{
		`CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL)`,
		`CREATE TABLE regions (id int PRIMARY KEY)`,
		`CREATE TABLE events (
		    id          bigint NOT NULL,
		    customer_id int NOT NULL REFERENCES customers ON DELETE CASCADE,
		    region_id   int NOT NULL REFERENCES regions,
		    occurred_at timestamptz NOT NULL,
		    kind        text NOT NULL,
		    PRIMARY KEY (id, occurred_at)
		) PARTITION BY RANGE (occurred_at)`,
	}
	d := newRealDB(t, append(ddl, monthlyPartitions("events")...)...)
	// Region 99's events are all old: all of them are archived.
	d.exec(`INSERT INTO customers SELECT i, 'c' || i FROM generate_series(1, 10) i`, `INSERT INTO regions VALUES (1), (99)`,
		fmt.Sprintf(`INSERT INTO events
			SELECT i, 1 + i %% 10, CASE WHEN ts < '2024-09-01Z' THEN 99 ELSE 1 END, ts, 'k' || (i %% 3)
			FROM generate_series(1, 2400) i CROSS JOIN LATERAL (SELECT '%s'::timestamptz - i * interval '7 hours' AS ts) t`, asOf.Format(time.RFC3339)))
	d.ownAll(owner, "customers", "regions", "events")
	d.migrate()
	d.exec(`GRANT ` + owner + ` TO archiver_worker`)
	pol := declared(t, `
tables:
  - name: events
    table: events
    time_column: occurred_at
    archive_after_days: 180
    retention_days: 2555
    batch_size: 300`)
	res := d.mustRunEntries(pol, "events")
	if tr := res.Tables[0]; tr.PartitionsExchanged == 0 {
		t.Fatalf("summary %+v: want partitions exchanged", tr)
	}
	archived := d.count(`SELECT count(*) FROM events_archive WHERE customer_id = 3`)
	if archived == 0 {
		t.Fatal("customer 3 has no archived events")
	}
	// The application deletes a customer: the cascade reaches its live
	// events, never the archived ones.
	d.exec(`DELETE FROM customers WHERE id = 3`)
	if k := d.count(`SELECT count(*) FROM events_archive WHERE customer_id = 3`); k != archived {
		t.Fatalf("after the application deleted customer 3, %d of its %d archived events are left", k, archived)
	}
	if k := d.count(`SELECT count(*) FROM events WHERE customer_id = 3`); k != 0 {
		t.Fatalf("%d live events of the deleted customer", k)
	}
	// Nor do archived rows hold back the application's deletes.
	if _, err := d.db.Exec(context.Background(), `DELETE FROM regions WHERE id = 99`); err != nil {
		t.Fatalf("the application cannot delete a region whose events are all archived: %v", err)
	}
	if k := d.count(`SELECT count(*) FROM pg_constraint c JOIN pg_inherits i ON i.inhrelid = c.conrelid
		WHERE i.inhparent = 'events_archive'::regclass AND c.contype = 'f'`); k != 0 {
		t.Fatalf("%d foreign keys on archive partitions", k)
	}
	if k := d.count(`SELECT count(*) FROM archive_batches WHERE kind = 'partition' AND state = 'done'
		AND NOT COALESCE(dropped_constraints @> ARRAY['events_customer_id_fkey', 'events_region_id_fkey'], false)`); k != 0 {
		t.Fatalf("%d exchanges do not record the foreign keys they dropped", k)
	}
}

func TestExchangeAfterPreflight(t *testing.T) {
	d := exchangeLogs(t)
	d.exec(`CREATE TABLE log_notes (log_id uuid, log_ts timestamptz, note text, FOREIGN KEY (log_id, log_ts) REFERENCES scenario_logs (id, received_at))`)
	d.migrate()
	d.refused(logsRun, "is referenced by foreign key")
	if k := d.count(`SELECT count(*) FROM pg_inherits WHERE inhparent = 'scenario_logs'::regclass`); k != 31 {
		t.Fatalf("%d live partitions, want all 31", k)
	}
}

func TestExchangeProvesAttachFirst(t *testing.T) {
	// Each case changes the archive (or makes the live table) so that a
	// partition could not be attached to it; the run archives every row
	// anyway, by batches, and says why.
	for _, c := range []struct {
		name string
		// live changes the live table (before the archiver's migrations,
		// whose views use its columns), archive the archive table.
		live, archive func(d *realDB)
		why           string
	}{
		{"the archive has a column the live table lacks", nil, func(d *realDB) {
			d.exec(`ALTER TABLE scenario_logs_archive ADD COLUMN note text`)
		}, `column "note"`},
		{"a live column has another collation", func(d *realDB) {
			d.exec(`ALTER TABLE scenario_logs ALTER COLUMN source TYPE varchar(100) COLLATE "C"`)
		}, nil, "collation"},
		{"the archive has a CHECK constraint", nil, func(d *realDB) {
			d.exec(`ALTER TABLE scenario_logs_archive ADD CONSTRAINT positive_size CHECK (size_bytes > 0)`)
		}, "CHECK"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := exchangeLogs(t)
			if c.live != nil {
				c.live(d)
			}
			d.migrate()
			if c.archive != nil {
				c.archive(d)
			}
			wantN, want := d.columns("scenario_logs", logColumns, "")
			tr := d.mustRun(logsRun).Tables[0]
			d.logsMoved(logColumns, wantN, want)
			if tr.PartitionsExchanged != 0 || len(tr.ExchangeSkipped) == 0 || !strings.Contains(tr.ExchangeSkipped[0], c.why) {
				t.Fatalf("summary %+v: want no exchange, and why (%q)", tr, c.why)
			}
		})
	}

	t.Run("the archive requires NOT NULL where the live column has none", func(t *testing.T) {
		owner := ownerRole(t)
		ddl := append([]string{logsDDL("", "PARTITION BY RANGE (received_at)")}, monthlyPartitions("scenario_logs")...)
		d := newRealDB(t, append(ddl, `ALTER TABLE scenario_logs ALTER COLUMN received_at DROP NOT NULL`)...)
		d.insertLogs("scenario_logs", 3000, asOf, 6*time.Hour)
		d.ownAll(owner, "scenario_logs")
		d.exec(`GRANT ` + owner + ` TO archiver_worker`)
		d.migrate()
		wantN, want := d.columns("scenario_logs", logColumns, "")
		tr := d.mustRun(logsRun).Tables[0]
		d.logsMoved(logColumns, wantN, want)
		if tr.PartitionsExchanged != 0 || len(tr.ExchangeSkipped) == 0 || !strings.Contains(tr.ExchangeSkipped[0], "NOT NULL") {
			t.Fatalf("summary %+v: want no exchange, and why", tr)
		}
	})

	t.Run("an empty archive partition already holds the name", func(t *testing.T) {
		d := exchangeLogs(t)
		d.migrate()
		// As a restore that emptied it, or a run stopped after making it,
		// would have left it.
		d.exec(`CREATE TABLE scenario_logs_archive_y2024m06 PARTITION OF scenario_logs_archive FOR VALUES FROM ('2024-06-01Z') TO ('2024-07-01Z')`,
			`ALTER TABLE scenario_logs_archive_y2024m06 OWNER TO archiver_worker`)
		wantN, want := d.columns("scenario_logs", logColumns, "")
		tr := d.mustRun(logsRun).Tables[0]
		d.logsMoved(logColumns, wantN, want)
		if tr.PartitionsExchanged != 14 {
			t.Fatalf("summary %+v: want 14 partitions exchanged", tr)
		}
	})

	t.Run("a dropped live column, expression and partial indexes on the archive", func(t *testing.T) {
		owner := ownerRole(t)
		// The partitions are made before the column is dropped: their
		// columns' numbers differ from the archive's.
		ddl := strings.Replace(logsDDL(", PRIMARY KEY (id, received_at)", "PARTITION BY RANGE (received_at)"),
			"id              UUID NOT NULL", "legacy int,\n    id UUID NOT NULL", 1)
		d := newRealDB(t, append(append([]string{ddl}, monthlyPartitions("scenario_logs")...), `ALTER TABLE scenario_logs DROP COLUMN legacy`)...)
		d.insertLogs("scenario_logs", 3000, asOf, 6*time.Hour)
		d.ownAll(owner, "scenario_logs")
		d.exec(`GRANT ` + owner + ` TO archiver_worker`)
		d.migrate()
		d.exec(`CREATE INDEX logs_archive_source_lower ON scenario_logs_archive (lower(source))`,
			`CREATE INDEX logs_archive_pii ON scenario_logs_archive (scenario_id) WHERE has_pii`)
		wantN, want := d.columns("scenario_logs", logColumns, "")
		tr := d.mustRun(logsRun).Tables[0]
		d.logsMoved(logColumns, wantN, want)
		if tr.PartitionsExchanged != 14 {
			t.Fatalf("summary %+v: want 14 partitions exchanged", tr)
		}
		// Each archive index has exactly one index on each exchanged
		// partition, attached to it.
		if got := d.lines(`SELECT c.relname || ': ' || count(x.indexrelid)
			FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
			JOIN pg_index ai ON ai.indrelid = 'scenario_logs_archive'::regclass
			LEFT JOIN pg_inherits xi ON xi.inhparent = ai.indexrelid
			LEFT JOIN pg_index x ON x.indexrelid = xi.inhrelid AND x.indrelid = c.oid
			WHERE i.inhparent = 'scenario_logs_archive'::regclass
			GROUP BY c.relname, ai.indexrelid HAVING count(x.indexrelid) <> 1`); len(got) != 0 {
			t.Fatalf("archive indexes not attached once on a partition: %q", got)
		}
	})
}

func TestExchangeFailingAfterDetachPutsThePartitionBack(t *testing.T) {
	d := exchangeLogs(t)
	d.migrate()
	jan := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	janN, janSum := d.columns("scenario_logs_p2024_01", logColumns, "")
	if janN == 0 {
		t.Fatal("the fixture has no rows in 2024-01")
	}
	wantN, want := d.columns("scenario_logs", logColumns, "")
	// After the first partition's archive columns are added, a table of
	// its archive name appears (made by hand, or another tool): the
	// exchange cannot go on.
	var once sync.Once
	var hookErr error
	d.worker(func(a *activities.Activities) {
		a.AfterExchangeStep = func(step string) {
			if step == "add-archive-columns" {
				once.Do(func() {
					_, hookErr = d.db.Exec(context.Background(), `CREATE TABLE scenario_logs_archive_y2024m01 (x int); INSERT INTO scenario_logs_archive_y2024m01 VALUES (1)`)
				})
			}
		}
	})
	res, err := d.run(logsRun)
	if hookErr != nil {
		t.Fatal(hookErr)
	}
	if err == nil || !strings.Contains(err.Error(), "back in scenario_logs") {
		t.Fatalf("run: %v (summary %+v)\nwant a failure saying the partition is back in scenario_logs", err, res.Tables)
	}
	if k := d.count(`SELECT count(*) FROM pg_inherits WHERE inhrelid = 'scenario_logs_p2024_01'::regclass AND inhparent = 'scenario_logs'::regclass`); k != 1 {
		t.Fatal("scenario_logs_p2024_01 is not back in scenario_logs")
	}
	if n, s := d.columns("scenario_logs_p2024_01", logColumns, ""); n != janN || s != janSum || d.liveRowsOf(jan) != janN {
		t.Fatalf("the returned partition holds %d rows, want its %d", n, janN)
	}
	if k := d.count(`SELECT count(*) FROM pg_attribute WHERE attrelid = 'scenario_logs_p2024_01'::regclass AND attname IN ('archived_at', 'archive_batch_id') AND NOT attisdropped`); k != 0 {
		t.Fatal("the returned partition keeps the archive's columns")
	}
	if k := d.count(`SELECT count(*) FROM archive_batches WHERE kind = 'partition' AND state = 'exchanging'`); k != 0 {
		t.Fatalf("%d exchanges left unfinished", k)
	}
	if k := d.count(`SELECT count(*) FROM archive_batches WHERE kind = 'partition' AND state = 'returned' AND partition_oid = 'scenario_logs_p2024_01'::regclass`); k != 1 {
		t.Fatal("the ledger does not record the partition's return")
	}
	// The next run is not blocked: the partition's rows move by batches.
	d.exec(`DROP TABLE scenario_logs_archive_y2024m01`)
	tr := d.mustRun(logsRun).Tables[0]
	d.logsMoved(logColumns, wantN, want)
	if len(tr.ExchangeSkipped) == 0 || !strings.Contains(strings.Join(tr.ExchangeSkipped, " "), "scenario_logs_p2024_01") {
		t.Fatalf("summary %+v: want the returned partition named among the skipped", tr)
	}
}

// exchangeInFlight starts the exchange of scenario_logs' 2024-03
// partition and loses the worker right after the rename: the partition is
// detached, under its archive name, attached to nothing. It returns the
// worker's activities and the candidate.
func exchangeInFlight(t *testing.T, d *realDB) (*activities.Activities, activities.ExchangeCandidate) {
	t.Helper()
	ctx := context.Background()
	acts := &activities.Activities{DB: testenv.WorkerPool(t, d.url)}
	list, err := acts.ListExchangeable(ctx, activities.ListExchangeableInput{Table: "logs", Cutoff: logsCutoff})
	if err != nil {
		t.Fatal(err)
	}
	march := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	var c activities.ExchangeCandidate
	for _, x := range list.Candidates {
		if x.Lower.Equal(march) {
			c = x
		}
	}
	if c.OID == 0 {
		t.Fatalf("2024-03 is no candidate: %+v", list)
	}
	jobID := uuid.NewString()
	if _, err := acts.StartJob(ctx, activities.StartJobInput{JobID: jobID, Table: "logs", WorkflowID: "test", RunID: "test", AsOf: asOf, Cutoff: logsCutoff}); err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	acts.AfterExchangeStep = func(step string) {
		if step == "rename" {
			stop()
		}
	}
	if _, err := acts.ExchangePartition(sctx, activities.ExchangeInput{Table: "logs", JobID: jobID, BatchID: uuid.NewString(), Partition: c}); err == nil {
		t.Fatal("the exchange completed; want it stopped after the rename")
	}
	acts.AfterExchangeStep = nil
	if k := d.count(`SELECT count(*) FROM pg_inherits WHERE inhrelid = $1::oid`, int64(c.OID)); k != 0 {
		t.Fatal("the partition is attached; want it in flight")
	}
	return acts, c
}

// putBack checks that the exchange in flight of c ended with the partition
// back in the live table and its ledger row returned.
func (d *realDB) putBack(c activities.ExchangeCandidate) {
	d.t.Helper()
	if k := d.count(`SELECT count(*) FROM archive_batches WHERE kind = 'partition' AND state = 'exchanging'`); k != 0 {
		d.t.Fatalf("%d exchanges left unfinished", k)
	}
	if k := d.count(`SELECT count(*) FROM archive_batches WHERE kind = 'partition' AND state = 'returned' AND partition_oid = $1::oid`, int64(c.OID)); k != 1 {
		d.t.Fatal("the ledger does not record the partition's return")
	}
	if k := d.count(`SELECT count(*) FROM pg_inherits WHERE inhrelid = $1::oid AND inhparent = 'scenario_logs'::regclass`, int64(c.OID)); k != 1 {
		d.t.Fatal("the partition is not back in scenario_logs")
	}
	if k := d.count(`SELECT count(*) FROM pg_class WHERE oid = $1::oid AND relname = 'scenario_logs_p2024_03'`, int64(c.OID)); k != 1 {
		d.t.Fatal("the partition is back under another name")
	}
}

func TestExchangeInFlightIsNoOrphan(t *testing.T) {
	d := exchangeLogs(t)
	d.migrate()
	wantN, want := d.columns("scenario_logs", logColumns, "")
	marchN := d.liveRowsOf(time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC))
	acts, c := exchangeInFlight(t, d)
	// Owned by the archive's owner, as an earlier version of the exchange
	// left it at this step.
	d.exec(`ALTER TABLE scenario_logs_archive_y2024m03 OWNER TO archiver_worker`)
	// Retention past its month must not take it for an orphan.
	if _, err := acts.ApplyRetention(context.Background(), activities.RetentionInput{Table: "logs", Before: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}); err != nil {
		t.Fatal(err)
	}
	if k := d.count(`SELECT count(*) FROM pg_class WHERE relname = 'scenario_logs_archive_y2024m03'`); k != 1 {
		t.Fatalf("retention dropped the partition an exchange in flight left detached (%d rows of 2024-03)", marchN)
	}
	// A run by batches only puts it back and archives its rows by batches.
	in := logsRun
	in.RowByRow = true
	tr := d.mustRun(in).Tables[0]
	d.logsMoved(logColumns, wantN, want)
	if tr.PartitionsExchanged != 0 {
		t.Fatalf("summary %+v: a run by batches exchanged", tr)
	}
	d.putBack(c)
}

func TestExchangeInFlightUnderWhereGoesBack(t *testing.T) {
	d := exchangeLogs(t)
	d.migrate()
	wantN, want := d.columns("scenario_logs", logColumns, "")
	keptN, kept := d.columns("scenario_logs", logColumns, fmt.Sprintf(`source <> 'api' OR received_at >= '%s'`, logsCutoff.Format(time.RFC3339Nano)))
	_, c := exchangeInFlight(t, d)
	// The entry gains a condition: only api logs leave. The partition in
	// flight holds rows it keeps: it goes back, and batches take its api
	// rows.
	pol := declared(t, `
tables:
  - name: logs
    table: scenario_logs
    time_column: received_at
    archive_table: scenario_logs_archive
    archive_after_days: 365
    retention_days: 2555
    batch_size: 500
    where:
      - {column: source, op: "=", value: api}`)
	tr := d.mustRunEntries(pol, "logs").Tables[0]
	if tr.PartitionsExchanged != 0 {
		t.Fatalf("summary %+v: an entry with where conditions exchanged", tr)
	}
	d.putBack(c)
	if n, s := d.columns("scenario_logs", logColumns, ""); n != keptN || s != kept {
		t.Fatalf("the live table holds %d rows, want the %d the entry keeps", n, keptN)
	}
	if n, s := d.columns(`(SELECT `+logColumns+` FROM scenario_logs UNION ALL SELECT `+logColumns+` FROM scenario_logs_archive) u`, logColumns, ""); n != wantN || s != want {
		t.Fatalf("live ∪ archive: %d rows, want %d", n, wantN)
	}
}
