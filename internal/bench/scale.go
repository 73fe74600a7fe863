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
		if err := seedScale(ctx, url, n); err != nil {
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
func seedScale(ctx context.Context, url string, n int) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, _, err := migrations.Up(ctx, conn); err != nil {
		return err
	}
	if err := seedLogs(ctx, conn, n); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, `ANALYZE scenario_logs`); err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return err
	}
	defer pool.Close()
	return ensurePartitions(ctx, pool, "logs", logsCutoff)
}
