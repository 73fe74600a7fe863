// Command starter is the operator's CLI: it migrates the schema, starts
// archive runs on Temporal and shows their state. The logic lives in the
// packages it calls; this file only parses commands.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage: starter <command> [flags]

commands:
  migrate   apply the schema migrations (idempotent)
  run       start one archive run: run [--all | --logs --metrics --reports] [--dry-run]
            [--as-of RFC3339] [--batch-size N] [--wait] [--json] [--verbose]
  status    recent archive jobs and running archive workflows with their progress
  schedule  the nightly schedule: schedule apply [--timezone Z] [--cron C] [--catchup-window D]
            | describe | pause [--note N] | unpause | trigger | backfill --from T --to T | delete
  backfill  queue a manual window: backfill --table NAME --before T [--after T] [--force]
  restore   bring a window back to the live table: restore --table NAME --after T --before T
            [--dry-run] [--hold 720h] [--batch-size N] [--no-wait]
  verify    recount the ledger, the exports and the offloaded objects: verify [--table NAME] [--deep]
  pause     pause running archive runs between batches [--workflow-id ID] [--reason R]
  resume    resume them [--workflow-id ID]
  throttle  cap batches per second: throttle N [--workflow-id ID] (0 lifts the cap)
  demo      fill empty live tables with demo data: demo [--logs N] [--metrics-per-day N]
            [--reports N] [--report-kb N] [--years N]
  bucket    the reports bucket's lifecycle: bucket apply [--glacier-after-days N]
            [--expire-after-days N] | bucket show
  estimate  storage estimate from the database: estimate [--json] [--table NAME ...]
  codec-server  decode/encode payloads for the Web UI and CLI: codec-server [--listen H:P] [--ui-origin URL] [--namespace NS]
            | codec-server --check URL (does the codec server at URL decode this machine's key?)

environment: DATABASE_URL, TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, ARCHIVE_TASK_QUEUE,
             TEMPORAL_UI_URL, ARCHIVE_POLICY_FILE (see docs/deploying.md)
`

// exitError carries an exit status: 1 for a failed run or operation, 2 for
// bad usage.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }

func usageErr(format string, args ...any) error {
	return exitError{code: 2, err: fmt.Errorf(format, args...)}
}

// getenv is the process environment; tests replace it.
var getenv = os.Getenv

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if err == nil {
		return
	}
	code := 1
	var ee exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	fmt.Fprintln(os.Stderr, "starter:", err)
	os.Exit(code)
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageErr("no command given")
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	switch args[0] {
	case "migrate":
		return cmdMigrate(ctx, args[1:], stdout)
	case "run":
		return cmdRun(ctx, args[1:], stdout, stderr, logger)
	case "policy":
		return cmdPolicy(ctx, args[1:], stdout, stderr)
	case "status":
		return cmdStatus(ctx, args[1:], stdout, logger)
	case "demo":
		return cmdDemo(ctx, args[1:], stdout)
	case "bucket":
		return cmdBucket(ctx, args[1:], stdout, stderr)
	case "estimate":
		return cmdEstimate(ctx, args[1:], stdout, stderr)
	case "schedule":
		return cmdSchedule(ctx, args[1:], stdout, stderr, logger)
	case "backfill":
		return cmdBackfill(ctx, args[1:], stdout, stderr, logger)
	case "restore":
		return cmdRestore(ctx, args[1:], stdout, stderr, logger)
	case "verify":
		return cmdVerify(ctx, args[1:], stdout, stderr)
	case "codec-server":
		return cmdCodecServer(ctx, args[1:], stdout, stderr)
	case "pause", "resume", "throttle":
		return cmdControl(ctx, args[0], args[1:], stdout, stderr, logger)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return usageErr("unknown command %q", args[0])
	}
}
