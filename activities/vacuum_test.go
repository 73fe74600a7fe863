package activities_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/testenv"
)

// vacuumCounts is scenario_logs' VACUUM and ANALYZE counts over its
// partitions, as pg_stat_user_tables keeps them.
func vacuumCounts(t *testing.T, b bundle) (vacuums, analyzes int64) {
	t.Helper()
	err := b.db.QueryRow(context.Background(), `
		SELECT COALESCE(sum(s.vacuum_count), 0)::bigint, COALESCE(sum(s.analyze_count), 0)::bigint
		FROM (SELECT relid FROM pg_partition_tree('scenario_logs') UNION SELECT 'scenario_logs'::regclass) p
		JOIN pg_stat_user_tables s ON s.relid = p.relid`).Scan(&vacuums, &analyzes)
	if err != nil {
		t.Fatal(err)
	}
	return vacuums, analyzes
}

func TestVacuumAfterLargeDelete(t *testing.T) {
	// 300 rows, of which eligible ones are deleted by batches; ANALYZE
	// first so the table's statistics know its size, as a production
	// table's do.
	prepare := func(t *testing.T, eligible int) (bundle, int64) {
		b := setup(t)
		testenv.InsertLogs(t, b.db, testenv.SpreadTimes(eligible, cutoff, time.Hour))
		testenv.InsertLogs(t, b.db, testenv.SpreadTimes(300-eligible, asOf, time.Minute))
		if _, err := b.db.Exec(context.Background(), `ANALYZE scenario_logs`); err != nil {
			t.Fatal(err)
		}
		b.ensure(t)
		res := b.move(t, uuid.NewString(), 1000)
		if res.RowsDeleted != int64(eligible) {
			t.Fatalf("moved %d rows, want %d", res.RowsDeleted, eligible)
		}
		return b, res.RowsDeleted
	}
	ctx := context.Background()

	t.Run("above the share, the owner vacuums and analyzes the live table", func(t *testing.T) {
		b, deleted := prepare(t, 200)
		v0, a0 := vacuumCounts(t, b)
		// The admin login owns the tables (as the application's role would).
		owner := &activities.Activities{DB: b.db, VacuumShare: 0.2}
		res, err := owner.VacuumTable(ctx, activities.VacuumInput{Table: "logs", RowsDeleted: deleted})
		if err != nil {
			t.Fatal(err)
		}
		v1, a1 := vacuumCounts(t, b)
		if !res.Ran || res.Share < 0.5 || v1 <= v0 || a1 <= a0 {
			t.Fatalf("result %+v; vacuum_count %d -> %d, analyze_count %d -> %d: want it ran (share about 2/3) and both counts grew", res, v0, v1, a0, a1)
		}
		if !strings.HasPrefix(res.Note(), "ran: VACUUM (ANALYZE) scenario_logs") {
			t.Fatalf("note %q", res.Note())
		}
	})

	t.Run("below the share, nothing is vacuumed", func(t *testing.T) {
		b, deleted := prepare(t, 15)
		v0, a0 := vacuumCounts(t, b)
		owner := &activities.Activities{DB: b.db, VacuumShare: 0.2}
		res, err := owner.VacuumTable(ctx, activities.VacuumInput{Table: "logs", RowsDeleted: deleted})
		if err != nil {
			t.Fatal(err)
		}
		v1, a1 := vacuumCounts(t, b)
		if res.Ran || !strings.Contains(res.Skipped, "not more than ARCHIVE_VACUUM_SHARE=0.2") || v1 != v0 || a1 != a0 {
			t.Fatalf("result %+v; vacuum_count %d -> %d, analyze_count %d -> %d: want skipped, counts unchanged", res, v0, v1, a0, a1)
		}
	})

	t.Run("a worker role that does not own the table records the skip", func(t *testing.T) {
		b, deleted := prepare(t, 200)
		v0, a0 := vacuumCounts(t, b)
		b.acts.VacuumShare = 0.2 // the least-privilege worker login
		res, err := b.acts.VacuumTable(ctx, activities.VacuumInput{Table: "logs", RowsDeleted: deleted})
		if err != nil {
			t.Fatal(err)
		}
		v1, a1 := vacuumCounts(t, b)
		want := "worker role " + testenv.WorkerLogin + " does not own scenario_logs"
		if res.Ran || !strings.Contains(res.Skipped, want) || !strings.Contains(res.Skipped, "GRANT") || v1 != v0 || a1 != a0 {
			t.Fatalf("result %+v; vacuum_count %d -> %d: want skipped with %q and a GRANT to run, counts unchanged", res, v0, v1, want)
		}
		t.Logf("note: %s", res.Note())
	})

	t.Run("ARCHIVE_VACUUM_SHARE=0 turns it off", func(t *testing.T) {
		b, deleted := prepare(t, 200)
		res, err := (&activities.Activities{DB: b.db}).VacuumTable(ctx, activities.VacuumInput{Table: "logs", RowsDeleted: deleted})
		if err != nil || res.Ran || !strings.Contains(res.Skipped, "turned off") {
			t.Fatalf("result %+v, %v: want skipped, turned off", res, err)
		}
	})
}
