package torture

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"pgregory.net/rapid"
)

// Server faults restart or stop the dev stack's shared servers, so only a
// campaign that runs alone draws them (make torture sets
// TORTURE_SERVER_FAULTS); the fixed seeds of make test run beside other
// tests and never do.
func serverFaults() bool { return os.Getenv("TORTURE_SERVER_FAULTS") != "" }

// drawServerFault draws what happens to the servers while a run goes on:
// nothing, a PostgreSQL restart once the run has committed a batch, or an
// S3 outage that lasts until an activity has failed on it (or the run
// ended). It returns the fault to run beside the run, or nil.
func (h *harness) drawServerFault(t *rapid.T) func(ctx context.Context) {
	// Drawn whether or not they run, so that a seed draws the same
	// operations in a campaign and in make test's fixed seeds.
	fault := rapid.SampledFrom([]string{"", "", "", "pg restart", "s3 outage"}).Draw(t, "server fault")
	if !serverFaults() {
		return nil
	}
	switch fault {
	case "pg restart":
		return func(ctx context.Context) {
			before := h.batches()
			if !h.until(ctx, func() bool { return h.batches() > before }) {
				return
			}
			if err := stack("pg-restart"); err != nil {
				h.serverErr = err
				return
			}
			h.db.Reset() // its connections died with the server
			h.cover("fault=pg restart")
			h.s.stats.faults++
		}
	case "s3 outage":
		return func(ctx context.Context) {
			if err := stack("s3-stop"); err != nil {
				h.serverErr = err
				return
			}
			h.cover("fault=s3 outage")
			h.s.stats.faults++
			// Down until an activity has failed on it and is retried, or
			// the run no longer needs S3.
			h.until(ctx, h.retrying)
			if err := stack("s3-start"); err != nil {
				h.serverErr = err
			}
		}
	}
	return nil
}

// batches counts the ledger's rows (-1 while the server is away).
func (h *harness) batches() int64 {
	var n int64
	if err := h.db.QueryRow(context.Background(), `SELECT count(*) FROM archive_batches`).Scan(&n); err != nil {
		return -1
	}
	return n
}

// retrying reports whether an activity of the scenario's current run has
// failed an attempt and waits for its retry.
func (h *harness) retrying() bool {
	id := h.running.Load()
	if id == nil {
		return false
	}
	d, err := h.s.c.DescribeWorkflowExecution(context.Background(), *id, "")
	if err != nil {
		return false
	}
	for _, a := range d.GetPendingActivities() {
		if a.GetAttempt() > 1 {
			return true
		}
	}
	return false
}

// until polls cond until it holds (true) or ctx ends (false): the run it
// watches ended first.
func (h *harness) until(ctx context.Context, cond func() bool) bool {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
	return true
}

// stack runs a command of deploy/dev/stack.sh.
func stack(cmd string) error {
	out, err := exec.Command("bash", filepath.Join("..", "..", "deploy", "dev", "stack.sh"), cmd).CombinedOutput()
	if err != nil {
		return &stackError{cmd: cmd, out: string(out), err: err}
	}
	return nil
}

type stackError struct {
	cmd, out string
	err      error
}

func (e *stackError) Error() string { return "stack.sh " + e.cmd + ": " + e.err.Error() + "\n" + e.out }
