package activities_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/testenv"
)

func partitions(t *testing.T, b bundle, parent string) []string {
	t.Helper()
	rows, err := b.db.Query(context.Background(), `
		SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = $1::regclass ORDER BY 1`, parent)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		_ = rows.Scan(&n)
		out = append(out, n)
	}
	return out
}

func TestRetention(t *testing.T) {
	// Logs from 2017-11 to the cut-off; retention 7 years before as-of
	// (2026-03-15 03:00) ends 2019-03-17 03:00: partitions up to 2019-02
	// (upper bound 2019-03-01) are past it; 2019-03 is not wholly past.
	before := asOf.Add(-7 * 365 * 24 * time.Hour)
	// A row every 10 days from 2017-11-20 to the cut-off, so that every
	// month has its partition (partitions are made only for months with
	// rows).
	var times []time.Time
	for ts := time.Date(2017, 11, 20, 0, 0, 0, 0, time.UTC); ts.Before(cutoff); ts = ts.Add(10 * 24 * time.Hour) {
		times = append(times, ts)
	}
	keep := 0 // rows in months not wholly past retention
	for _, ts := range times {
		if !ts.Before(time.Date(2019, 3, 1, 0, 0, 0, 0, time.UTC)) {
			keep++
		}
	}
	seed := func(t *testing.T, b bundle) {
		testenv.InsertLogs(t, b.db, times)
		b.ensure(t)
		b.move(t, "00000000-0000-4000-8000-000000000001", 1000)
	}

	t.Run("dry run lists exactly the partitions wholly past retention, drop removes them and no other", func(t *testing.T) {
		b := setup(t)
		seed(t, b)
		all := partitions(t, b, "scenario_logs_archive")
		var want []string
		for _, p := range all {
			if p < "scenario_logs_archive_y2019m03" {
				want = append(want, p)
			}
		}
		if len(want) != 16 { // 2017-11 .. 2019-02
			t.Fatalf("fixture: %d expired partitions, want 16", len(want))
		}
		dry, err := b.acts.ApplyRetention(context.Background(), activities.RetentionInput{Table: "logs", Before: before, DryRun: true})
		if err != nil || !slices.Equal(dry.Partitions, want) {
			t.Fatalf("dry run lists %v (%v), want %v", dry.Partitions, err, want)
		}
		if got := partitions(t, b, "scenario_logs_archive"); !slices.Equal(got, all) {
			t.Fatal("the dry run changed the partitions")
		}

		res, err := b.acts.ApplyRetention(context.Background(), activities.RetentionInput{Table: "logs", Before: before})
		if err != nil || !slices.Equal(res.Partitions, want) {
			t.Fatalf("dropped %v (%v), want %v", res.Partitions, err, want)
		}
		left := partitions(t, b, "scenario_logs_archive")
		if !slices.Equal(left, all[len(want):]) {
			t.Fatalf("left %v, want %v", left, all[len(want):])
		}
		if n := testenv.Count(t, b.db, `SELECT count(*) FROM pg_class WHERE relname = ANY($1)`, want); n != 0 {
			t.Fatalf("%d dropped partitions still exist as tables", n)
		}
		// The rows of the dropped months went with their partitions; the
		// others stayed.
		if n := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_logs_archive`); n != int64(keep) {
			t.Fatalf("%d archived rows left, want %d", n, keep)
		}
		again, err := b.acts.ApplyRetention(context.Background(), activities.RetentionInput{Table: "logs", Before: before})
		if err != nil || len(again.Partitions) != 0 {
			t.Fatalf("second pass removed %v (%v), want nothing", again.Partitions, err)
		}
	})

	t.Run("detach mode keeps the partitions as plain tables", func(t *testing.T) {
		b := setup(t)
		seed(t, b)
		res, err := b.acts.ApplyRetention(context.Background(), activities.RetentionInput{Table: "logs", Before: before, Mode: activities.RetentionDetach})
		if err != nil || len(res.Partitions) != 16 {
			t.Fatalf("detached %v (%v), want 16", res.Partitions, err)
		}
		if n := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_logs_archive_y2017m11`); n != 2 {
			t.Fatalf("the detached partition holds %d rows, want its 2", n)
		}
		if slices.Contains(partitions(t, b, "scenario_logs_archive"), "scenario_logs_archive_y2017m11") {
			t.Fatal("the partition is still attached")
		}
	})

	t.Run("a detach blocked by a long transaction does not hold up other readers and completes once it ends", func(t *testing.T) {
		b := setup(t)
		seed(t, b)
		ctx := context.Background()
		// A long transaction reading the archive holds a lock the detach
		// needs on the partition; the detach gives way and retries.
		tx, err := b.db.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `LOCK TABLE scenario_logs_archive_y2017m11 IN ACCESS EXCLUSIVE MODE`); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := b.acts.ApplyRetention(ctx, activities.RetentionInput{Table: "logs", Before: before})
			done <- err
		}()
		// While blocked, ordinary readers of the archive are not queued
		// behind the detach: this select returns at once.
		rctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
		defer cancel()
		if _, err := b.db.Exec(rctx, `SELECT count(*) FROM scenario_logs_archive_y2025m01`); err != nil {
			t.Fatalf("a reader of another partition waited behind the detach: %v", err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("retention after the lock was released: %v", err)
		}
	})
}
