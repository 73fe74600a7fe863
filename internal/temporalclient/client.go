// Package temporalclient dials Temporal for the worker and the starter and
// registers the search attributes the archiver sets on its runs.
package temporalclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"go.opentelemetry.io/otel/trace"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"
	temporalotel "go.temporal.io/sdk/contrib/opentelemetry"
	"go.temporal.io/sdk/converter"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"

	"github.com/mockupaws/archiver/internal/config"
	"github.com/mockupaws/archiver/internal/telemetry"
)

// SearchAttributes are the custom search attributes runs carry, so that the
// Web UI can filter them (temporal-dev.yaml lists the same).
var SearchAttributes = map[string]enumspb.IndexedValueType{
	"ArchiveTables":   enumspb.INDEXED_VALUE_TYPE_KEYWORD_LIST,
	"ArchiveDryRun":   enumspb.INDEXED_VALUE_TYPE_BOOL,
	"ArchiveAsOf":     enumspb.INDEXED_VALUE_TYPE_DATETIME,
	"ArchiveBackfill": enumspb.INDEXED_VALUE_TYPE_BOOL,
}

// DialOption adjusts the client options (telemetry).
type DialOption func(*client.Options)

// WithTelemetry routes the Temporal SDK's metrics through the worker's
// OpenTelemetry meter provider and adds the OpenTelemetry tracing
// interceptor, so that a run's trace links the starter, the workflow and
// its activities.
func WithTelemetry(tel *telemetry.Telemetry) DialOption {
	return func(o *client.Options) {
		o.MetricsHandler = temporalotel.NewMetricsHandler(temporalotel.MetricsHandlerOptions{Meter: tel.MeterProvider.Meter("go.temporal.io/sdk")})
		if ti, err := temporalotel.NewTracingInterceptor(temporalotel.TracerOptions{Tracer: tel.TracerProvider.Tracer("go.temporal.io/sdk")}); err == nil {
			o.Interceptors = append(o.Interceptors, ti)
		}
	}
}

// WithTracing adds only the tracing interceptor (the starter).
func WithTracing(tp trace.TracerProvider) DialOption {
	return func(o *client.Options) {
		if ti, err := temporalotel.NewTracingInterceptor(temporalotel.TracerOptions{Tracer: tp.Tracer("go.temporal.io/sdk")}); err == nil {
			o.Interceptors = append(o.Interceptors, ti)
		}
	}
}

// Dial connects to the configured Temporal frontend and namespace.
func Dial(ctx context.Context, cfg config.Config, logger *slog.Logger, extra ...DialOption) (client.Client, error) {
	opts, err := Options(cfg)
	if err != nil {
		return nil, err
	}
	opts.Logger = tlog.NewStructuredLogger(logger)
	for _, f := range extra {
		f(&opts)
	}
	c, err := client.DialContext(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("connect to Temporal at %s (TEMPORAL_ADDRESS), namespace %s: %w", cfg.TemporalAddress, cfg.TemporalNamespace, err)
	}
	return c, nil
}

// Options are the client options for cfg: address, namespace, and TLS with
// a client certificate or an API key when configured (a Temporal cluster or
// Temporal Cloud).
func Options(cfg config.Config) (client.Options, error) {
	o := client.Options{HostPort: cfg.TemporalAddress, Namespace: cfg.TemporalNamespace}
	var tc *tls.Config
	if cfg.TemporalTLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TemporalTLSCert, cfg.TemporalTLSKey)
		if err != nil {
			return o, fmt.Errorf("TEMPORAL_TLS_CERT/TEMPORAL_TLS_KEY: %w", err)
		}
		tc = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if cfg.TemporalAPIKey != "" {
		if tc == nil {
			tc = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		o.Credentials = client.NewAPIKeyStaticCredentials(cfg.TemporalAPIKey)
	}
	if cfg.TemporalTLSCA != "" {
		pem, err := os.ReadFile(cfg.TemporalTLSCA)
		if err != nil {
			return o, fmt.Errorf("TEMPORAL_TLS_CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return o, fmt.Errorf("TEMPORAL_TLS_CA: no PEM certificate in %s", cfg.TemporalTLSCA)
		}
		if tc == nil {
			tc = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		tc.RootCAs = pool
	}
	if tc != nil {
		tc.ServerName = cfg.TemporalTLSServerName
		o.ConnectionOptions.TLS = tc
	}
	// Payload encryption: the current key from the configuration, older
	// keys (decrypt only) from TEMPORAL_PAYLOAD_KEYS.
	if cfg.TemporalPayloadKey != "" || strings.TrimSpace(os.Getenv(KeysEnv)) != "" {
		codec, err := NewKeyring(cfg.TemporalPayloadKey, os.Getenv(KeysEnv))
		if err != nil {
			return o, err
		}
		o.DataConverter, o.FailureConverter = Converters(codec)
	}
	return o, nil
}

// Converters are the data converter that passes every payload through codec
// and the failure converter that also encodes failure messages and stack
// traces with it (they would otherwise reach the history in plaintext).
// Failures recorded without encoded attributes still decode.
func Converters(codec converter.PayloadCodec) (converter.DataConverter, converter.FailureConverter) {
	dc := converter.NewCodecDataConverter(converter.GetDefaultDataConverter(), codec)
	return dc, temporal.NewDefaultFailureConverter(temporal.DefaultFailureConverterOptions{DataConverter: dc, EncodeCommonAttributes: true})
}

// EnsureSearchAttributes registers the archiver's search attributes that the
// namespace lacks, so that a bare Temporal server works too.
func EnsureSearchAttributes(ctx context.Context, c client.Client, namespace string) error {
	list, err := c.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: namespace})
	if err != nil {
		return fmt.Errorf("list search attributes of namespace %s: %w", namespace, err)
	}
	missing := map[string]enumspb.IndexedValueType{}
	for name, typ := range SearchAttributes {
		if have, ok := list.GetCustomAttributes()[name]; ok {
			if have != typ {
				return fmt.Errorf("search attribute %s exists in namespace %s with type %s, the archiver needs %s", name, namespace, have, typ)
			}
			continue
		}
		missing[name] = typ
	}
	if len(missing) == 0 {
		return nil
	}
	_, err = c.OperatorService().AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{
		Namespace: namespace, SearchAttributes: missing,
	})
	if err != nil {
		return fmt.Errorf("register search attributes in namespace %s: %w", namespace, err)
	}
	return nil
}
