//go:build faults

package faults

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/workflows"
)

var asOf = time.Date(2026, 3, 15, 3, 0, 0, 0, time.UTC)
var cutoff = asOf.Add(-365 * 24 * time.Hour)

var buildOnce sync.Once
var workerBin string

// buildWorker builds the real worker binary once per test process.
func buildWorker(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "archiver-faults-")
		if err != nil {
			t.Fatal(err)
		}
		workerBin = filepath.Join(dir, "worker")
		// -tags faults: with the failpoints (worker/failpoints_faults.go).
		out, err := exec.Command("go", "build", "-tags", "faults", "-o", workerBin, "github.com/mockupaws/archiver/worker").CombinedOutput()
		if err != nil {
			t.Fatalf("build worker: %v\n%s", err, out)
		}
	})
	return workerBin
}

// workerProc is a real worker process that the test kills and restarts.
type workerProc struct {
	t    *testing.T
	env  []string
	cmd  *exec.Cmd
	out  syncBuffer
	done chan struct{} // closed when the process has exited
}

// syncBuffer is the worker's output, written by the process and read by
// the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newWorker(t *testing.T, dbURL, queue string, extra ...string) *workerProc {
	w := &workerProc{t: t, env: append(append(os.Environ(), "DATABASE_URL="+dbURL, "ARCHIVE_TASK_QUEUE="+queue,
		"ARCHIVE_MAX_REPLICA_LAG=0", "METRICS_ADDR="), extra...)}
	w.start()
	t.Cleanup(w.stop)
	return w
}

func (w *workerProc) start() {
	w.cmd = exec.Command(buildWorker(w.t))
	w.cmd.Env = w.env
	w.cmd.Stdout, w.cmd.Stderr = &w.out, &w.out
	if err := w.cmd.Start(); err != nil {
		w.t.Fatalf("start worker: %v", err)
	}
	done, cmd := make(chan struct{}), w.cmd
	w.done = done
	go func() { _ = cmd.Wait(); close(done) }()
}

// kill ends the process at once (SIGKILL): no drain, no clean-up.
func (w *workerProc) kill() {
	_ = w.cmd.Process.Signal(syscall.SIGKILL)
	<-w.done
}

func (w *workerProc) stop() {
	select {
	case <-w.done:
		return
	default:
	}
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-w.done:
	case <-time.After(10 * time.Second):
		w.kill()
	}
}

// stack runs a command of deploy/dev/stack.sh (restarts and outages).
func stack(t *testing.T, cmd string) {
	t.Helper()
	out, err := exec.Command("bash", filepath.Join("..", "..", "deploy", "dev", "stack.sh"), cmd).CombinedOutput()
	if err != nil {
		t.Fatalf("stack.sh %s: %v\n%s", cmd, err, out)
	}
	t.Logf("stack.sh %s done", cmd)
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

// verifyLogs checks DESIGN.md §3's promise on the data: live ∪ archive equals
// the original rows by content, no id in both tables, every eligible row
// archived, every ledger batch counting the rows carrying its id.
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

// setEnv returns env with key set to value (removed when value is "").
func setEnv(env []string, key, value string) []string {
	var out []string
	for _, e := range env {
		if !strings.HasPrefix(e, key+"=") {
			out = append(out, e)
		}
	}
	if value != "" {
		out = append(out, key+"="+value)
	}
	return out
}

// failpoints lists, in order, where the worker's processes killed
// themselves: the rest of each "failpoint: killed after <what>" line of
// the output, for the lines whose <what> starts with what.
func failpoints(out, what string) []string {
	var list []string
	for _, line := range strings.Split(out, "\n") {
		if _, rest, ok := strings.Cut(line, "failpoint: killed after "+what); ok {
			list = append(list, strings.TrimSpace(rest))
		}
	}
	return list
}

// failLostActivities fails, on the Temporal server, the attempts the
// killed worker had started, and resets their retry backoff. Left alone,
// the server retries such an attempt only when its timeout fires: the
// heartbeat timeout of an export or upload (a minute), the start-to-close
// timeout of a restore batch (ten minutes); and an activity killed again
// and again (retention's, one activity for every partition) backs off up
// to 30 s between attempts. Failing the attempt is what that timeout does,
// early: the same attempt is lost, the same retry runs its activity again.
// Call it while no worker is running, so that no live attempt is failed.
func failLostActivities(t *testing.T, c client.Client, workflowID string) int {
	t.Helper()
	ctx := context.Background()
	ns := testenv.Load(t).Namespace
	d, err := c.DescribeWorkflowExecution(ctx, workflowID, "")
	if err != nil {
		t.Fatalf("describe %s: %v", workflowID, err)
	}
	exec := d.GetWorkflowExecutionInfo().GetExecution()
	n := 0
	for _, a := range d.GetPendingActivities() {
		if a.GetState() != enumspb.PENDING_ACTIVITY_STATE_STARTED {
			continue
		}
		lost := errors.New("fault test: the worker running this attempt was SIGKILLed")
		if err := c.CompleteActivityByID(ctx, ns, exec.GetWorkflowId(), exec.GetRunId(), a.GetActivityId(), nil, lost); err != nil {
			t.Fatalf("fail the lost attempt of %s (%s): %v", a.GetActivityType().GetName(), a.GetActivityId(), err)
		}
		if _, err := c.WorkflowService().ResetActivity(ctx, &workflowservice.ResetActivityRequest{
			Namespace: ns, Execution: exec, Identity: "archiver-faults-test",
			Activity: &workflowservice.ResetActivityRequest_Id{Id: a.GetActivityId()},
		}); err != nil {
			t.Logf("reset %s (%s): %v (it retries after its backoff)", a.GetActivityType().GetName(), a.GetActivityId(), err)
		}
		n++
	}
	return n
}
