// Package config reads the archiver's environment once, validates it, and
// hands typed values to the worker and the starter. Errors name the variable;
// secrets never appear in them.
package config

import (
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/mockupaws/archiver/internal/objectstore"
)

// Config is everything the worker and the starter read from the environment
// (DESIGN.md §5).
type Config struct {
	DatabaseURL       string
	TemporalAddress   string
	TemporalNamespace string
	TaskQueue         string
	TemporalUIURL     string
	ReportsDir        string
	// ExportDir (ARCHIVE_EXPORT_DIR) holds export files before their upload.
	ExportDir     string
	ReportsBucket string
	// ReportsCompression is gzip (default) or zstd; ReportsSSE is AES256
	// (default), aws:kms (with ReportsKMSKeyID) or none.
	ReportsCompression string
	ReportsSSE         string
	ReportsKMSKeyID    string
	// RetentionMode is drop (default) or detach.
	RetentionMode  string
	AWSEndpointURL string
	AWSRegion      string
	MetricsAddr    string
	OTLPEndpoint   string
	// Temporal cluster or Cloud: mTLS with a client certificate, or an API
	// key (which implies TLS). Paths, not contents; the key never logged.
	TemporalTLSCert       string
	TemporalTLSKey        string
	TemporalTLSCA         string
	TemporalTLSServerName string
	TemporalAPIKey        string
	// TemporalPayloadKey, when set, encrypts every payload (base64, 32 bytes).
	TemporalPayloadKey string
	// MaxReplicaLag holds batches while a replica lags more (0: off).
	MaxReplicaLag time.Duration
}

// Getenv lets tests supply an environment without touching the process's.
type Getenv func(string) string

// Load reads the process environment.
func Load() (Config, error) { return LoadFrom(os.Getenv) }

// LoadFrom reads the environment through getenv. DATABASE_URL is required;
// everything else has the defaults of DESIGN.md §5.
func LoadFrom(getenv Getenv) (Config, error) {
	get := func(name, def string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		return def
	}
	c := Config{
		DatabaseURL:           get("DATABASE_URL", ""),
		TemporalAddress:       get("TEMPORAL_ADDRESS", "localhost:7233"),
		TemporalNamespace:     get("TEMPORAL_NAMESPACE", "default"),
		TaskQueue:             get("ARCHIVE_TASK_QUEUE", "archive"),
		TemporalUIURL:         get("TEMPORAL_UI_URL", "http://localhost:8233"),
		ReportsDir:            get("REPORTS_DIR", ""),
		ExportDir:             get("ARCHIVE_EXPORT_DIR", ""),
		ReportsBucket:         get("REPORTS_ARCHIVE_BUCKET", ""),
		ReportsCompression:    get("REPORTS_COMPRESSION", "gzip"),
		ReportsSSE:            get("REPORTS_SSE", "AES256"),
		ReportsKMSKeyID:       get("REPORTS_KMS_KEY_ID", ""),
		RetentionMode:         get("ARCHIVE_RETENTION_MODE", "drop"),
		TemporalTLSCert:       get("TEMPORAL_TLS_CERT", ""),
		TemporalTLSKey:        get("TEMPORAL_TLS_KEY", ""),
		TemporalTLSCA:         get("TEMPORAL_TLS_CA", ""),
		TemporalTLSServerName: get("TEMPORAL_TLS_SERVER_NAME", ""),
		TemporalAPIKey:        get("TEMPORAL_API_KEY", ""),
		TemporalPayloadKey:    get("TEMPORAL_PAYLOAD_KEY", ""),
		AWSEndpointURL:        get("AWS_ENDPOINT_URL", ""),
		AWSRegion:             get("AWS_DEFAULT_REGION", "us-east-1"),
		MetricsAddr:           get("METRICS_ADDR", ""),
		OTLPEndpoint:          get("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
	}
	if c.DatabaseURL == "" {
		return c, fmt.Errorf("DATABASE_URL is not set: it must name the PostgreSQL database to archive (e.g. postgres://user@localhost:5432/app)")
	}
	if err := checkDatabaseURL(c.DatabaseURL); err != nil {
		return c, err
	}
	if strings.Contains(c.TemporalAddress, "://") || !strings.Contains(c.TemporalAddress, ":") {
		return c, fmt.Errorf("TEMPORAL_ADDRESS %q is not host:port", c.TemporalAddress)
	}
	if c.ReportsCompression != "gzip" && c.ReportsCompression != "zstd" {
		return c, fmt.Errorf("REPORTS_COMPRESSION=%q: want gzip or zstd", c.ReportsCompression)
	}
	if c.RetentionMode != "drop" && c.RetentionMode != "detach" {
		return c, fmt.Errorf("ARCHIVE_RETENTION_MODE=%q: want drop or detach", c.RetentionMode)
	}
	if (c.TemporalTLSCert == "") != (c.TemporalTLSKey == "") {
		return c, fmt.Errorf("TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY go together: set both or neither")
	}
	lag := get("ARCHIVE_MAX_REPLICA_LAG", "30s")
	d, err := time.ParseDuration(lag)
	if err != nil || d < 0 {
		return c, fmt.Errorf("ARCHIVE_MAX_REPLICA_LAG=%q: want a duration such as 30s (0 turns the check off)", lag)
	}
	c.MaxReplicaLag = d
	if c.TaskQueue == "" {
		return c, fmt.Errorf("ARCHIVE_TASK_QUEUE is empty")
	}
	return c, nil
}

// checkDatabaseURL accepts postgres:// URLs and libpq key=value strings. The
// error never repeats the value, which may hold a password.
func checkDatabaseURL(s string) error {
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		if _, err := url.Parse(s); err != nil {
			return fmt.Errorf("DATABASE_URL is not a valid URL (value not shown: it may hold a password)")
		}
		return nil
	}
	if strings.Contains(s, "=") {
		return nil
	}
	return fmt.Errorf("DATABASE_URL must start with postgres:// or be a libpq key=value string (value not shown: it may hold a password)")
}

// StoreOptions are the reports bucket's settings.
func (c Config) StoreOptions() objectstore.Options {
	return objectstore.Options{
		Bucket: c.ReportsBucket, Endpoint: c.AWSEndpointURL, Region: c.AWSRegion,
		SSE: c.ReportsSSE, KMSKeyID: c.ReportsKMSKeyID,
	}
}

// Redact returns a database URL with its password replaced, for printing.
func Redact(databaseURL string) string {
	u, err := url.Parse(databaseURL)
	if err != nil || u.User == nil {
		if strings.Contains(databaseURL, "password") {
			return "(connection string with password, not shown)"
		}
		return databaseURL
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}
