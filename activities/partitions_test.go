package activities_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/policy"
	"github.com/mockupaws/archiver/internal/testenv"
)

func testTable(name string) policy.Table {
	t, err := policy.Lookup(name)
	if err != nil {
		panic(err)
	}
	return t
}

func TestEnsurePartitions(t *testing.T) {
	t.Run("creates one partition per month that holds eligible rows, once, in UTC", func(t *testing.T) {
		b := setup(t)
		// Bounds must be whole UTC months whatever the session time zone.
		ny, err := pgxpool.New(context.Background(), b.url+"&timezone=America/New_York")
		if err != nil {
			t.Fatal(err)
		}
		defer ny.Close()
		b.acts = &activities.Activities{DB: ny}
		// cut-off is 2025-03-15 03:00 UTC; rows in 2024-12, 2025-01 (UTC;
		// still December in New York) and 2025-03; none in 2025-02.
		testenv.InsertLogs(t, b.db, []time.Time{
			time.Date(2024, 12, 31, 23, 59, 59, 0, time.UTC),
			time.Date(2025, 1, 1, 2, 0, 0, 0, time.UTC),
			time.Date(2025, 3, 15, 2, 0, 0, 0, time.UTC),
			time.Date(2025, 3, 15, 4, 0, 0, 0, time.UTC), // after the cut-off
			time.Date(2025, 4, 1, 0, 0, 0, 0, time.UTC),  // after the cut-off
		})
		got := b.ensure(t)
		want := []string{"scenario_logs_archive_y2024m12", "scenario_logs_archive_y2025m01", "scenario_logs_archive_y2025m03"}
		if !slices.Equal(got.Created, want) {
			t.Fatalf("created %v, want %v", got.Created, want)
		}
		if again := b.ensure(t); len(again.Created) != 0 {
			t.Fatalf("second call created %v, want nothing", again.Created)
		}
		var bound string
		if err := b.db.QueryRow(context.Background(), `
			SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c WHERE c.relname = 'scenario_logs_archive_y2025m01'`).Scan(&bound); err != nil {
			t.Fatal(err)
		}
		if bound != "FOR VALUES FROM ('2025-01-01 00:00:00+00') TO ('2025-02-01 00:00:00+00')" {
			t.Fatalf("partition bound %q, want whole January 2025 in UTC", bound)
		}
	})

	t.Run("nothing eligible creates nothing", func(t *testing.T) {
		b := setup(t)
		testenv.InsertLogs(t, b.db, []time.Time{asOf.Add(-time.Hour)})
		if got := b.ensure(t); len(got.Created) != 0 || got.Oldest != nil {
			t.Fatalf("got %+v, want nothing", got)
		}
	})

	t.Run("a row dated 1900 costs one partition, not one for every month since", func(t *testing.T) {
		b := setup(t)
		testenv.InsertLogs(t, b.db, []time.Time{time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC), cutoff.Add(-time.Hour)})
		got := b.ensure(t)
		want := []string{"scenario_logs_archive_y1900m01", activities.PartitionName(testTable("logs"), cutoff.Add(-time.Hour))}
		if !slices.Equal(got.Created, want) || !got.Oldest.Equal(time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)) {
			t.Fatalf("created %v (oldest %v), want %v", got.Created, got.Oldest, want)
		}
		res := b.move(t, "00000000-0000-4000-8000-00000000000a", 10)
		if res.RowsMoved != 2 {
			t.Fatalf("moved %d rows, want both", res.RowsMoved)
		}
	})

	t.Run("concurrent callers do not collide", func(t *testing.T) {
		b := setup(t)
		var times []time.Time
		for m := 0; m < 25; m++ {
			times = append(times, cutoff.AddDate(0, -m, 0).Add(-time.Hour))
		}
		testenv.InsertLogs(t, b.db, times)
		var wg sync.WaitGroup
		created := make([]int, 4)
		for i := range created {
			wg.Go(func() {
				r, err := b.acts.EnsurePartitions(context.Background(), activities.EnsurePartitionsInput{Table: "logs", Cutoff: cutoff})
				if err != nil {
					t.Errorf("EnsurePartitions: %v", err)
				}
				created[i] = len(r.Created)
			})
		}
		wg.Wait()
		total := 0
		for _, n := range created {
			total += n
		}
		if total != 25 {
			t.Fatalf("callers created %d partitions in all, want 25 (each month once)", total)
		}
	})
}
