//go:build faults

package faults

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/client"

	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/workflows"
)

var asOf = time.Date(2026, 3, 15, 3, 0, 0, 0, time.UTC)
var cutoff = asOf.Add(-365 * 24 * time.Hour)

// newWorker starts the real worker binary (with its failpoints) on queue.
func newWorker(t *testing.T, dbURL, queue string, extra ...string) *testenv.WorkerProcess {
	return testenv.StartWorkerProcess(t, dbURL, queue, extra...)
}

// stack runs a command of deploy/dev/stack.sh (restarts and outages).
func stack(t *testing.T, cmd string) {
	t.Helper()
	testenv.Stack(t, cmd)
}

// count polls a count query, riding out the errors of a server restart.
func count(ctx context.Context, db *pgxpool.Pool, sql string) int64 {
	var n int64
	if err := db.QueryRow(ctx, sql).Scan(&n); err != nil {
		return -1
	}
	return n
}

// waitBatches waits until the ledger holds at least n batches.
func waitBatches(t *testing.T, db *pgxpool.Pool, n int64) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for count(context.Background(), db, `SELECT count(*) FROM archive_batches`) < n {
		if time.Now().After(deadline) {
			t.Fatalf("the ledger did not reach %d batches in 3 minutes", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runWait bounds a run under faults: the long tests move ten times the rows
// through three kills and a PostgreSQL restart; both stay inside make's
// -timeout, so a stuck run fails with what it waits on.
func runWait() time.Duration {
	if long() {
		return 10 * time.Minute
	}
	return testenv.DefaultWait
}

func start(t *testing.T, c client.Client, queue string, in workflows.ArchiveInput) client.WorkflowRun {
	t.Helper()
	run, err := c.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{ID: "faults-" + testenv.RandomID(), TaskQueue: queue},
		workflows.ArchiveWorkflowName, in)
	if err != nil {
		t.Fatal(err)
	}
	return run
}

// logsState is what must not change across faults.
type logsState struct {
	allN                int64
	allSum, eligibleSum string
	eligibleN           int64
}

func snapshotLogs(t *testing.T, db *pgxpool.Pool) logsState {
	t.Helper()
	var s logsState
	s.allN, s.allSum = testenv.LogsChecksum(t, db, "v_scenario_logs_all", "")
	s.eligibleN, s.eligibleSum = testenv.LogsChecksum(t, db, "v_scenario_logs_all", "received_at < '"+cutoff.Format(time.RFC3339Nano)+"'")
	return s
}

// verifyLogs checks the exactly-once promise (docs/design.md) on the data:
// live ∪ archive equals the original rows by content, no id in both
// tables, every eligible row archived, every ledger batch counting the rows
// carrying its id.
func verifyLogs(t *testing.T, db *pgxpool.Pool, before logsState) {
	t.Helper()
	after := snapshotLogs(t, db)
	if after.allN != before.allN || after.allSum != before.allSum {
		t.Fatalf("live ∪ archive changed: %d rows (%s), was %d (%s)", after.allN, after.allSum, before.allN, before.allSum)
	}
	archN, archSum := testenv.LogsChecksum(t, db, "scenario_logs_archive", "")
	if archN != before.eligibleN || archSum != before.eligibleSum {
		t.Fatalf("archive holds %d rows (%s), want the %d eligible (%s)", archN, archSum, before.eligibleN, before.eligibleSum)
	}
	if n := testenv.Count(t, db, `SELECT count(*) FROM scenario_logs l JOIN scenario_logs_archive a USING (id)`); n != 0 {
		t.Fatalf("%d ids are in both tables", n)
	}
	if n := testenv.Count(t, db, `SELECT count(*) FROM archive_batches b
		WHERE rows_moved <> (SELECT count(*) FROM scenario_logs_archive a WHERE a.archive_batch_id = b.batch_id)`); n != 0 {
		t.Fatalf("%d ledger batches disagree with the rows carrying their id", n)
	}
}

func rng(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}
