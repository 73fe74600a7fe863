// Command worker runs the archiver's workflows and activities on the task
// queue ARCHIVE_TASK_QUEUE, serves Prometheus metrics, /healthz and /readyz
// on METRICS_ADDR and exports traces over OTLP when
// OTEL_EXPORTER_OTLP_ENDPOINT is set, until SIGINT or SIGTERM; then it
// drains: it takes no new task, /readyz answers 503, and the activities in
// flight get ARCHIVE_WORKER_STOP_TIMEOUT to finish (a batch commits) before
// they are cancelled. A second signal exits at once.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/config"
	"github.com/mockupaws/archiver/internal/database"
	"github.com/mockupaws/archiver/internal/health"
	"github.com/mockupaws/archiver/internal/objectstore"
	"github.com/mockupaws/archiver/internal/policy"
	"github.com/mockupaws/archiver/internal/telemetry"
	"github.com/mockupaws/archiver/internal/temporalclient"
)

func main() {
	logger := telemetry.Logger(os.Stderr, slog.LevelInfo)
	if err := run(logger); err != nil {
		logger.Error("worker stopped", "error", err.Error())
		os.Exit(1)
	}
}

func run(logger *slog.Logger) error {
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	ctx := context.Background()
	tel, err := telemetry.Setup(ctx, "archiver-worker", cfg.OTLPEndpoint)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(sctx)
	}()

	pool, healthDB, err := openPools(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	defer healthDB.Close()
	if err := pool.Ping(ctx); err != nil {
		return fmt.Errorf("connect to PostgreSQL (DATABASE_URL %s): %w", config.Redact(cfg.DatabaseURL), err)
	}
	if err := database.Check(ctx, pool); err != nil {
		return err
	}
	// The policy in force names the tables whose series start at 0 (the
	// runs themselves carry their entries).
	pol, err := policy.Override(os.Getenv)
	if err != nil {
		return err
	}
	tel.Metrics.Init(ctx, policy.BuiltNamesOf(pol))
	if err := seedLastSuccess(ctx, pool, tel.Metrics); err != nil {
		logger.Warn("could not read the last successful jobs; archive_job_last_success_timestamp starts empty", "error", err.Error())
	}
	c, err := temporalclient.Dial(ctx, cfg, logger, temporalclient.WithTelemetry(tel))
	if err != nil {
		return err
	}
	defer c.Close()
	if err := temporalclient.EnsureSearchAttributes(ctx, c, cfg.TemporalNamespace); err != nil {
		return err
	}
	acts := &activities.Activities{DB: pool, ReportsDir: cfg.ReportsDir, ExportDir: cfg.ExportDir, Compression: cfg.ReportsCompression, StoreOptions: cfg.StoreOptions(),
		MaxReplicaLag: cfg.MaxReplicaLag, MaxSlotRetained: cfg.MaxSlotRetainedBytes, VacuumShare: cfg.VacuumShare, Metrics: tel.Metrics, Tracer: tel.TracerProvider.Tracer("github.com/mockupaws/archiver")}
	if cfg.ReportsBucket != "" {
		if acts.Store, err = objectstore.New(ctx, cfg.StoreOptions()); err != nil {
			return err
		}
	} else {
		logger.Warn("REPORTS_ARCHIVE_BUCKET is not set: reports runs will fail until it is")
	}
	// Files a killed worker left half written (a day old: no activity runs
	// that long).
	if n, err := activities.CleanExportDir(cfg.ExportDir, 24*time.Hour); err != nil {
		logger.Warn("clean ARCHIVE_EXPORT_DIR", "error", err)
	} else if n > 0 {
		logger.Info("removed files a killed worker left", "files", n, "dir", cfg.ExportDir)
	}

	inFlight := health.NewInFlight()
	hc := health.New(health.DefaultTimeout, inFlight,
		health.Check{Name: "database", Run: healthDB.Ping},
		health.Check{Name: "temporal", Run: func(ctx context.Context) error {
			_, err := c.CheckHealth(ctx, &client.CheckHealthRequest{})
			return err
		}})
	if cfg.MetricsAddr != "" {
		ln, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("METRICS_ADDR %s: %w", cfg.MetricsAddr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", tel.Handler)
		hc.Register(mux)
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error("metrics server stopped", "error", err.Error())
			}
		}()
		defer srv.Close()
		logger.Info("serving metrics and health", "addr", ln.Addr().String(), "paths", "/metrics /healthz /readyz")
	}

	build, err := workerBuildID(cfg)
	if err != nil {
		return err
	}
	installFailpoints(acts)
	w := newWorker(c, cfg, build, acts, inFlight)
	// Until here a signal ends the process at once (nothing runs yet); from
	// here it drains.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := w.Start(); err != nil {
		return err
	}
	hc.Running()
	logger.Info("worker started", "temporal", cfg.TemporalAddress, "namespace", cfg.TemporalNamespace, "task_queue", cfg.TaskQueue,
		"activity_slots", cfg.ActivitySlots, "db_max_conns", cfg.DBMaxConns, "stop_timeout", cfg.WorkerStopTimeout.String(),
		"deployment", deploymentOrOff(cfg.WorkerDeployment), "build_id", build)
	return serve(logger, c, w, hc, inFlight, cfg.WorkerStopTimeout, sigs)
}

// openPools opens the activities' pool (ARCHIVE_DB_MAX_CONNS connections,
// as many as the activity slots plus config.ReservedConns) and /readyz's
// own one-connection pool, so that a busy pool never fails readiness and a
// readiness probe never takes a connection a batch counts on.
func openPools(ctx context.Context, cfg config.Config) (pool, healthDB *pgxpool.Pool, err error) {
	pcfg, err := poolConfig(cfg, "archiver-worker", cfg.DBMaxConns)
	if err != nil {
		return nil, nil, err
	}
	if pool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
		return nil, nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	hcfg, err := poolConfig(cfg, "archiver-worker-health", 1)
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	if healthDB, err = pgxpool.NewWithConfig(ctx, hcfg); err != nil {
		pool.Close()
		return nil, nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	return pool, healthDB, nil
}

// poolConfig is DATABASE_URL's pool with the session settings pinned and
// maxConns connections.
func poolConfig(cfg config.Config, application string, maxConns int) (*pgxpool.Config, error) {
	pcfg, err := database.PoolConfig(cfg.DatabaseURL, application)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	pcfg.MaxConns = int32(maxConns)
	pcfg.MinConns = 0
	return pcfg, nil
}

// newWorker is the worker with the limits of cfg: activity slots sized to
// the pool, the drain's stop timeout, the in-flight count; and, when
// ARCHIVE_WORKER_DEPLOYMENT names one, a version (build) of that Worker
// Deployment.
func newWorker(c client.Client, cfg config.Config, build string, acts *activities.Activities, inFlight *health.InFlight) worker.Worker {
	opts := []temporalclient.WorkerOption{
		temporalclient.WithActivitySlots(cfg.ActivitySlots),
		temporalclient.WithStopTimeout(cfg.WorkerStopTimeout),
		temporalclient.WithInterceptors(inFlight),
	}
	if cfg.WorkerDeployment != "" {
		opts = append(opts, temporalclient.WithDeployment(cfg.WorkerDeployment, build))
	}
	return temporalclient.NewWorker(c, cfg.TaskQueue, acts, opts...)
}

func deploymentOrOff(name string) string {
	if name == "" {
		return "off (unversioned)"
	}
	return name
}

// drainGrace is how long, after a drain timed out and the SDK cancelled
// the activities still running, the worker waits for them to return.
const drainGrace = 5 * time.Second

// serve runs the started worker until a signal (then drains) or a fatal
// error of the worker's own.
func serve(logger *slog.Logger, c client.Client, w worker.Worker, hc *health.Checker, inFlight *health.InFlight, stopTimeout time.Duration, sigs <-chan os.Signal) error {
	stop := make(chan any, 1)
	go func() {
		s := <-sigs
		name := signalName(s)
		hc.Drain(name)
		inFlight.Drain()
		logger.Info("draining: no new tasks; waiting for the activities in flight", "signal", name,
			"in_flight", inFlight.String(), "stop_timeout", stopTimeout.String())
		stop <- s
		s = <-sigs
		logger.Warn("second signal: exiting without waiting for the activities in flight", "signal", signalName(s), "in_flight", inFlight.String())
		os.Exit(1)
	}()
	err := w.Run(stop) // returns once stopped: drained, or the stop timeout passed
	state, since := hc.State()
	if state != health.Draining {
		hc.Drain("worker stopped")
		return err // the worker's own fatal error
	}
	took := time.Since(since).Round(time.Millisecond)
	if inFlight.Count() > 0 {
		// The stop timeout passed: the SDK cancelled the activities still
		// running; let them return.
		ctx, cancel := context.WithTimeout(context.Background(), drainGrace)
		ok := inFlight.Wait(ctx)
		cancel()
		if !ok {
			logger.Warn("activities still running after their cancellation", "in_flight", inFlight.String())
		}
	}
	cancelled := append(inFlight.Cut(), inFlight.Attempts()...)
	if len(cancelled) == 0 {
		logger.Info("drained: every activity in flight finished", "took", took.String())
		return err
	}
	logger.Warn("stop timeout reached: activities in flight were cancelled; failing their attempts so that they are retried at once",
		"stop_timeout", stopTimeout.String(), "cancelled", len(cancelled))
	failCancelled(logger, c, cancelled, stopTimeout)
	return err
}

// failCancelled reports each attempt the shutdown cut short as failed to
// the server itself: the SDK's own report races the client's closing and
// is often lost, and a lost attempt is retried only when its timeout fires
// (a batch's start-to-close timeout is 10 minutes). A report the SDK made
// first wins; ours then finds the attempt closed, which is fine.
func failCancelled(logger *slog.Logger, c client.Client, cancelled []health.Attempt, stopTimeout time.Duration) {
	cause := temporal.NewApplicationError(fmt.Sprintf("the worker shut down (stop timeout %s) before this attempt finished", stopTimeout), "WorkerShutdown")
	for _, r := range cancelled {
		if len(r.TaskToken) == 0 {
			// A local activity (a batch): it has no task of its own; the
			// worker that takes the workflow over runs it again, and the
			// ledger answers with what it committed.
			logger.Info("a cancelled local activity is run again by the next worker", "activity", r.Type)
			continue
		}
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := c.CompleteActivity(rctx, r.TaskToken, nil, cause)
		rcancel()
		var notFound *serviceerror.NotFound
		switch {
		case err == nil:
			logger.Info("failed a cancelled attempt: it is retried at once", "activity", r.Type)
		case errors.As(err, &notFound):
			logger.Info("a cancelled attempt was already reported failed: it is retried at once", "activity", r.Type)
		default:
			logger.Warn("could not fail a cancelled attempt: it is retried after its timeout", "activity", r.Type, "error", err.Error())
		}
	}
}

func signalName(s os.Signal) string {
	switch s {
	case syscall.SIGTERM:
		return "SIGTERM"
	case os.Interrupt:
		return "SIGINT"
	}
	return s.String()
}

// seedLastSuccess starts archive_job_last_success_timestamp from the job
// table, so that a restarted worker does not look like a missed night.
func seedLastSuccess(ctx context.Context, db *pgxpool.Pool, m *telemetry.Metrics) error {
	rows, err := db.Query(ctx, `
		SELECT job_type, max(completed_at) FROM archive_jobs
		WHERE status = 'completed' AND NOT dry_run AND completed_at IS NOT NULL AND job_type NOT LIKE 'restore:%' GROUP BY 1`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var table string
		var at time.Time
		if err := rows.Scan(&table, &at); err != nil {
			return err
		}
		m.SetLastSuccess(table, at)
	}
	return rows.Err()
}
