package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mockupaws/archiver/migrations"
)

// scaleWorkload (`--scale`): the logs run at growing sizes, each on a
// database of its own seeded with only that many log rows, so the cost
// curve shows whether rows/s, history per row or memory grow with the
// table. One logs_scale line per size; vs_first is its rows/s over the
// first size's.
func (b *bench) scaleWorkload(ctx context.Context, emit func(Result)) error {
	var first float64
	for _, n := range b.o.scaleSizes {
		name := fmt.Sprintf("bench_scale_%d_%d", n, time.Now().UnixNano()%1e9)
		if err := b.exec(ctx, "CREATE DATABASE "+name); err != nil {
			return err
		}
		b.dbs = append(b.dbs, name)
		url := b.dbURL(name)
		seedStart := time.Now()
		if err := seedScale(ctx, url, n, b.o.scaleInTimeOrder); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "bench: scale %d rows seeded in %s\n", n, time.Since(seedStart).Round(time.Second))
		secs, rss, id, err := b.ours(ctx, url, []string{"logs"}, "")
		if err != nil {
			return err
		}
		ms, events, err := batchTimes(ctx, b.c, id)
		if err != nil {
			return err
		}
		r := Result{Workload: "logs_scale", Rows: int64(n), Seconds: round(secs), RowsPerS: round(float64(n) / secs),
			PeakRSSMB: rss, HistoryEvents: events, Batches: len(ms), LoadAvg: []float64{loadAvg()}}
		r.EventsPerMRows = round(float64(events) / (float64(n) / 1e6))
		if r.BatchSpanS, r.VacuumS, err = scaleSteps(ctx, url); err != nil {
			return err
		}
		if b.o.scaleInTimeOrder {
			r.Notes = append(r.Notes, "log rows stored in time order (-scale-in-time-order)")
		}
		if len(ms) > 0 {
			r.P50BatchMS, r.P99BatchMS, r.MaxBatchMS = percentile(ms, 0.5), percentile(ms, 0.99), ms[len(ms)-1]
		}
		if first == 0 {
			first = r.RowsPerS
		}
		r.VsFirst = round(r.RowsPerS / first)
		emit(r)
		if !b.o.keep { // 20M rows are gigabytes: free them before the next size
			_ = b.exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
		}
	}
	return nil
}

// seedScale migrates the database at url, seeds n log rows and makes the
// archive partitions they need (untimed, as for the other workloads).
func seedScale(ctx context.Context, url string, n int, inTimeOrder bool) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, _, err := migrations.Up(ctx, conn); err != nil {
		return err
	}
	if err := bulkLoad(ctx, conn, "scenario_logs", func(tx pgx.Tx) error { return insertLogs(ctx, tx, n, inTimeOrder) }); err != nil {
		return err
	}
	// A table that has held a year of logs has long been vacuumed: its
	// hint bits set and its pages all-visible. Left to autovacuum, the
	// fresh load's first VACUUM (4 min over 20M rows) and hint-bit writes
	// ran inside the timed run, beside the batches, on a 20M table only.
	for _, s := range []string{`VACUUM (ANALYZE) scenario_logs`, `CHECKPOINT`} {
		if _, err := conn.Exec(ctx, s); err != nil {
			return err
		}
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return err
	}
	defer pool.Close()
	return ensurePartitions(ctx, pool, "logs", logsCutoff)
}

// scaleSteps reads, from the run's own records, the span of its batches
// (the ledger's first to last commit, the VACUUM step before the final
// sweep included) and the VACUUM step's seconds (archive_jobs.vacuum,
// "... N ms" when it ran). The sweep is one of the batches: max_batch_ms
// bounds it.
func scaleSteps(ctx context.Context, url string) (batchSpan, vacuum float64, err error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close(ctx)
	err = conn.QueryRow(ctx, `
		SELECT (SELECT COALESCE(extract(epoch FROM max(committed_at) - min(committed_at)), 0)::float8 FROM archive_batches),
		       (SELECT COALESCE(sum(substring(vacuum FROM '([0-9]+) ms$')::float8), 0) / 1000 FROM archive_jobs)`).Scan(&batchSpan, &vacuum)
	return round(batchSpan), round(vacuum), err
}
