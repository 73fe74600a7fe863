package testenv

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
)

// DefaultWait bounds a whole run in the e2e tests. The longest takes well
// under a minute on the dev stack; one still going after three is stuck (an
// activity retrying forever), and the test should say on what rather than
// hang until go test's own timeout.
const DefaultWait = 3 * time.Minute

// Wait waits up to timeout for run's result, decoded into valuePtr (nil:
// not decoded), and returns the run's own error: a failed workflow is for
// the caller to judge. A run still going at the deadline fails the test with
// what it is stuck on: each pending activity's type, attempt and last
// failure, and the pending child workflows with theirs.
//
// Wait returns after t.Fatalf (with the deadline's error) for a t whose
// Fatalf does not stop the goroutine.
func Wait(t testing.TB, c client.Client, run client.WorkflowRun, timeout time.Duration, valuePtr any) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := run.Get(ctx, valuePtr)
	var ended *temporal.WorkflowExecutionError
	if err == nil || errors.As(err, &ended) || !deadline(ctx, err) {
		return err
	}
	t.Fatalf("workflow %s not finished after %v (%v); it is waiting on:\n%s", run.GetID(), timeout, err, pending(c, run.GetID()))
	return err
}

// deadline tells whether Get gave up on the deadline. The SDK gives its RPCs
// a shorter timeout than ctx's to leave room for retries, so Get can return
// DeadlineExceeded a moment before ctx itself expires.
func deadline(ctx context.Context, err error) bool {
	var rpc *serviceerror.DeadlineExceeded
	return ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || errors.As(err, &rpc)
}

// pending describes what the workflow's current run waits on, children
// included, one line an item.
func pending(c client.Client, workflowID string) string {
	var b strings.Builder
	describePending(&b, c, workflowID, "", 0)
	return b.String()
}

func describePending(b *strings.Builder, c client.Client, workflowID, runID string, depth int) {
	indent := strings.Repeat("  ", depth+1)
	// The deadline has passed: a context of its own.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := c.DescribeWorkflowExecution(ctx, workflowID, runID)
	if err != nil {
		fmt.Fprintf(b, "%sdescribe %s: %v\n", indent, workflowID, err)
		return
	}
	fmt.Fprintf(b, "%s%s (%s)\n", indent, workflowID, d.GetWorkflowExecutionInfo().GetStatus())
	if wt := d.GetPendingWorkflowTask(); wt.GetAttempt() > 1 {
		// A workflow task failing again and again (a panic, a
		// non-determinism error) shows only as its attempt count here.
		fmt.Fprintf(b, "%s  workflow task: attempt %d\n", indent, wt.GetAttempt())
	}
	acts := d.GetPendingActivities()
	if len(acts) == 0 && len(d.GetPendingChildren()) == 0 {
		fmt.Fprintf(b, "%s  no pending activity or child workflow (a timer, a signal, a workflow task?)\n", indent)
	}
	for _, a := range acts {
		last := "none yet"
		if f := a.GetLastFailure(); f != nil {
			last = f.GetMessage()
		}
		fmt.Fprintf(b, "%s  activity %s: attempt %d, %s, last failure: %s\n", indent, a.GetActivityType().GetName(), a.GetAttempt(), a.GetState(), last)
	}
	for _, ch := range d.GetPendingChildren() {
		fmt.Fprintf(b, "%s  child workflow %s (%s)\n", indent, ch.GetWorkflowId(), ch.GetWorkflowTypeName())
		if depth < 3 {
			describePending(b, c, ch.GetWorkflowId(), ch.GetRunId(), depth+2)
		}
	}
}
