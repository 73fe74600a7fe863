package e2e

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/mockupaws/archiver/internal/testenv"
)

const stuckActivity = "ConnectToDatabase"

// stuckWorkflow runs one activity that never succeeds, retried without end:
// the regression testenv.Wait is there to report.
func stuckWorkflow(ctx workflow.Context) error {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 10 * time.Second,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: 100 * time.Millisecond, BackoffCoefficient: 1}, // no maximum
	})
	return workflow.ExecuteActivity(ctx, stuckActivity).Get(ctx, nil)
}

func connectToDatabase(context.Context) error {
	return errors.New("injected: database unreachable")
}

// recordingTB records Fatalf instead of ending the test, so that a test can
// check what a helper's failure says.
type recordingTB struct {
	testing.TB
	mu    sync.Mutex
	fatal []string
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Fatalf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fatal = append(r.fatal, fmt.Sprintf(format, args...))
}

// A run that cannot finish fails the test at the deadline, naming the
// activity it is stuck on and that activity's last error.
func TestWaitReportsWhatARunIsStuckOn(t *testing.T) {
	t.Parallel()
	c := testenv.Temporal(t)
	queue := "wait-" + testenv.RandomID()
	w := worker.New(c, queue, worker.Options{})
	w.RegisterWorkflow(stuckWorkflow)
	w.RegisterActivityWithOptions(connectToDatabase, activity.RegisterOptions{Name: stuckActivity})
	if err := w.Start(); err != nil {
		t.Fatalf("start worker: %v", err)
	}
	t.Cleanup(w.Stop)

	run, err := c.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{ID: "wait-" + testenv.RandomID(), TaskQueue: queue}, stuckWorkflow)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.TerminateWorkflow(context.Background(), run.GetID(), "", "test over"); err != nil {
			t.Errorf("terminate %s: %v", run.GetID(), err)
		}
	})

	rec := &recordingTB{TB: t}
	began := time.Now()
	if err := testenv.Wait(rec, c, run, 5*time.Second, nil); err == nil {
		t.Fatal("Wait returned no error for a run that cannot finish")
	}
	if took := time.Since(began); took > 30*time.Second {
		t.Fatalf("Wait took %v with a 5 s deadline", took)
	}
	if len(rec.fatal) != 1 {
		t.Fatalf("Wait called Fatalf %d times, want once: %q", len(rec.fatal), rec.fatal)
	}
	msg := rec.fatal[0]
	t.Logf("Wait's failure:\n%s", msg)
	for _, want := range []string{run.GetID(), "5s", "activity " + stuckActivity + ": attempt ", "last failure: injected: database unreachable"} {
		if !strings.Contains(msg, want) {
			t.Errorf("Wait's failure lacks %q:\n%s", want, msg)
		}
	}
	// Retried, not merely started: the message shows the retries going on.
	m := regexp.MustCompile(`attempt (\d+)`).FindStringSubmatch(msg)
	if m == nil {
		t.Fatal("Wait's failure gives no attempt count")
	}
	if n, _ := strconv.Atoi(m[1]); n < 2 {
		t.Errorf("Wait's failure reports attempt %d, want the retries (2 or more)", n)
	}
}
