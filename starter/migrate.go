package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mockupaws/archiver/internal/config"
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
	conn, err := pgx.Connect(ctx, cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL (%s): %w", config.Redact(cfg.DatabaseURL), err)
	}
	defer conn.Close(ctx)
	from, to, err := migrations.Up(ctx, conn)
	if err != nil {
		return err
	}
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
	years := fs.Int("years", 3, "how many years back the rows reach")
	if err := fs.Parse(args); err != nil {
		return usageErr("%v", err)
	}
	if *logs < 0 || *logs > 100_000_000 {
		return usageErr("--logs %d: must be between 0 and 100000000", *logs)
	}
	if *years < 1 || *years > 20 {
		return usageErr("--years %d: must be between 1 and 20", *years)
	}
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	defer pool.Close()
	res, err := demo.SeedLogs(ctx, pool, demo.Options{
		Logs: *logs, Span: time.Duration(*years) * 365 * 24 * time.Hour, AsOf: time.Now(),
	}, stdout)
	if err != nil {
		return err
	}
	if res.Skipped {
		fmt.Fprintln(stdout, "demo: scenario_logs already has rows; nothing added")
	}
	return nil
}
