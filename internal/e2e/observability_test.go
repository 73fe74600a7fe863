package e2e

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/telemetry"
	"github.com/mockupaws/archiver/internal/temporalclient"
	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/workflows"
)

// scrape reads /metrics and returns the families by name.
func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return fams
}

// value is the sample of family name whose labels include want.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// The seed's series come out with the names its alert rules use and the
// values of what moved; a failing run increments the failure counter; the
// Temporal SDK's own metrics are on the same endpoint.
func TestMetricsAfterRun(t *testing.T) {
	b := setup(t)
	tel, err := telemetry.Setup(context.Background(), "archiver-test", "")
	if err != nil {
		t.Fatal(err)
	}
	env := testenv.Load(t)
	c, err := client.Dial(client.Options{HostPort: env.TemporalAddress, Namespace: env.Namespace})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var opts client.Options
	temporalclient.WithTelemetry(tel)(&opts)
	mc, err := client.NewClientFromExisting(c, client.Options{MetricsHandler: opts.MetricsHandler})
	if err != nil {
		t.Fatal(err)
	}
	b.acts.Metrics = tel.Metrics
	tel.Metrics.Init(context.Background(), []string{"logs", "metrics", "reports"}) // as the worker does
	queue := "metrics-" + testenv.RandomID()
	testenv.StartWorkerOn(t, mc, queue, b.acts)
	b.queue = queue

	before := b.snapshot(t)
	res, _, err := b.run(t, workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf})
	if err != nil {
		t.Fatal(err)
	}
	fams := scrape(t, tel.Handler)
	logs := map[string]string{"table": "logs"}
	for name, want := range map[string]float64{
		"archive_rows_total|archived": float64(before.eligibleN),
		"archive_rows_total|deleted":  float64(before.eligibleN),
		"archive_bytes_total":         float64(res.Tables[0].Bytes),
		"archive_rows_remaining":      0,
	} {
		metric, action, _ := strings.Cut(name, "|")
		labels := map[string]string{"table": "logs"}
		if action != "" {
			labels["action"] = action
		}
		got, ok := value(fams, metric, labels)
		if !ok || got != want {
			t.Errorf("%s%v = %v (present %v), want %v", metric, labels, got, ok, want)
		}
	}
	if ts, ok := value(fams, "archive_job_last_success_timestamp", logs); !ok || time.Since(time.Unix(int64(ts), 0)) > time.Minute {
		t.Errorf("archive_job_last_success_timestamp{table=logs} = %v (present %v), want about now", ts, ok)
	}
	if n, ok := value(fams, "archive_batch_duration_seconds", logs); !ok || n != float64(res.Tables[0].Batches) {
		t.Errorf("batch duration histogram counts %v batches (present %v), want %d", n, ok, res.Tables[0].Batches)
	}
	if _, ok := value(fams, "archive_batch_size", logs); !ok {
		t.Error("archive_batch_size is missing")
	}
	if got, ok := value(fams, "archive_job_failures_total", logs); !ok || got != 0 {
		t.Errorf("archive_job_failures_total{table=logs} = %v (present %v) before any failure, want 0", got, ok)
	}
	var sdk []string
	for name := range fams {
		if strings.HasPrefix(name, "temporal_") {
			sdk = append(sdk, name)
		}
	}
	if len(sdk) == 0 {
		t.Error("no Temporal SDK metrics on /metrics")
	}

	// A failing run.
	testenv.InsertLogs(t, b.db, []time.Time{asOf.AddDate(-2, 0, 0)})
	b.acts.AfterCommit = func(context.Context, activities.MoveBatchResult) error {
		return temporal.NewNonRetryableApplicationError("injected", activities.ErrInvalidInput, nil)
	}
	if _, _, err := b.run(t, workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf.Add(time.Hour)}); err == nil {
		t.Fatal("the injected failure did not fail the run")
	}
	if got, ok := value(scrape(t, tel.Handler), "archive_job_failures_total", logs); !ok || got != 1 {
		t.Errorf("archive_job_failures_total{table=logs} = %v (present %v) after one failed run, want 1", got, ok)
	}
	sort.Strings(sdk)
	t.Logf("Temporal SDK series on /metrics include %v", sdk[:min(4, len(sdk))])
}

// The trace of a run links the starter's span, the workflow and its
// activities, down to one span per batch carrying table, rows, bytes and
// batch id (never row content).
func TestTraceOfARun(t *testing.T) {
	b := setup(t)
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	defer tp.Shutdown(context.Background())
	env := testenv.Load(t)
	var opts client.Options
	temporalclient.WithTracing(tp)(&opts)
	c, err := client.Dial(client.Options{HostPort: env.TemporalAddress, Namespace: env.Namespace, Interceptors: opts.Interceptors})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b.acts.Tracer = tp.Tracer("archiver")
	queue := "trace-" + testenv.RandomID()
	testenv.StartWorkerOn(t, c, queue, b.acts)

	ctx, root := tp.Tracer("starter").Start(context.Background(), "starter run")
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "trace-" + testenv.RandomID(), TaskQueue: queue},
		workflows.ArchiveWorkflowName, workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf, BatchSize: 5000, MinBatch: 5000, MaxBatch: 5000})
	if err != nil {
		t.Fatal(err)
	}
	var res workflows.ArchiveResult
	if err := testenv.Wait(t, c, run, testenv.DefaultWait, &res); err != nil {
		t.Fatal(err)
	}
	root.End()

	got := spans.GetSpans()
	byID := map[string]tracetest.SpanStub{}
	for _, s := range got {
		byID[s.SpanContext.SpanID().String()] = s
	}
	path := func(s tracetest.SpanStub) []string {
		var p []string
		for {
			p = append([]string{s.Name}, p...)
			parent, ok := byID[s.Parent.SpanID().String()]
			if !s.Parent.IsValid() || !ok {
				return p
			}
			s = parent
		}
	}
	var batches int
	for _, s := range got {
		if s.Name != "archive.batch" {
			continue
		}
		batches++
		if s.SpanContext.TraceID() != root.SpanContext().TraceID() {
			t.Fatal("a batch span is not in the run's trace")
		}
		p := strings.Join(path(s), " > ")
		for _, want := range []string{"starter run", "StartWorkflow:ArchiveWorkflow", "RunWorkflow:ArchiveWorkflow", "RunActivity:MoveBatch", "archive.batch"} {
			if !strings.Contains(p, want) {
				t.Fatalf("batch span path %q lacks %q", p, want)
			}
		}
		attrs := map[attribute.Key]attribute.Value{}
		for _, kv := range s.Attributes {
			attrs[kv.Key] = kv.Value
		}
		for _, k := range []attribute.Key{"archive.table", "archive.rows", "archive.bytes", "archive.batch_id"} {
			if _, ok := attrs[k]; !ok {
				t.Fatalf("batch span lacks %s: %v", k, s.Attributes)
			}
		}
		if batches == 1 {
			t.Logf("trace of a run: %s", p)
		}
	}
	if int64(batches) != res.Tables[0].Batches {
		t.Fatalf("%d batch spans, want one per batch (%d)", batches, res.Tables[0].Batches)
	}
}
