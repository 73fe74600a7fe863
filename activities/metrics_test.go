package activities_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/testenv"
)

// metricsCutoff is the day-aligned cut-off of the metrics policy at asOf.
var metricsCutoff = activities.DayStart(asOf.Add(-730 * 24 * time.Hour))

func metricsJob(t *testing.T, b bundle) string {
	t.Helper()
	id := uuid.NewString()
	if _, err := b.acts.StartJob(context.Background(), activities.StartJobInput{
		JobID: id, Table: "metrics", WorkflowID: "wf", RunID: "run", AsOf: asOf, Cutoff: metricsCutoff}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.acts.EnsurePartitions(context.Background(), activities.EnsurePartitionsInput{Table: "metrics", Cutoff: metricsCutoff}); err != nil {
		t.Fatal(err)
	}
	return id
}

func moveMetricsUntilDone(t *testing.T, b bundle, job string, limit int) []activities.MoveBatchResult {
	t.Helper()
	var out []activities.MoveBatchResult
	for i := 0; i < 1000; i++ {
		r, err := b.acts.MoveBatch(context.Background(), activities.MoveBatchInput{
			Table: "metrics", JobID: job, BatchID: uuid.NewString(), Cutoff: metricsCutoff, Limit: limit})
		if err != nil {
			t.Fatalf("MoveBatch: %v", err)
		}
		out = append(out, r)
		if !r.More {
			return out
		}
	}
	t.Fatal("metrics batches never finished")
	return nil
}

// groupBy is what SQL computes from raw samples: the reference.
const groupBy = `
	SELECT scenario_id::text, metric_type, metric_name, unit, date_trunc('day', timestamp, 'UTC') AS day,
	       round(avg(value), 6)::text, count(*), min(value)::text, max(value)::text
	FROM %s WHERE timestamp < $1 GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5`

const archived = `
	SELECT scenario_id::text, metric_type, metric_name, unit, timestamp,
	       value::text, sample_count, (extra_data->>'min')::numeric::text, (extra_data->>'max')::numeric::text
	FROM scenario_metrics_archive WHERE is_aggregated AND aggregation_period = 'day' ORDER BY 1, 2, 3, 4, 5`

type aggRow struct {
	scenario, typ, name, unit string
	day                       time.Time
	avg                       string
	n                         int64
	lo, hi                    string
}

func aggregates(t *testing.T, b bundle, sql string, args ...any) []aggRow {
	t.Helper()
	rows, err := b.db.Query(context.Background(), sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []aggRow
	for rows.Next() {
		var r aggRow
		if err := rows.Scan(&r.scenario, &r.typ, &r.name, &r.unit, &r.day, &r.avg, &r.n, &r.lo, &r.hi); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func equalAggs(t *testing.T, got, want []aggRow) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d aggregates, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].scenario != want[i].scenario || got[i].typ != want[i].typ || got[i].name != want[i].name ||
			got[i].unit != want[i].unit || !got[i].day.Equal(want[i].day) || got[i].avg != want[i].avg ||
			got[i].n != want[i].n || got[i].lo != want[i].lo || got[i].hi != want[i].hi {
			t.Fatalf("aggregate %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestMetrics(t *testing.T) {
	t.Run("daily aggregates equal SQL's GROUP BY over batches that split days; samples deleted", func(t *testing.T) {
		b := setup(t)
		job := metricsJob(t, b)
		testenv.InsertMetrics(t, b.db, testenv.MetricSamples(metricsCutoff, 5, 48))
		// Young samples (the cut-off day itself) stay.
		testenv.InsertMetrics(t, b.db, testenv.MetricSamples(metricsCutoff.AddDate(0, 0, 1), 1, 10))
		want := aggregates(t, b, fmt.Sprintf(groupBy, "scenario_metrics"), metricsCutoff)

		// 100 samples per batch (48 a day): every batch but the last ends
		// inside a day, which the next batch merges into.
		batches := moveMetricsUntilDone(t, b, job, 100)
		if len(batches) != 3 || batches[0].RowsDeleted != 100 || batches[1].RowsDeleted != 100 || batches[2].RowsDeleted != 40 {
			t.Fatalf("batches %+v, want 100, 100 and 40 samples", batches)
		}
		if batches[1].RowsMerged == 0 || batches[2].RowsMerged == 0 {
			t.Fatalf("batches %+v: the second and third start inside a day and must merge into it", batches)
		}
		equalAggs(t, aggregates(t, b, archived), want)
		if n := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_metrics WHERE timestamp < $1`, metricsCutoff); n != 0 {
			t.Fatalf("%d eligible samples left", n)
		}
		if n := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_metrics`); n != 10 {
			t.Fatalf("%d young samples left, want 10", n)
		}
		if n := testenv.Count(t, b.db, `SELECT sum(sample_count) FROM v_scenario_metrics_all`); n != 5*48+10 {
			t.Fatalf("v_scenario_metrics_all counts %d samples, want %d", n, 5*48+10)
		}
	})

	t.Run("a day larger than the batch limit is taken in parts, merged exactly", func(t *testing.T) {
		b := setup(t)
		job := metricsJob(t, b)
		testenv.InsertMetrics(t, b.db, testenv.MetricSamples(metricsCutoff, 2, 300))
		want := aggregates(t, b, fmt.Sprintf(groupBy, "scenario_metrics"), metricsCutoff)
		batches := moveMetricsUntilDone(t, b, job, 100)
		if len(batches) != 7 { // 6 of 100, then one that finds nothing
			t.Fatalf("%d batches %+v, want 6 of 100 samples and a last empty one", len(batches), batches)
		}
		for i, r := range batches[:6] {
			if r.RowsDeleted != 100 {
				t.Fatalf("batch %d deleted %d samples, want 100", i, r.RowsDeleted)
			}
		}
		equalAggs(t, aggregates(t, b, archived), want)
		if n := testenv.Count(t, b.db, `SELECT count(*) FROM archive_batches b
			WHERE rows_moved <> (SELECT count(*) FROM scenario_metrics_archive a WHERE a.archive_batch_id = b.batch_id)`); n != 0 {
			t.Fatalf("%d ledger rows disagree with the rows carrying their batch id", n)
		}
	})

	t.Run("a batch retried after its commit changes nothing and returns the recorded result and cursor", func(t *testing.T) {
		b := setup(t)
		job := metricsJob(t, b)
		testenv.InsertMetrics(t, b.db, testenv.MetricSamples(metricsCutoff, 3, 48))
		in := activities.MoveBatchInput{Table: "metrics", JobID: job, BatchID: uuid.NewString(), Cutoff: metricsCutoff, Limit: 100}
		first, err := b.acts.MoveBatch(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		aggsBefore := aggregates(t, b, archived)
		left := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_metrics`)
		again, err := b.acts.MoveBatch(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		if !again.Replayed || again.RowsMoved != first.RowsMoved || again.RowsMerged != first.RowsMerged || again.RowsDeleted != first.RowsDeleted ||
			again.Bytes != first.Bytes || again.More != first.More || again.Last == nil || *again.Last != *first.Last {
			t.Fatalf("retry returned %+v (last %+v), want the recorded %+v (last %+v)", again, again.Last, first, first.Last)
		}
		equalAggs(t, aggregates(t, b, archived), aggsBefore)
		if n := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_metrics`); n != left {
			t.Fatalf("the retry deleted samples: %d left, want %d", n, left)
		}
	})

	t.Run("late samples merge into the day's aggregate", func(t *testing.T) {
		b := setup(t)
		job := metricsJob(t, b)
		first := testenv.MetricSamples(metricsCutoff, 1, 40)
		testenv.InsertMetrics(t, b.db, first)
		moveMetricsUntilDone(t, b, job, 1000)
		var batchBefore string
		if err := b.db.QueryRow(context.Background(), `SELECT archive_batch_id::text FROM scenario_metrics_archive LIMIT 1`).Scan(&batchBefore); err != nil {
			t.Fatal(err)
		}

		// A late import: more samples for the same day and groups, with values
		// that widen the range, plus a new group.
		// Fewer samples than the first import (17 against 40): a merge
		// that averaged the two averages would be caught.
		late := testenv.MetricSamples(metricsCutoff, 1, 17)
		for i := range late {
			late[i].Value = late[i].Value*3 + 1000
		}
		late = append(late, testenv.Sample{Scenario: late[0].Scenario, At: late[0].At, Type: "errors", Name: "count", Value: 5, Unit: "n"})
		testenv.InsertMetrics(t, b.db, late)
		// The reference: both imports together, as if all had been present.
		ref := newBundle(t)
		testenv.InsertMetrics(t, ref.db, first)
		testenv.InsertMetrics(t, ref.db, late)
		want := aggregates(t, ref, fmt.Sprintf(groupBy, "scenario_metrics"), metricsCutoff)

		r := moveMetricsUntilDone(t, b, job, 1000)
		if r[0].RowsMerged != 4 || r[0].RowsMoved != 1 {
			t.Fatalf("late batch merged %d and inserted %d, want 4 merged groups and 1 new", r[0].RowsMerged, r[0].RowsMoved)
		}
		equalAggs(t, aggregates(t, b, archived), want)
		if n := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_metrics_archive WHERE archive_batch_id = $1`, batchBefore); n != 4 {
			t.Fatalf("%d rows carry the first batch id, want the 4 merged ones to keep it", n)
		}
		if n := testenv.Count(t, b.db, `SELECT count(*) FROM archive_batches b
			WHERE rows_moved <> (SELECT count(*) FROM scenario_metrics_archive a WHERE a.archive_batch_id = b.batch_id)`); n != 0 {
			t.Fatalf("%d ledger rows disagree with the rows carrying their batch id", n)
		}
	})
}

// A metrics batch takes its range without row locks: samples the
// application changes while the batch runs are settled by the DELETE, which
// re-checks a changed sample's latest version and returns what it deleted.
func TestMetricsConcurrentChanges(t *testing.T) {
	t.Run("samples updated or deleted by the application during a batch are counted once, in the version deleted, or left", func(t *testing.T) {
		b := setup(t)
		// Plans as on a large table: by index and by row address, never a
		// sequential scan, whose filter would re-check any condition.
		if _, err := b.db.Exec(context.Background(), `DO $$ BEGIN
			EXECUTE format('ALTER DATABASE %I SET enable_seqscan = off', current_database()); END $$`); err != nil {
			t.Fatal(err)
		}
		b.acts = &activities.Activities{DB: testenv.WorkerPool(t, b.url)}
		samples := testenv.MetricSamples(metricsCutoff, 2, 48)
		testenv.InsertMetrics(t, b.db, samples)
		// After the samples: their archive partitions exist, so the first
		// batch is not retried for a missing one (after the changes).
		job := metricsJob(t, b)
		// Three samples of the first batch (the oldest day's first 40): a
		// new value, a time past the cut-off, deleted. Their timestamps are
		// unique, so they name them.
		updated, moved, deleted := samples[1], samples[2], samples[3]
		young := metricsCutoff.Add(time.Hour)

		// The reference: every change applied before any batch.
		ref := newBundle(t)
		var changed []testenv.Sample
		for i, s := range samples {
			switch i {
			case 1:
				s.Value += 500000
			case 2:
				s.At = young
			case 3:
				continue
			}
			changed = append(changed, s)
		}
		testenv.InsertMetrics(t, ref.db, changed)
		want := aggregates(t, ref, fmt.Sprintf(groupBy, "scenario_metrics"), metricsCutoff)

		ctx := context.Background()
		app, err := b.db.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = app.Rollback(ctx) }()
		for _, c := range []struct {
			sql string
			at  time.Time
		}{
			{`UPDATE scenario_metrics SET value = value + 500000 WHERE timestamp = $1`, updated.At},
			{`UPDATE scenario_metrics SET timestamp = $2 WHERE timestamp = $1`, moved.At},
			{`DELETE FROM scenario_metrics WHERE timestamp = $1`, deleted.At},
		} {
			args := []any{c.at}
			if strings.Contains(c.sql, "$2") {
				args = append(args, young)
			}
			if tag, err := app.Exec(ctx, c.sql, args...); err != nil || tag.RowsAffected() != 1 {
				t.Fatalf("%s: %v (%d rows)", c.sql, err, tag.RowsAffected())
			}
		}

		// The batch runs while the application's transaction holds the
		// three samples: it waits for them (or skips them); the application
		// commits; the batch goes on.
		type result struct {
			r   activities.MoveBatchResult
			err error
		}
		done := make(chan result, 1)
		go func() {
			r, err := b.acts.MoveBatch(ctx, activities.MoveBatchInput{
				Table: "metrics", JobID: job, BatchID: uuid.NewString(), Cutoff: metricsCutoff, Limit: 40})
			done <- result{r, err}
		}()
		// Commit once the batch waits on the application's rows (or has
		// finished without waiting, as a batch that skipped them would).
		var first *result
		deadline := time.Now().Add(30 * time.Second)
		for first == nil && testenv.Count(t, b.db, `SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
			WHERE NOT l.granted AND a.datname = current_database()`) == 0 {
			if time.Now().After(deadline) {
				t.Fatal("the batch neither finished nor waited on the application's rows")
			}
			select {
			case r := <-done:
				first = &r
			case <-time.After(10 * time.Millisecond):
			}
		}
		if err := app.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if first == nil {
			r := <-done
			first = &r
		}
		if first.err != nil {
			t.Fatalf("MoveBatch: %v", first.err)
		}
		moveMetricsUntilDone(t, b, job, 40)

		equalAggs(t, aggregates(t, b, archived), want)
		if n := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_metrics WHERE timestamp = $1`, young); n != 1 {
			t.Fatalf("%d samples at the new young time, want the moved one left live", n)
		}
		if n := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_metrics WHERE timestamp < $1`, metricsCutoff); n != 0 {
			t.Fatalf("%d eligible samples left", n)
		}
		if n := testenv.Count(t, b.db, `SELECT sum(rows_deleted) FROM archive_batches WHERE job_id = $1`, job); n != int64(len(samples)-2) {
			t.Fatalf("the ledger counts %d samples deleted, want %d", n, len(samples)-2)
		}
	})
}

func TestMetricsHeldSample(t *testing.T) {
	t.Run("a sample an application transaction holds past the wait is skipped; the batch goes on and a later one takes it", func(t *testing.T) {
		b := setup(t)
		samples := testenv.MetricSamples(metricsCutoff, 1, 48)
		testenv.InsertMetrics(t, b.db, samples)
		job := metricsJob(t, b)
		want := aggregates(t, b, fmt.Sprintf(groupBy, "scenario_metrics"), metricsCutoff)

		ctx := context.Background()
		app, err := b.db.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = app.Rollback(ctx) }()
		if _, err := app.Exec(ctx, `SELECT 1 FROM scenario_metrics WHERE timestamp = $1 FOR UPDATE`, samples[5].At); err != nil {
			t.Fatal(err)
		}
		// The application's transaction stays open until the batch is done.
		done := make(chan error, 1)
		var first activities.MoveBatchResult
		go func() {
			var err error
			first, err = b.acts.MoveBatch(ctx, activities.MoveBatchInput{
				Table: "metrics", JobID: job, BatchID: uuid.NewString(), Cutoff: metricsCutoff, Limit: 100})
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("MoveBatch: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the batch still waits on the application's sample")
		}
		if first.RowsDeleted != int64(len(samples)-1) {
			t.Fatalf("the batch deleted %d samples, want all %d but the held one", first.RowsDeleted, len(samples)-1)
		}
		if err := app.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		moveMetricsUntilDone(t, b, job, 100)
		equalAggs(t, aggregates(t, b, archived), want)
	})
}
