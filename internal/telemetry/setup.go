package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"

	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/term"
)

// Telemetry is what the worker serves and exports.
type Telemetry struct {
	Metrics        *Metrics
	MeterProvider  *sdkmetric.MeterProvider
	TracerProvider trace.TracerProvider
	// Handler serves /metrics: the archiver's metrics and the Temporal
	// SDK's (registered on the same meter provider by the worker).
	Handler  http.Handler
	shutdown []func(context.Context) error
}

// Setup builds metrics for Prometheus and, when otlpEndpoint is set (the
// standard OTEL_EXPORTER_OTLP_* variables configure the exporter), traces
// over OTLP; otherwise traces are off.
func Setup(ctx context.Context, service, otlpEndpoint string) (*Telemetry, error) {
	reg := prom.NewRegistry()
	exporter, err := otelprom.New(
		otelprom.WithRegisterer(reg),
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes),
		otelprom.WithoutScopeInfo(),
	)
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	res := resource.NewSchemaless(semconv.ServiceName(service))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter), sdkmetric.WithResource(res))
	m, err := NewMetrics(mp.Meter("github.com/mockupaws/archiver"))
	if err != nil {
		return nil, err
	}
	t := &Telemetry{Metrics: m, MeterProvider: mp, TracerProvider: noop.NewTracerProvider(),
		Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), shutdown: []func(context.Context) error{mp.Shutdown}}
	tp, shutdown, err := Tracing(ctx, service, otlpEndpoint)
	if err != nil {
		return nil, err
	}
	t.TracerProvider = tp
	t.shutdown = append(t.shutdown, shutdown)
	return t, nil
}

// Tracing is an OTLP tracer provider when otlpEndpoint is set (the standard
// OTEL_EXPORTER_OTLP_* variables configure it), a no-op one otherwise. It
// becomes the global provider, with W3C trace-context propagation.
func Tracing(ctx context.Context, service, otlpEndpoint string) (trace.TracerProvider, func(context.Context) error, error) {
	var tp trace.TracerProvider = noop.NewTracerProvider()
	shutdown := func(context.Context) error { return nil }
	if otlpEndpoint != "" {
		te, err := otlptracegrpc.New(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("OTLP trace exporter (OTEL_EXPORTER_OTLP_ENDPOINT): %w", err)
		}
		sdk := sdktrace.NewTracerProvider(sdktrace.WithBatcher(te), sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName(service))))
		tp, shutdown = sdk, sdk.Shutdown
	}
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	return tp, shutdown, nil
}

// Shutdown flushes the exporters.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	for _, f := range t.shutdown {
		errs = append(errs, f(ctx))
	}
	return errors.Join(errs...)
}

// Logger is log/slog as JSON, or as text when w is a terminal.
func Logger(w io.Writer, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
