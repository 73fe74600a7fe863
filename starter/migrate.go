package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/mockupaws/archiver/internal/config"
	"github.com/mockupaws/archiver/internal/database"
	"github.com/mockupaws/archiver/internal/demo"
	"github.com/mockupaws/archiver/migrations"
)

func cmdMigrate(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return usageErr("%v", err)
	}
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	conn, err := database.Connect(ctx, cfg.DatabaseURL, "archiver-starter")
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL (%s): %w", config.Redact(cfg.DatabaseURL), err)
	}
	defer conn.Close(ctx)
	res, err := migrations.Apply(ctx, conn)
	for _, idx := range res.Indexes {
		fmt.Fprintf(stdout, "built index %s on a live table (concurrently)\n", idx)
	}
	if err != nil {
		return err
	}
	from, to := res.From, res.To
	if from == to {
		fmt.Fprintf(stdout, "schema is up to date (version %d)\n", to)
	} else {
		fmt.Fprintf(stdout, "schema migrated from version %d to %d\n", from, to)
	}
	return nil
}

func cmdDemo(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	logs := fs.Int("logs", 300000, "log rows to make")
	perDay := fs.Int("metrics-per-day", 300, "metric samples per day")
	reports := fs.Int("reports", 30, "report files to make")
	reportKB := fs.Int("report-kb", 4096, "size of each report file in KiB")
	years := fs.Int("years", 3, "how many years back the data reaches")
	if err := fs.Parse(args); err != nil {
		return usageErr("%v", err)
	}
	for _, c := range []struct {
		name  string
		v, hi int
	}{{"--logs", *logs, 100_000_000}, {"--metrics-per-day", *perDay, 1_000_000}, {"--reports", *reports, 100_000}, {"--report-kb", *reportKB, 4 << 20}, {"--years", *years, 20}} {
		if c.v < 0 || c.v > c.hi {
			return usageErr("%s %d: must be between 0 and %d", c.name, c.v, c.hi)
		}
	}
	if *years < 1 {
		return usageErr("--years %d: must be at least 1", *years)
	}
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	pool, err := database.Open(ctx, cfg.DatabaseURL, "archiver-starter")
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	defer pool.Close()
	res, err := demo.Seed(ctx, pool, demo.Options{
		Logs: *logs, MetricsPerDay: *perDay, Reports: *reports, ReportBytes: *reportKB << 10, ReportsDir: cfg.ReportsDir,
		Span: time.Duration(*years) * 365 * 24 * time.Hour, AsOf: time.Now(),
	}, stdout)
	if err != nil {
		return err
	}
	for _, t := range res.Skipped {
		fmt.Fprintf(stdout, "demo: %s already has rows; nothing added\n", t)
	}
	return nil
}
