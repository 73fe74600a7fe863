package realdb

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/policy"
	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/workflows"
)

// ticketsPolicy archives tickets two months after they open, in batches of
// 500, keeping the archive (no retention past it in these tests). The
// entry's name is the test's own: a restore's workflow id is
// restore-<entry>, and the Temporal server is shared by every test.
func ticketsPolicy(t *testing.T) []policy.Table {
	return declared(t, `
tables:
  - name: tickets_`+testenv.RandomID()+`
    table: tickets
    time_column: opened_at
    archive_after_days: 60
    retention_days: 3000
    batch_size: 500`)
}

// TestTwoRestoresOfOneTable: two restores of one table (one workflow id,
// restore-<table>, used twice) each hold their own window; the next archive
// run, as of the same instant, leaves the rows of both windows live.
func TestTwoRestoresOfOneTable(t *testing.T) {
	d := newRealDB(t, `CREATE TABLE tickets (
	    id        bigint PRIMARY KEY,
	    opened_at timestamptz NOT NULL,
	    subject   text
	)`, `CREATE INDEX ON tickets (opened_at)`)
	d.exec(fmt.Sprintf(`INSERT INTO tickets
		SELECT i, '%s'::timestamptz - i * interval '3 hours 11 minutes', 'subject ' || i
		FROM generate_series(1, 6000) i`, asOf.Format(time.RFC3339)))
	d.migrate()
	d.exec(`GRANT SELECT, DELETE, UPDATE (opened_at) ON tickets TO archiver_worker`)
	d.worker(nil)
	pol := ticketsPolicy(t)
	const cols = "id, opened_at, subject"
	jan := "opened_at >= '2025-01-01 00:00:00+00' AND opened_at < '2025-02-01 00:00:00+00'"
	jun := "opened_at >= '2025-06-01 00:00:00+00' AND opened_at < '2025-07-01 00:00:00+00'"
	janN, janSum := d.columns("tickets", cols, jan)
	junN, junSum := d.columns("tickets", cols, jun)
	if janN == 0 || junN == 0 {
		t.Fatalf("fixture: %d rows in January, %d in June", janN, junN)
	}
	d.mustRunEntries(pol, pol[0].Name)
	if k := d.count(`SELECT count(*) FROM tickets WHERE ` + jan + ` OR ` + jun); k != 0 {
		t.Fatalf("%d rows of the windows still live after the archive run", k)
	}
	d.exec(`GRANT INSERT ON tickets TO archiver_worker`)
	id := workflows.RestoreWorkflowID(pol[0].Name)
	for _, w := range [][2]time.Time{
		{time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC)},
		{time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC), time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC)},
	} {
		if _, err := d.restoreAs(id, pol[0], w[0], w[1], nil); err != nil {
			t.Fatalf("restore %s .. %s: %v", w[0], w[1], err)
		}
	}
	if k := d.count(`SELECT count(*) FROM archive_holds WHERE table_name = 'tickets' AND workflow_id = $1 AND hold_until > now()`, id); k != 2 {
		t.Errorf("%d active holds on tickets after restoring two windows, want 2 (one each)", k)
	}
	d.mustRunEntries(pol, pol[0].Name)
	if n, sum := d.columns("tickets", cols, jan); n != janN || sum != janSum {
		t.Fatalf("January after the next archive run: %d live rows (%s), want the %d restored (%s)", n, sum, janN, janSum)
	}
	if n, sum := d.columns("tickets", cols, jun); n != junN || sum != junSum {
		t.Fatalf("June after the next archive run: %d live rows (%s), want the %d restored (%s)", n, sum, junN, junSum)
	}
}

// TestRestoreGeneratedAndIdentityColumns: a live table with a stored
// generated column and an identity column GENERATED ALWAYS is archived
// (into an archive table whose columns are plain) and restored from the
// archive table: the identity values come back as they were and the
// generated values, computed anew by PostgreSQL, equal the originals.
func TestRestoreGeneratedAndIdentityColumns(t *testing.T) {
	d := newRealDB(t, `CREATE TABLE ledger (
	    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	    booked_at    timestamptz NOT NULL,
	    amount       numeric(12,2) NOT NULL,
	    amount_cents bigint GENERATED ALWAYS AS ((amount * 100)::bigint) STORED,
	    memo         text
	)`, `CREATE INDEX ON ledger (booked_at)`)
	d.exec(fmt.Sprintf(`INSERT INTO ledger (booked_at, amount, memo)
		SELECT '%s'::timestamptz - i * interval '2 hours 7 minutes', i * 1.37, CASE WHEN i %% 3 = 0 THEN NULL ELSE 'memo ' || i END
		FROM generate_series(1, 5000) i`, asOf.Format(time.RFC3339)))
	// Identity values with gaps, so that a restore that took new ones
	// could not match by chance.
	d.exec(`DELETE FROM ledger WHERE id % 7 = 0`)
	d.migrate()
	d.exec(`GRANT SELECT, DELETE, UPDATE (booked_at) ON ledger TO archiver_worker`)
	d.worker(nil)
	pol := declared(t, `
tables:
  - name: ledger_`+testenv.RandomID()+`
    table: ledger
    time_column: booked_at
    archive_after_days: 60
    retention_days: 3000
    batch_size: 400`)
	const cols = "id, booked_at, amount, amount_cents, memo"
	allN, all := d.columns("ledger", cols, "")
	d.mustRunEntries(pol, pol[0].Name)
	archived := d.count(`SELECT count(*) FROM ledger_archive`)
	if archived == 0 {
		t.Fatal("nothing archived")
	}
	if n, sum := d.columns(`(SELECT `+cols+` FROM ledger UNION ALL SELECT `+cols+` FROM ledger_archive) u`, cols, ""); n != allN || sum != all {
		t.Fatalf("live ∪ archive: %d rows (%s), want %d (%s)", n, sum, allN, all)
	}
	// The archive keeps the values; its columns compute nothing.
	if k := d.count(`SELECT count(*) FROM pg_attribute WHERE attrelid = 'ledger_archive'::regclass AND attnum > 0
		AND (attgenerated <> '' OR attidentity <> '')`); k != 0 {
		t.Fatalf("%d generated or identity columns in ledger_archive", k)
	}
	d.exec(`GRANT INSERT ON ledger TO archiver_worker`)
	got := d.restore(pol[0], time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), asOf)
	if got.RowsFromArchive != archived {
		t.Fatalf("restore %+v: want the %d archived rows back", got, archived)
	}
	if n, sum := d.columns("ledger", cols, ""); n != allN || sum != all {
		t.Fatalf("after the restore the live table holds %d rows (%s), want the original %d (%s)", n, sum, allN, all)
	}
	// The identity's sequence is where it was: a new row takes a new id.
	d.exec(`INSERT INTO ledger (booked_at, amount) VALUES (now(), 1)`)
	if k := d.count(`SELECT count(*) FROM ledger WHERE amount_cents <> (amount * 100)::bigint`); k != 0 {
		t.Fatalf("%d rows whose generated value is not the expression's", k)
	}
}

// TestRestoreBeforeAnyArchiveRun: a restore of an entry whose archive
// table no run has made yet fails at once, saying nothing was archived,
// instead of retrying its plan for as long as the activity may run.
func TestRestoreBeforeAnyArchiveRun(t *testing.T) {
	d := newRealDB(t, `CREATE TABLE tickets (
	    id        bigint PRIMARY KEY,
	    opened_at timestamptz NOT NULL,
	    subject   text
	)`)
	d.exec(fmt.Sprintf(`INSERT INTO tickets SELECT i, '%s'::timestamptz - i * interval '1 day', 's' FROM generate_series(1, 500) i`, asOf.Format(time.RFC3339)))
	d.migrate()
	d.exec(`GRANT SELECT, DELETE, UPDATE (opened_at), INSERT ON tickets TO archiver_worker`)
	d.worker(nil)
	pol := ticketsPolicy(t)
	id := workflows.RestoreWorkflowID(pol[0].Name)
	before := d.fingerprintOf("tickets")
	// A run given 90 seconds: the plan retried with the activity's
	// back-off would still be retrying at its end.
	_, err := d.restoreAs(id, pol[0],
		time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC),
		func(o *client.StartWorkflowOptions) { o.WorkflowRunTimeout = 90 * time.Second })
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || appErr.Type() != activities.ErrCannotRestore ||
		!strings.Contains(err.Error(), "tickets") || !strings.Contains(err.Error(), "nothing was archived") {
		t.Fatalf("restore before any archive run: %v\nwant a %s error naming tickets and saying nothing was archived", err, activities.ErrCannotRestore)
	}
	if attempts := d.activityAttempts(id, "PlanRestore"); len(attempts) != 1 || attempts[0] != 1 {
		t.Fatalf("PlanRestore ran with attempts %v, want one attempt", attempts)
	}
	if after := d.fingerprintOf("tickets"); after != before {
		t.Fatal("the failed restore changed the live table")
	}
	if k := d.count(`SELECT count(*) FROM archive_holds`); k != 0 {
		t.Fatalf("%d holds written by a restore that had nothing to restore", k)
	}
}

// restoreAs runs RestoreWorkflow for entry's window [after, before) under
// workflow id id and returns its result and error.
func (d *realDB) restoreAs(id string, entry policy.Table, after, before time.Time, opts func(*client.StartWorkflowOptions)) (workflows.RestoreResult, error) {
	d.t.Helper()
	o := client.StartWorkflowOptions{ID: id, TaskQueue: d.queue}
	if opts != nil {
		opts(&o)
	}
	run, err := d.c.ExecuteWorkflow(context.Background(), o,
		workflows.RestoreWorkflowName, workflows.RestoreRequest{Table: entry.Name, Policy: &entry, After: after, Before: before})
	if err != nil {
		d.t.Fatal(err)
	}
	var got workflows.RestoreResult
	err = testenv.Wait(d.t, d.c, run, testenv.DefaultWait, &got)
	return got, err
}

// activityAttempts lists the attempt of every started activity of type
// name in the latest run of workflow id.
func (d *realDB) activityAttempts(id, name string) []int32 {
	d.t.Helper()
	it := d.c.GetWorkflowHistory(context.Background(), id, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	types := map[int64]string{}
	var out []int32
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			d.t.Fatal(err)
		}
		if a := e.GetActivityTaskScheduledEventAttributes(); a != nil {
			types[e.GetEventId()] = a.GetActivityType().GetName()
		}
		if a := e.GetActivityTaskStartedEventAttributes(); a != nil && types[a.GetScheduledEventId()] == name {
			out = append(out, a.GetAttempt())
		}
	}
	return out
}
