package testenv

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
)

var (
	buildOnce sync.Once
	workerBin string
	buildErr  error
)

// WorkerBinaryEnv names a worker binary already built by a parent test
// process (the torture test's shards): WorkerBinary uses it as is.
const WorkerBinaryEnv = "ARCHIVER_TEST_WORKER_BIN"

// WorkerBinary builds the real worker binary once per test process, with
// the failpoints of worker/failpoints_faults.go (-tags faults): the fault
// and torture tests SIGKILL it where they choose.
func WorkerBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if bin := os.Getenv(WorkerBinaryEnv); bin != "" {
			workerBin = bin
			return
		}
		dir, err := os.MkdirTemp("", "archiver-worker-")
		if err != nil {
			buildErr = err
			return
		}
		workerBin = filepath.Join(dir, "worker")
		out, err := exec.Command("go", "build", "-tags", "faults", "-o", workerBin, "github.com/mockupaws/archiver/worker").CombinedOutput()
		if err != nil {
			buildErr = errors.New(err.Error() + "\n" + string(out))
		}
	})
	if buildErr != nil {
		t.Fatalf("build worker: %v", buildErr)
	}
	return workerBin
}

// WorkerProcess is a real worker process that a test kills and restarts.
// Env is the environment its next Start gives it.
type WorkerProcess struct {
	t    testing.TB
	Env  []string
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

// StartWorkerProcess starts the worker binary on queue for the database
// at dbURL (a WorkerURL), with the stack's environment and extra
// KEY=VALUE settings; it is stopped when the test ends.
func StartWorkerProcess(t testing.TB, dbURL, queue string, extra ...string) *WorkerProcess {
	t.Helper()
	w := &WorkerProcess{t: t, Env: append(append(os.Environ(), "DATABASE_URL="+dbURL, "ARCHIVE_TASK_QUEUE="+queue,
		"ARCHIVE_MAX_REPLICA_LAG=0", "METRICS_ADDR="), extra...)}
	w.Start()
	t.Cleanup(w.Stop)
	return w
}

// Start starts the process (again) with Env.
func (w *WorkerProcess) Start() {
	w.cmd = exec.Command(WorkerBinary(w.t))
	w.cmd.Env = w.Env
	w.cmd.Stdout, w.cmd.Stderr = &w.out, &w.out
	if err := w.cmd.Start(); err != nil {
		w.t.Fatalf("start worker: %v", err)
	}
	done, cmd := make(chan struct{}), w.cmd
	w.done = done
	go func() { _ = cmd.Wait(); close(done) }()
}

// Kill ends the process at once (SIGKILL): no drain, no clean-up.
func (w *WorkerProcess) Kill() {
	_ = w.cmd.Process.Signal(syscall.SIGKILL)
	<-w.done
}

// Exited is closed once the process has exited (a failpoint killed it).
func (w *WorkerProcess) Exited() <-chan struct{} { return w.done }

// Stop ends the process with SIGTERM (its drain), SIGKILL after 10 s.
func (w *WorkerProcess) Stop() {
	select {
	case <-w.done:
		return
	default:
	}
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-w.done:
	case <-time.After(10 * time.Second):
		w.Kill()
	}
}

// Output is what every run of the process wrote.
func (w *WorkerProcess) Output() string { return w.out.String() }

// SetEnv returns env with key set to value (removed when value is "").
func SetEnv(env []string, key, value string) []string {
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

// Failpoints lists, in order, where the worker's processes killed
// themselves: the rest of each "failpoint: killed after <what>" line of
// the output, for the lines whose <what> starts with what.
func Failpoints(out, what string) []string {
	var list []string
	for _, line := range strings.Split(out, "\n") {
		if _, rest, ok := strings.Cut(line, "failpoint: killed after "+what); ok {
			list = append(list, strings.TrimSpace(rest))
		}
	}
	return list
}

// FailLostActivities fails, on the Temporal server, the attempts a killed
// worker had started, and resets their retry backoff. Left alone, the
// server retries such an attempt only when its timeout fires: the
// heartbeat timeout of an export or upload (a minute), the start-to-close
// timeout of a restore batch (ten minutes); and an activity killed again
// and again (retention's, one activity for every partition) backs off up
// to 30 s between attempts. Failing the attempt is what that timeout does,
// early: the same attempt is lost, the same retry runs its activity again.
// Call it while no worker is running, so that no live attempt is failed.
func FailLostActivities(t testing.TB, c client.Client, workflowID string) int {
	t.Helper()
	ctx := context.Background()
	ns := Load(t).Namespace
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
		lost := errors.New("the worker running this attempt was SIGKILLed")
		if err := c.CompleteActivityByID(ctx, ns, exec.GetWorkflowId(), exec.GetRunId(), a.GetActivityId(), nil, lost); err != nil {
			t.Fatalf("fail the lost attempt of %s (%s): %v", a.GetActivityType().GetName(), a.GetActivityId(), err)
		}
		if _, err := c.WorkflowService().ResetActivity(ctx, &workflowservice.ResetActivityRequest{
			Namespace: ns, Execution: exec, Identity: "archiver-test",
			Activity: &workflowservice.ResetActivityRequest_Id{Id: a.GetActivityId()},
		}); err != nil {
			t.Logf("reset %s (%s): %v (it retries after its backoff)", a.GetActivityType().GetName(), a.GetActivityId(), err)
		}
		n++
	}
	return n
}
