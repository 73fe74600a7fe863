// Command worker runs the archiver's workflows and activities on the task
// queue ARCHIVE_TASK_QUEUE until SIGINT or SIGTERM, then drains and exits.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/worker"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/config"
	"github.com/mockupaws/archiver/internal/objectstore"
	"github.com/mockupaws/archiver/internal/temporalclient"
)

func main() {
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
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
	pool, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	defer pool.Close()
	if err := pool.Ping(ctx); err != nil {
		return fmt.Errorf("connect to PostgreSQL (DATABASE_URL %s): %w", config.Redact(cfg.DatabaseURL), err)
	}
	c, err := temporalclient.Dial(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := temporalclient.EnsureSearchAttributes(ctx, c, cfg.TemporalNamespace); err != nil {
		return err
	}
	acts := &activities.Activities{DB: pool, ReportsDir: cfg.ReportsDir, Compression: cfg.ReportsCompression, MaxReplicaLag: cfg.MaxReplicaLag}
	if cfg.ReportsBucket != "" {
		if acts.Store, err = objectstore.New(ctx, cfg.StoreOptions()); err != nil {
			return err
		}
	} else {
		logger.Warn("REPORTS_ARCHIVE_BUCKET is not set: reports runs will fail until it is")
	}
	w := temporalclient.NewWorker(c, cfg.TaskQueue, acts)
	logger.Info("worker started", "temporal", cfg.TemporalAddress, "namespace", cfg.TemporalNamespace, "task_queue", cfg.TaskQueue)
	return w.Run(worker.InterruptCh())
}
