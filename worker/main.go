// Command worker runs the archiver's workflows and activities on the task
// queue ARCHIVE_TASK_QUEUE, serves Prometheus metrics on METRICS_ADDR and
// exports traces over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set, until
// SIGINT or SIGTERM, then drains and exits.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/worker"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/config"
	"github.com/mockupaws/archiver/internal/database"
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

	pool, err := database.Open(ctx, cfg.DatabaseURL, "archiver-worker")
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	defer pool.Close()
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
		MaxReplicaLag: cfg.MaxReplicaLag, Metrics: tel.Metrics, Tracer: tel.TracerProvider.Tracer("github.com/mockupaws/archiver")}
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

	if cfg.MetricsAddr != "" {
		ln, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("METRICS_ADDR %s: %w", cfg.MetricsAddr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", tel.Handler)
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error("metrics server stopped", "error", err.Error())
			}
		}()
		defer srv.Close()
		logger.Info("serving metrics", "addr", ln.Addr().String(), "path", "/metrics")
	}

	installFailpoints(acts)
	w := temporalclient.NewWorker(c, cfg.TaskQueue, acts)
	logger.Info("worker started", "temporal", cfg.TemporalAddress, "namespace", cfg.TemporalNamespace, "task_queue", cfg.TaskQueue)
	return w.Run(worker.InterruptCh())
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
