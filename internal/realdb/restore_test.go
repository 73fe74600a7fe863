package realdb

import (
	"fmt"
	"testing"
	"time"

	"github.com/mockupaws/archiver/internal/testenv"
)

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
