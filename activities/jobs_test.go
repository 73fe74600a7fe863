package activities_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/telemetry"
)

// lastSuccessTables reads which tables archive_job_last_success_timestamp
// has a value for.
func lastSuccessTables(t *testing.T, r *sdkmetric.ManualReader) map[string]bool {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "archive_job_last_success_timestamp" {
				continue
			}
			g, ok := m.Data.(metricdata.Gauge[float64])
			if !ok {
				t.Fatalf("archive_job_last_success_timestamp is %T", m.Data)
			}
			for _, dp := range g.DataPoints {
				v, _ := dp.Attributes.Value("table")
				out[v.AsString()] = true
			}
		}
	}
	return out
}

// A restore is not a night's archive run: finishing one must not set the
// job metrics the missed-night alert reads, while an archive job does.
func TestJobMetricsLeaveRestoresOut(t *testing.T) {
	b := setup(t)
	reader := sdkmetric.NewManualReader()
	m, err := telemetry.NewMetrics(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test"))
	if err != nil {
		t.Fatal(err)
	}
	b.acts.Metrics = m
	ctx := context.Background()

	restoreJob := uuid.NewString()
	if _, err := b.acts.StartJob(ctx, activities.StartJobInput{
		JobID: restoreJob, Table: "logs", WorkflowID: "restore-logs", RunID: "r", AsOf: asOf, Cutoff: cutoff, Restore: true}); err != nil {
		t.Fatal(err)
	}
	tot, err := b.acts.FinishJob(ctx, activities.FinishJobInput{JobID: restoreJob})
	if err != nil {
		t.Fatal(err)
	}
	if tot.Table != "restore:logs" || tot.Status != "completed" {
		t.Fatalf("restore job finished as %+v, want job_type restore:logs completed", tot)
	}
	if got := lastSuccessTables(t, reader); len(got) != 0 {
		t.Fatalf("a finished restore set archive_job_last_success_timestamp for %v", got)
	}

	if _, err := b.acts.FinishJob(ctx, activities.FinishJobInput{JobID: b.jobID}); err != nil {
		t.Fatal(err)
	}
	if got := lastSuccessTables(t, reader); !got["logs"] || len(got) != 1 {
		t.Fatalf("after an archive job of logs the gauge has %v, want logs only", got)
	}
}
