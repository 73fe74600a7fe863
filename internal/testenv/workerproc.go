package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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

// WorkerBinaryEnv names a worker binary already built with -tags faults
// (by make test, or by the torture test for its shards): WorkerBinary uses
// it as is.
const WorkerBinaryEnv = "ARCHIVER_TEST_WORKER_BIN"

// BinDirEnv names a folder holding worker and starter binaries already
// built as `make build` builds them (make test builds them once for every
// test process): Binary uses them as they are.
const BinDirEnv = "ARCHIVER_TEST_BIN_DIR"

// WorkerBinary is the real worker binary with the failpoints of
// worker/failpoints_faults.go (-tags faults): the fault and torture tests
// SIGKILL it where they choose. Built once per test process unless
// WorkerBinaryEnv names one.
func WorkerBinary(t testing.TB) string {
	t.Helper()
	return built(t, "worker (faults)", os.Getenv(WorkerBinaryEnv), "worker", "-tags", "faults")
}

// Binary is the real worker or starter binary (name), as `make build`
// builds it. Built once per test process unless BinDirEnv names a folder
// that holds it.
func Binary(t testing.TB, name string) string {
	t.Helper()
	prebuilt := ""
	if dir := os.Getenv(BinDirEnv); dir != "" {
		prebuilt = filepath.Join(dir, name)
	}
	return built(t, name, prebuilt, name)
}

var (
	buildMu sync.Mutex
	builds  = map[string]*build{}
)

type build struct {
	once sync.Once
	path string
	err  error
}

// built returns prebuilt when it is set (failing the test when it is
// missing), or else the path of pkg (a main package of this module) built
// with flags, once per test process under key.
func built(t testing.TB, key, prebuilt, pkg string, flags ...string) string {
	t.Helper()
	buildMu.Lock()
	b := builds[key]
	if b == nil {
		b = &build{}
		builds[key] = b
	}
	buildMu.Unlock()
	b.once.Do(func() {
		if prebuilt != "" {
			if _, err := os.Stat(prebuilt); err != nil {
				b.err = fmt.Errorf("prebuilt %s: %w", key, err)
			}
			b.path = prebuilt
			return
		}
		dir, err := os.MkdirTemp("", "archiver-"+pkg+"-")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, pkg)
		args := append(append([]string{"build"}, flags...), "-o", b.path, "github.com/mockupaws/archiver/"+pkg)
		if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
			b.err = errors.New(err.Error() + "\n" + string(out))
		}
	})
	if b.err != nil {
		t.Fatalf("build %s: %v", key, b.err)
	}
	return b.path
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
