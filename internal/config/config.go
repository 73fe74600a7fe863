// Package config reads the archiver's environment once, validates it, and
// hands typed values to the worker and the starter. Errors name the variable;
// secrets never appear in them.
package config

import (
	"fmt"
	"net/url"
	"os"
	"strings"
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
	ReportsBucket     string
	AWSEndpointURL    string
	AWSRegion         string
	MetricsAddr       string
	OTLPEndpoint      string
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
		DatabaseURL:       get("DATABASE_URL", ""),
		TemporalAddress:   get("TEMPORAL_ADDRESS", "localhost:7233"),
		TemporalNamespace: get("TEMPORAL_NAMESPACE", "default"),
		TaskQueue:         get("ARCHIVE_TASK_QUEUE", "archive"),
		TemporalUIURL:     get("TEMPORAL_UI_URL", "http://localhost:8233"),
		ReportsDir:        get("REPORTS_DIR", ""),
		ReportsBucket:     get("REPORTS_ARCHIVE_BUCKET", ""),
		AWSEndpointURL:    get("AWS_ENDPOINT_URL", ""),
		AWSRegion:         get("AWS_DEFAULT_REGION", "us-east-1"),
		MetricsAddr:       get("METRICS_ADDR", ""),
		OTLPEndpoint:      get("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
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
