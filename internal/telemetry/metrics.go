// Package telemetry gives the worker its Prometheus metrics (through the
// OpenTelemetry SDK and its Prometheus exporter), its traces (OTLP when
// OTEL_EXPORTER_OTLP_ENDPOINT is set) and its logger. The metric names are
// the ones the seed's alert rules use (deploy/prometheus/archive-alerts.yml).
package telemetry

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Metrics records what the archiver does. A nil *Metrics records nothing, so
// activities built without telemetry (tests) need no checks.
type Metrics struct {
	failures  metric.Int64Counter
	bytes     metric.Int64Counter
	rows      metric.Int64Counter
	batchTime metric.Float64Histogram
	loadRests metric.Int64Counter
	loadRest  metric.Float64Counter
	loadStops metric.Int64Counter

	mu          sync.Mutex
	lastSuccess map[string]float64
	batchSize   map[string]int64
	remaining   map[string]int64
}

// NewMetrics registers the archiver's instruments on meter. Names are chosen
// for the Prometheus exporter's suffix rules: counters get _total, the
// histogram's unit "s" gives _seconds, the gauges have no unit and so keep
// their names.
func NewMetrics(meter metric.Meter) (*Metrics, error) {
	m := &Metrics{lastSuccess: map[string]float64{}, batchSize: map[string]int64{}, remaining: map[string]int64{}}
	var err error
	if m.failures, err = meter.Int64Counter("archive_job_failures",
		metric.WithDescription("Archive jobs that ended failed, by table.")); err != nil {
		return nil, err
	}
	if m.bytes, err = meter.Int64Counter("archive_bytes",
		metric.WithDescription("Bytes archived: live rows' on-disk size, or report files' original size, by table.")); err != nil {
		return nil, err
	}
	if m.rows, err = meter.Int64Counter("archive_rows",
		metric.WithDescription("Rows by table and action: archived (written to the archive), deleted (from the live table), aggregated (metric samples folded into daily rows).")); err != nil {
		return nil, err
	}
	if m.batchTime, err = meter.Float64Histogram("archive_batch_duration", metric.WithUnit("s"),
		metric.WithDescription("Time a batch transaction held its locks."),
		metric.WithExplicitBucketBoundaries(0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, 30)); err != nil {
		return nil, err
	}
	if m.loadRests, err = meter.Int64Counter("archive_load_rests",
		metric.WithDescription("Batches that rested because the server's load was past --max-load, by table.")); err != nil {
		return nil, err
	}
	if m.loadRest, err = meter.Float64Counter("archive_load_rest", metric.WithUnit("s"),
		metric.WithDescription("Time batches rested for the server's load, by table.")); err != nil {
		return nil, err
	}
	if m.loadStops, err = meter.Int64Counter("archive_load_stops",
		metric.WithDescription("Runs that stopped because the server's load was past --critical-load, by table.")); err != nil {
		return nil, err
	}
	gauge := func(name, desc string, values func() map[string]float64) error {
		_, err := meter.Float64ObservableGauge(name, metric.WithDescription(desc),
			metric.WithFloat64Callback(func(_ context.Context, o metric.Float64Observer) error {
				for table, v := range values() {
					o.Observe(v, metric.WithAttributes(attribute.String("table", table)))
				}
				return nil
			}))
		return err
	}
	if err := gauge("archive_job_last_success_timestamp", "Unix time of the last completed archive job, by table.", m.snapshot(func() map[string]float64 { return m.lastSuccess })); err != nil {
		return nil, err
	}
	if err := gauge("archive_batch_size", "Rows per batch the lock-time budget currently allows, by table.", m.snapshot(func() map[string]float64 { return toFloat(m.batchSize) })); err != nil {
		return nil, err
	}
	if err := gauge("archive_rows_remaining", "Eligible rows not yet archived (planner estimate at the start of a run, minus what moved since), by table.", m.snapshot(func() map[string]float64 { return toFloat(m.remaining) })); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Metrics) snapshot(f func() map[string]float64) func() map[string]float64 {
	return func() map[string]float64 {
		m.mu.Lock()
		defer m.mu.Unlock()
		out := map[string]float64{}
		for k, v := range f() {
			out[k] = v
		}
		return out
	}
}

func toFloat(in map[string]int64) map[string]float64 {
	out := make(map[string]float64, len(in))
	for k, v := range in {
		out[k] = float64(v)
	}
	return out
}

// Init makes the counters of tables exist at zero, so that the alert rules
// see the series (an OpenTelemetry counter with no value is not exported).
func (m *Metrics) Init(ctx context.Context, tables []string) {
	if m == nil {
		return
	}
	for _, table := range tables {
		t := attribute.String("table", table)
		m.failures.Add(ctx, 0, metric.WithAttributes(t))
		m.bytes.Add(ctx, 0, metric.WithAttributes(t))
	}
}

// Batch records one committed batch (not a replayed one: its rows were
// counted when it committed).
func (m *Metrics) Batch(ctx context.Context, table string, archived, deleted, aggregated, bytes int64, held time.Duration, limit int) {
	if m == nil {
		return
	}
	t := attribute.String("table", table)
	m.rows.Add(ctx, archived, metric.WithAttributes(t, attribute.String("action", "archived")))
	m.rows.Add(ctx, deleted, metric.WithAttributes(t, attribute.String("action", "deleted")))
	if aggregated > 0 {
		m.rows.Add(ctx, aggregated, metric.WithAttributes(t, attribute.String("action", "aggregated")))
	}
	m.bytes.Add(ctx, bytes, metric.WithAttributes(t))
	m.batchTime.Record(ctx, held.Seconds(), metric.WithAttributes(t))
	m.mu.Lock()
	defer m.mu.Unlock()
	m.batchSize[table] = int64(limit)
	if r, ok := m.remaining[table]; ok {
		m.remaining[table] = max(0, r-deleted)
	}
}

// LoadRest records a batch's rest for the server's load; stop, that the
// critical load stopped the run.
func (m *Metrics) LoadRest(ctx context.Context, table string, rested time.Duration, stop bool) {
	if m == nil {
		return
	}
	t := metric.WithAttributes(attribute.String("table", table))
	if stop {
		m.loadStops.Add(ctx, 1, t)
		return
	}
	m.loadRests.Add(ctx, 1, t)
	m.loadRest.Add(ctx, rested.Seconds(), t)
}

// JobFinished records a job's end: a failure, or the time of its success.
func (m *Metrics) JobFinished(ctx context.Context, table string, failed bool, at time.Time) {
	if m == nil {
		return
	}
	if failed {
		m.failures.Add(ctx, 1, metric.WithAttributes(attribute.String("table", table)))
		return
	}
	m.SetLastSuccess(table, at)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.remaining[table] = 0
}

// SetLastSuccess sets a table's last success (the worker seeds it from
// archive_jobs at start, so a restart does not look like a missed night).
func (m *Metrics) SetLastSuccess(table string, at time.Time) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if v := float64(at.UnixNano()) / 1e9; v > m.lastSuccess[table] {
		m.lastSuccess[table] = v
	}
}

// Remaining sets a table's estimate of eligible rows left.
func (m *Metrics) Remaining(table string, n int64) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.remaining[table] = n
}
