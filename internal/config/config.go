// Package config reads the archiver's environment once, validates it, and
// hands typed values to the worker and the starter. Errors name the variable;
// secrets never appear in them.
package config

import (
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/mockupaws/archiver/internal/objectstore"
)

// Config is everything the worker and the starter read from the environment
// (docs/deploying.md, "Environment").
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
	// MaxSlotRetainedBytes (ARCHIVE_MAX_SLOT_RETAINED_BYTES) holds batches
	// while a logical replication slot retains more WAL (0: off).
	MaxSlotRetainedBytes int64
	// VacuumShare (ARCHIVE_VACUUM_SHARE): VACUUM (ANALYZE) a live table
	// after a job deleted more than this share of its rows (0: never).
	VacuumShare float64
	// WorkerStopTimeout (ARCHIVE_WORKER_STOP_TIMEOUT) is how long the
	// worker, on SIGTERM, waits for the activities it runs to finish
	// before it cancels them (0: at once, the SDK's default).
	WorkerStopTimeout time.Duration
	// DBMaxConns (ARCHIVE_DB_MAX_CONNS, else pool_max_conns in
	// DATABASE_URL) is the size of the worker's connection pool;
	// ActivitySlots (ARCHIVE_ACTIVITY_SLOTS) how many activities it runs
	// at once. ActivitySlots <= DBMaxConns - ReservedConns.
	DBMaxConns    int
	ActivitySlots int
	// WorkerDeployment (ARCHIVE_WORKER_DEPLOYMENT), when set, opts the
	// worker in to Worker Versioning as a version of that Worker
	// Deployment; WorkerBuildID (ARCHIVE_WORKER_BUILD_ID) overrides the
	// build id the binary carries (see deployment.go).
	WorkerDeployment string
	WorkerBuildID    string
}

// Defaults of the worker's limits.
const (
	// DefaultWorkerStopTimeout covers, with a wide margin, the steps that
	// are one transaction or one upload and would start again from
	// nothing if cut: a batch (sized to a 200 ms lock budget, seconds when
	// it waits on an application's lock), a report's finalize, a 50 MB
	// report upload at 1 MB/s. Longer steps (exports, verification)
	// heartbeat and resume; a drain longer than this only delays a
	// rollout. Kubernetes' terminationGracePeriodSeconds must exceed it.
	DefaultWorkerStopTimeout = 2 * time.Minute
	// DefaultVacuumShare: a job that deleted more than a fifth of a live
	// table's rows is followed by VACUUM (ANALYZE) of it, as autovacuum
	// would (its scale factor is 0.2) but at once, while nothing else runs
	// at night, instead of in the day's traffic.
	DefaultVacuumShare = 0.2
	// DefaultDBMaxConns is the worker's pool when neither
	// ARCHIVE_DB_MAX_CONNS, pool_max_conns nor ARCHIVE_ACTIVITY_SLOTS says.
	DefaultDBMaxConns = 10
	// ReservedConns are the pool's connections that no activity slot
	// counts on: an activity holds at most two connections at once (a
	// partition exchange records each step's lock time beside its DDL
	// connection; retention exports a partition while it holds the
	// detach's), so with one spare, one of them can always take its
	// second and none waits on another forever.
	ReservedConns = 1
	// MaxDBConns bounds ARCHIVE_DB_MAX_CONNS (a typo of 10000 would
	// exhaust any server's max_connections).
	MaxDBConns = 1000
)

// Getenv lets tests supply an environment without touching the process's.
type Getenv func(string) string

// Load reads the process environment.
func Load() (Config, error) { return LoadFrom(os.Getenv) }

// LoadFrom reads the environment through getenv. DATABASE_URL is required;
// everything else has the defaults of docs/deploying.md, "Environment".
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
	slot := get("ARCHIVE_MAX_SLOT_RETAINED_BYTES", "0")
	if c.MaxSlotRetainedBytes, err = ParseBytes(slot); err != nil {
		return c, fmt.Errorf("ARCHIVE_MAX_SLOT_RETAINED_BYTES=%q: want a size such as 1GB or 512MB (bytes without a unit; 0 turns the check off)", slot)
	}
	share := get("ARCHIVE_VACUUM_SHARE", strconv.FormatFloat(DefaultVacuumShare, 'g', -1, 64))
	if c.VacuumShare, err = strconv.ParseFloat(share, 64); err != nil || c.VacuumShare < 0 || c.VacuumShare > 1 || c.VacuumShare != c.VacuumShare {
		return c, fmt.Errorf("ARCHIVE_VACUUM_SHARE=%q: want a share of the table's rows between 0 and 1 such as 0.2 (0 turns VACUUM off)", share)
	}
	stop := get("ARCHIVE_WORKER_STOP_TIMEOUT", DefaultWorkerStopTimeout.String())
	if c.WorkerStopTimeout, err = time.ParseDuration(stop); err != nil || c.WorkerStopTimeout < 0 {
		return c, fmt.Errorf("ARCHIVE_WORKER_STOP_TIMEOUT=%q: want a duration such as 2m (how long SIGTERM waits for running activities; 0 cancels them at once)", stop)
	}
	if err := c.poolLimits(get); err != nil {
		return c, err
	}
	if err := c.workerDeployment(get); err != nil {
		return c, err
	}
	if c.TaskQueue == "" {
		return c, fmt.Errorf("ARCHIVE_TASK_QUEUE is empty")
	}
	return c, nil
}

// poolLimits sizes the worker's pool and its activity slots together: one
// of them given, the other follows; neither, the defaults; both, they must
// fit (slots <= pool - ReservedConns).
func (c *Config) poolLimits(get func(name, def string) string) error {
	conns, err := positive(get("ARCHIVE_DB_MAX_CONNS", ""), "ARCHIVE_DB_MAX_CONNS", "connections in the worker's pool")
	if err != nil {
		return err
	}
	urlConns, err := urlPoolMaxConns(c.DatabaseURL)
	if err != nil {
		return err
	}
	switch {
	case conns > 0 && urlConns > 0 && conns != urlConns:
		return fmt.Errorf("ARCHIVE_DB_MAX_CONNS=%d and pool_max_conns=%d in DATABASE_URL disagree: set one", conns, urlConns)
	case conns == 0:
		conns = urlConns
	}
	slots, err := positive(get("ARCHIVE_ACTIVITY_SLOTS", ""), "ARCHIVE_ACTIVITY_SLOTS", "activities the worker runs at once")
	if err != nil {
		return err
	}
	switch {
	case conns == 0 && slots == 0:
		conns = DefaultDBMaxConns
		slots = conns - ReservedConns
	case conns == 0:
		conns = slots + ReservedConns
	case slots == 0:
		slots = conns - ReservedConns
	}
	if conns > MaxDBConns {
		return fmt.Errorf("ARCHIVE_DB_MAX_CONNS=%d (or ARCHIVE_ACTIVITY_SLOTS + %d): at most %d connections", conns, ReservedConns, MaxDBConns)
	}
	if slots < 1 {
		return fmt.Errorf("ARCHIVE_DB_MAX_CONNS=%d: the worker's pool needs at least %d connections (one activity slot and %d spare)", conns, 1+ReservedConns, ReservedConns)
	}
	if slots > conns-ReservedConns {
		return fmt.Errorf("ARCHIVE_ACTIVITY_SLOTS=%d does not fit ARCHIVE_DB_MAX_CONNS=%d: every activity slot needs a connection of the pool and %d more stays spare (an activity may hold two at once), so ARCHIVE_ACTIVITY_SLOTS must be at most %d; raise ARCHIVE_DB_MAX_CONNS to %d or lower ARCHIVE_ACTIVITY_SLOTS",
			slots, conns, ReservedConns, conns-ReservedConns, slots+ReservedConns)
	}
	c.DBMaxConns, c.ActivitySlots = conns, slots
	return nil
}

// ParseBytes reads a size: a whole number of bytes, or one with a unit
// kB, MB, GB or TB as PostgreSQL spells them (powers of 1024; KiB, MiB,
// GiB, TiB and B are accepted too). Negative sizes are refused.
func ParseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := len(s)
	for i > 0 && (s[i-1] < '0' || s[i-1] > '9') {
		i--
	}
	num, unit := strings.TrimSpace(s[:i]), strings.TrimSpace(s[i:])
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q: want a whole number with an optional unit (kB, MB, GB, TB)", s)
	}
	var mult int64
	switch strings.ToLower(unit) {
	case "", "b":
		mult = 1
	case "kb", "kib", "k":
		mult = 1 << 10
	case "mb", "mib", "m":
		mult = 1 << 20
	case "gb", "gib", "g":
		mult = 1 << 30
	case "tb", "tib", "t":
		mult = 1 << 40
	default:
		return 0, fmt.Errorf("size %q: unknown unit %q (want kB, MB, GB or TB)", s, unit)
	}
	if n > (1<<63-1)/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return n * mult, nil
}

// positive parses an optional count of at least 1 (0 when unset).
func positive(v, name, what string) (int, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%s=%q: want a whole number of %s, at least 1", name, v, what)
	}
	return n, nil
}

var keywordPoolMaxConns = regexp.MustCompile(`(?:^|\s)pool_max_conns\s*=\s*'?([^'\s]*)`)

// urlPoolMaxConns reads pgxpool's pool_max_conns from DATABASE_URL (URL or
// key=value form; 0 when absent). The error names the parameter, never the
// URL.
func urlPoolMaxConns(s string) (int, error) {
	var v string
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		u, err := url.Parse(s)
		if err != nil {
			return 0, nil // checkDatabaseURL reports it
		}
		v = u.Query().Get("pool_max_conns")
	} else if m := keywordPoolMaxConns.FindStringSubmatch(s); m != nil {
		v = m[1]
	}
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("pool_max_conns in DATABASE_URL is not a whole number of at least 1 (value not shown); better, set ARCHIVE_DB_MAX_CONNS")
	}
	return n, nil
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
