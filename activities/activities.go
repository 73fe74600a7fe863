package activities

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/mockupaws/archiver/internal/objectstore"
	"github.com/mockupaws/archiver/internal/policy"
	"github.com/mockupaws/archiver/internal/telemetry"
)

// Activities holds what the activities share. The worker registers one.
type Activities struct {
	DB *pgxpool.Pool
	// Store is the reports bucket (nil: reports archiving not configured),
	// and the default bucket of declared offload entries; StoreOptions
	// open the other buckets entries name (Store's own when empty).
	Store        *objectstore.Store
	StoreOptions objectstore.Options
	storesMu     sync.Mutex
	stores       map[string]*objectstore.Store
	// ReportsDir is the root that reports.file_path is resolved under;
	// nothing outside it is ever read or removed.
	ReportsDir string
	// Compression is "gzip" (default) or "zstd".
	Compression string
	// MaxReplicaLag holds batches back while a replica's replay lag is
	// above it (0: no check); ReplicaPoll is how often it looks (1 s).
	MaxReplicaLag time.Duration
	ReplicaPoll   time.Duration
	// MaxSlotRetained holds batches back while a logical replication slot
	// retains more WAL than this many bytes (0: no check); it is looked at
	// every ReplicaPoll too.
	MaxSlotRetained int64
	// LoadPoll is how often the load controller reads the server's signals
	// while batches run with --max-load or --critical-load (100 ms).
	LoadPoll time.Duration
	loadMu   sync.Mutex
	load     *loadMonitor
	// VacuumShare: after a job deleted more than this share of a live
	// table's rows, VacuumTable runs VACUUM (ANALYZE) on it (0: never).
	VacuumShare float64
	// Metrics and Tracer observe batches (nil: not observed).
	Metrics *telemetry.Metrics
	Tracer  trace.Tracer
	// AfterCommit, when set, runs after a batch's transaction commits and
	// its error fails the attempt. Fault tests use it to lose the answer of
	// a committed batch, as a crash or a network cut would.
	AfterCommit func(ctx context.Context, res MoveBatchResult) error
	// AfterExchangeStep, when set, runs after each DDL step of a partition
	// exchange (its name): fault tests stop the worker there.
	AfterExchangeStep func(step string)
	// AfterExportStep, when set, runs after each step of a partition's
	// export (manifest, uploaded, verified, dropped), with the object's
	// key: fault tests stop the worker there, or change that object.
	AfterExportStep func(step, key string)
	// ExportDir is where export files are written before their upload and
	// read back for verification (the system's temporary directory when
	// empty); it needs room for the largest partition's compressed file.
	ExportDir string
}

// ErrInvalidInput is the error type of activity failures that retrying
// cannot fix (unknown table, bad batch size). The workflow's retry policy
// lists it as non-retryable, so such a run fails fast.
const ErrInvalidInput = "InvalidInput"

// ErrRunAsActivity: a batch started as a local activity that should not
// run locally: the worker is draining (health.InFlight), or the batch must
// wait for replicas or a logical slot, which only an activity can report
// by heartbeats. The workflow runs that batch as an activity instead, from
// the task queue. A refused batch has not begun.
const ErrRunAsActivity = "RunAsActivity"

// RunAsActivity is a local batch's refusal to run locally, saying why.
func RunAsActivity(why string) error {
	return temporal.NewNonRetryableApplicationError(why, ErrRunAsActivity, nil)
}

// ErrReportUnavailable: a report's file is missing, unreadable, or outside
// REPORTS_DIR. That report fails; nothing of it is deleted.
const ErrReportUnavailable = "ReportUnavailable"

// ErrStorageConfig: the bucket is missing, the credentials are wrong, or
// reports archiving is not configured. Retrying cannot fix it.
const ErrStorageConfig = "StorageMisconfigured"

// NonRetryable lists the error types above, for the workflow's retry policy.
var NonRetryable = []string{ErrInvalidInput, ErrReportUnavailable, ErrStorageConfig, ErrCannotRestore}

func invalid(format string, err error) error {
	return temporal.NewNonRetryableApplicationError(format+": "+err.Error(), ErrInvalidInput, nil)
}

// entryFor returns the policy entry an activity works on: the one the
// workflow passed (the policy in force where the run started), else the
// built-in table of that name. A passed entry's identifiers are checked
// again here: they go into SQL.
func entryFor(name string, e *policy.Table) (policy.Table, error) {
	if e == nil {
		t, err := policy.Lookup(name)
		if err != nil {
			return t, invalid("archive activity", err)
		}
		return t, nil
	}
	t := policy.Normalize(*e)
	if name != "" && t.Name != name {
		return t, invalid("archive activity", fmt.Errorf("the entry passed is %q, not %q", t.Name, name))
	}
	if err := t.CheckNames(); err != nil {
		return t, invalid("archive activity", err)
	}
	return t, nil
}

// utc keeps timestamps in payloads comparable across time zones.
func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

var errCountMismatch = errors.New("archive and live row counts disagree; transaction rolled back")

func (a *Activities) tracer() trace.Tracer {
	if a.Tracer == nil {
		return noop.NewTracerProvider().Tracer("")
	}
	return a.Tracer
}

// beatKey carries, in an activity's context, how it heartbeats: an
// activity whose heartbeat details record its progress for a retry
// (retention) wraps what steps deeper down report.
type beatKey struct{}

// withBeat makes heartbeat(ctx, note) record beat(note) instead of note.
func withBeat(ctx context.Context, beat func(note any) any) context.Context {
	return context.WithValue(ctx, beatKey{}, beat)
}

// heartbeat records progress if ctx is an activity's.
func heartbeat(ctx context.Context, note any) {
	if !activity.IsActivity(ctx) {
		return
	}
	if beat, ok := ctx.Value(beatKey{}).(func(any) any); ok {
		note = beat(note)
	}
	activity.RecordHeartbeat(ctx, note)
}

// keepAliveEvery is how often keepAlive heartbeats: well inside the
// shortest heartbeat timeout the workflows set (a minute).
const keepAliveEvery = 10 * time.Second

// keepAlive heartbeats note until stop is called, for one long statement
// (a checksum scan, a COPY, an INSERT of a whole partition) that cannot
// report progress itself: without it a slow step looks like a lost worker
// and is started again beside the running one.
func keepAlive(ctx context.Context, note string) (stop func()) {
	if !activity.IsActivity(ctx) {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(keepAliveEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				heartbeat(ctx, note)
			}
		}
	}()
	return func() { close(done) }
}
