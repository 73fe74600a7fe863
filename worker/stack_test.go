package main

// Helpers of the worker's tests against the real stack: the worker's main
// as a process of its own (this test binary, re-executed), its /readyz,
// and a run's activity attempts as the Temporal history records them.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"

	"github.com/mockupaws/archiver/activities"
)

var asOf = time.Date(2026, 3, 15, 3, 0, 0, 0, time.UTC)
var cutoff = asOf.Add(-365 * 24 * time.Hour)

// runAsWorker, in the environment of a process this test binary starts,
// makes that process the worker: TestMain calls main() instead of the
// tests. The process runs exactly the binary's main (flags, signals, exit
// status), without a separate go build of the package (20 s on the
// 2-core dev machine, in every make test).
const runAsWorker = "ARCHIVER_TEST_RUN_AS_WORKER"

func TestMain(m *testing.M) {
	if os.Getenv(runAsWorker) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// proc is one worker process.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	out  syncBuffer
	done chan struct{}
	err  error // the process's exit, once done is closed
}

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

// startWorker runs the worker (this binary as main) on the test database dbURL and task
// queue, with /metrics and the health endpoints on a free port; extra
// variables (NAME=value) override. It is SIGKILLed at the end if still
// running.
func startWorker(t *testing.T, dbURL, queue string, extra ...string) *proc {
	t.Helper()
	p := &proc{t: t, done: make(chan struct{})}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(self, "-test.run=^$")
	p.cmd.Env = append(append(os.Environ(), runAsWorker+"=1", "DATABASE_URL="+dbURL, "ARCHIVE_TASK_QUEUE="+queue,
		"ARCHIVE_MAX_REPLICA_LAG=0", "METRICS_ADDR=127.0.0.1:0"), extra...)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start worker: %v", err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// wait waits up to d for the process to exit and returns its exit error.
func (p *proc) wait(d time.Duration) error {
	p.t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		p.t.Fatalf("the worker did not exit within %s; output:\n%s", d, p.out.String())
		return nil
	}
}

// logLine is the first JSON log line of the process whose msg starts with
// msg (nil if none yet).
func (p *proc) logLine(msg string) map[string]any {
	for _, line := range strings.Split(p.out.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			if s, _ := m["msg"].(string); strings.HasPrefix(s, msg) {
				return m
			}
		}
	}
	return nil
}

// healthURL waits for the worker to serve and returns its base URL.
func (p *proc) healthURL() string {
	p.t.Helper()
	var addr string
	waitFor(p.t, 30*time.Second, "the worker serving /metrics and health", func() bool {
		if p.exited() {
			p.t.Fatalf("the worker exited: %v\n%s", p.err, p.out.String())
		}
		if m := p.logLine("serving metrics and health"); m != nil {
			addr, _ = m["addr"].(string)
		}
		return addr != ""
	})
	return "http://" + addr
}

// get fetches url: status and body (status 0 when unreachable).
func get(url string) (int, string) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitFor polls cond every 10 ms for up to d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// attempt is one activity attempt that a run's history records.
type attempt struct {
	Type    string
	ID      string
	Attempt int32
	// Outcome: completed, failed, timed out, canceled; "" while pending.
	Outcome string
}

// attempts lists every activity of the workflow's run (runID "": the
// latest) in the order scheduled. The history records an activity's
// started event once, with the number of its last attempt, when it ends:
// a retry (after a failure or a timeout) shows as an attempt above 1.
func attempts(t *testing.T, c client.Client, workflowID, runID string) []attempt {
	t.Helper()
	it := c.GetWorkflowHistory(context.Background(), workflowID, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	scheduled := map[int64]attempt{}
	var order []int64
	var out []attempt
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			t.Fatalf("history of %s: %v", workflowID, err)
		}
		switch e.GetEventType() {
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
			a := e.GetActivityTaskScheduledEventAttributes()
			scheduled[e.GetEventId()] = attempt{Type: a.GetActivityType().GetName(), ID: a.GetActivityId()}
			order = append(order, e.GetEventId())
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_STARTED:
			a := e.GetActivityTaskStartedEventAttributes()
			s := scheduled[a.GetScheduledEventId()]
			s.Attempt = a.GetAttempt()
			scheduled[a.GetScheduledEventId()] = s
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
			setOutcome(scheduled, e.GetActivityTaskCompletedEventAttributes().GetScheduledEventId(), "completed")
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_FAILED:
			setOutcome(scheduled, e.GetActivityTaskFailedEventAttributes().GetScheduledEventId(), "failed")
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
			setOutcome(scheduled, e.GetActivityTaskTimedOutEventAttributes().GetScheduledEventId(), "timed out")
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_CANCELED:
			setOutcome(scheduled, e.GetActivityTaskCanceledEventAttributes().GetScheduledEventId(), "canceled")
		case enumspb.EVENT_TYPE_MARKER_RECORDED:
			if a, ok := localAttempt(t, e.GetMarkerRecordedEventAttributes()); ok {
				scheduled[e.GetEventId()] = a
				order = append(order, e.GetEventId())
			}
		}
	}
	for _, id := range order {
		out = append(out, scheduled[id])
	}
	return out
}

// localAttempt reads a local activity's marker (the batches of a run): the
// SDK records one when the activity ends, with its type, id and attempt,
// and its result or failure.
func localAttempt(t *testing.T, m *historypb.MarkerRecordedEventAttributes) (attempt, bool) {
	if m.GetMarkerName() != "LocalActivity" {
		return attempt{}, false
	}
	var data struct {
		ActivityID   string
		ActivityType string
		Attempt      int32
	}
	for _, p := range m.GetDetails()["data"].GetPayloads() {
		if err := json.Unmarshal(p.GetData(), &data); err != nil {
			t.Fatalf("local activity marker: %v", err)
		}
	}
	a := attempt{Type: data.ActivityType, ID: data.ActivityID, Attempt: max(data.Attempt, 1), Outcome: "completed"}
	if f := m.GetFailure(); f != nil {
		a.Outcome = "failed"
		for ; f != nil; f = f.GetCause() {
			if f.GetApplicationFailureInfo().GetType() == activities.ErrRunAsActivity {
				a.Outcome = "refused" // by a draining worker: the batch went to the task queue
			}
		}
	}
	return a, true
}

func setOutcome(m map[int64]attempt, id int64, outcome string) {
	a := m[id]
	a.Outcome = outcome
	m[id] = a
}

// onlyFirstAttempts fails the test unless every activity of list that has
// ended completed on its first attempt (a local batch a draining worker
// refused, which never started, aside).
func onlyFirstAttempts(t *testing.T, list []attempt) {
	t.Helper()
	var bad []string
	for _, a := range list {
		if a.Outcome != "" && a.Outcome != "refused" && (a.Outcome != "completed" || a.Attempt != 1) {
			bad = append(bad, fmt.Sprintf("%s %s: %s on attempt %d", a.Type, a.ID, a.Outcome, a.Attempt))
		}
	}
	if len(bad) > 0 {
		t.Fatalf("activities not completed on their first attempt:\n%s", strings.Join(bad, "\n"))
	}
}

// exitCode is the process's exit status (-1: killed by a signal).
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}
