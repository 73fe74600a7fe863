package realdb

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mockupaws/archiver/internal/testenv"
)

// partitionedLogs makes scenario_logs partitioned by month from 2024-01 to
// 2026-06 with a DEFAULT partition, owned (with its partitions) by a role
// of the test's own, as an application's migrations would; the worker is a
// member of that role when exchange is granted.
func partitionedLogs(t *testing.T, grant bool) *realDB {
	t.Helper()
	owner := ownerRole(t)
	d := newRealDB(t, partmanLogsDDL()...)
	d.ownAll(owner, "scenario_logs")
	if grant {
		d.exec(`GRANT ` + owner + ` TO archiver_worker`)
	}
	return d
}

// ownerRole creates an application owner role of the test's own (roles are
// cluster-wide: a shared one would leak grants between parallel tests) and
// drops it after the test's database.
func ownerRole(t *testing.T) string {
	t.Helper()
	env := testenv.Load(t)
	name := "app_owner_" + testenv.RandomID()
	admin := func(sql string) error {
		c, err := pgx.Connect(context.Background(), env.AdminURL)
		if err != nil {
			return err
		}
		defer c.Close(context.Background())
		_, err = c.Exec(context.Background(), sql)
		return err
	}
	if err := admin(`CREATE ROLE ` + name + ` NOLOGIN`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := admin(`DROP ROLE IF EXISTS ` + name); err != nil {
			t.Errorf("drop role %s: %v", name, err)
		}
	})
	return name
}

func TestPartitionExchange(t *testing.T) {
	t.Run("whole monthly live partitions move to the archive as units; the edge and DEFAULT rows by batches", func(t *testing.T) {
		d := partitionedLogs(t, true)
		d.insertLogs("scenario_logs", 6000, asOf, 3*time.Hour) // 2024-02 .. 2026-03
		d.migrate()
		wantN, want := d.columns("scenario_logs", logColumns, "")
		res := d.mustRun(logsRun)
		d.logsMoved(logColumns, wantN, want)
		tr := res.Tables[0]
		// 2024-01 .. 2025-02 are wholly before the cut-off (2025-03-15).
		if tr.PartitionsExchanged != 14 || tr.LongestLockMillis <= 0 {
			t.Fatalf("summary %+v: want 14 partitions exchanged with their longest lock", tr)
		}
		if k := d.count(`SELECT count(*) FROM archive_batches WHERE kind = 'partition' AND state = 'done'`); k != 14 {
			t.Fatalf("%d partition ledger entries, want 14", k)
		}
		// Each exchanged partition is now the archive's month, owned by the
		// worker role, its rows carrying its ledger entry's id.
		if k := d.count(`SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
			WHERE i.inhparent = 'scenario_logs_archive'::regclass AND c.relname LIKE 'scenario_logs_archive_y%' AND pg_get_userbyid(c.relowner) = 'archiver_worker'`); k < 14 {
			t.Fatalf("%d archive partitions with the archive's names and owner", k)
		}
		if k := d.count(`SELECT count(*) FROM pg_class WHERE relname = 'scenario_logs_p2024_06'`); k != 0 {
			t.Fatal("the live partition's old name is still there")
		}
		if k := d.count(`SELECT count(*) FROM archive_batches b WHERE rows_moved <> (SELECT count(*) FROM scenario_logs_archive a WHERE a.archive_batch_id = b.batch_id)`); k != 0 {
			t.Fatalf("%d ledger entries disagree with the rows carrying their id", k)
		}
		if k := d.count(`SELECT count(*) FROM pg_inherits WHERE inhparent = 'scenario_logs'::regclass`); k != 30-14+1 {
			t.Fatalf("%d live partitions left, want %d", k, 30-14+1)
		}
	})

	t.Run("without ownership the partitions move by batches, and the summary says why", func(t *testing.T) {
		d := partitionedLogs(t, false)
		d.insertLogs("scenario_logs", 3000, asOf, 5*time.Hour)
		d.migrate()
		wantN, want := d.columns("scenario_logs", logColumns, "")
		res := d.mustRun(logsRun)
		d.logsMoved(logColumns, wantN, want)
		tr := res.Tables[0]
		if tr.PartitionsExchanged != 0 || len(tr.ExchangeSkipped) == 0 || !strings.Contains(tr.ExchangeSkipped[0], "GRANT that role TO archiver_worker") {
			t.Fatalf("summary %+v: want no exchange and the reason", tr)
		}
	})
}
