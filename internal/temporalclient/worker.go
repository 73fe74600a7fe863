package temporalclient

import (
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/workflows"
)

// WorkerOption sets one of the worker's limits.
type WorkerOption func(*worker.Options)

// WithStopTimeout lets a stopping worker (SIGTERM) wait up to d for the
// activities it runs to return before it cancels them: a batch in flight
// commits and reports its result, instead of being rolled back and
// retried after its start-to-close timeout (10 minutes) on another
// worker. The SDK's default is 0: cancel at once.
func WithStopTimeout(d time.Duration) WorkerOption {
	return func(o *worker.Options) { o.WorkerStopTimeout = d }
}

// WithActivitySlots runs at most n activities at once (the SDK's default is
// 1,000), with the SDK's fixed-size tuner: a worker takes an activity task
// from the server only when it has a free slot, so activities beyond n
// wait on the task queue (where any other worker may take them, and only
// their schedule-to-close timeout runs) instead of inside the process for
// a database connection, with their start-to-close timeout running. Size n to the
// pool (config.ReservedConns). Workflow tasks, which touch no database,
// keep the SDK's default slots; the archiver runs no local activities.
func WithActivitySlots(n int) WorkerOption {
	return func(o *worker.Options) {
		if n <= 0 {
			return
		}
		// Only a non-positive size fails, and n is positive.
		tuner, err := worker.NewFixedSizeTuner(worker.FixedSizeTunerOptions{NumActivitySlots: n})
		if err == nil {
			o.Tuner = tuner
		}
	}
}

// WithInterceptors adds worker interceptors (health.InFlight).
func WithInterceptors(list ...interceptor.WorkerInterceptor) WorkerOption {
	return func(o *worker.Options) { o.Interceptors = append(o.Interceptors, list...) }
}

// WithOnFatalError calls f when the worker stops on an error of its own
// (its namespace deleted, say), before it stops.
func WithOnFatalError(f func(error)) WorkerOption {
	return func(o *worker.Options) { o.OnFatalError = f }
}

// NewWorker builds a worker with the archiver's workflows and activities
// registered under readable names. The worker binary and the tests use it,
// so both run exactly what production runs; without options it has the
// SDK's defaults (the tests' in-process workers).
func NewWorker(c client.Client, taskQueue string, acts *activities.Activities, opts ...WorkerOption) worker.Worker {
	var o worker.Options
	for _, opt := range opts {
		opt(&o)
	}
	w := worker.New(c, taskQueue, o)
	w.RegisterWorkflowWithOptions(workflows.ArchiveWorkflow, workflow.RegisterOptions{Name: workflows.ArchiveWorkflowName})
	w.RegisterWorkflowWithOptions(workflows.BackfillWorkflow, workflow.RegisterOptions{Name: workflows.BackfillWorkflowName})
	w.RegisterWorkflowWithOptions(workflows.RestoreWorkflow, workflow.RegisterOptions{Name: workflows.RestoreWorkflowName})
	w.RegisterWorkflowWithOptions(workflows.VerifyWorkflow, workflow.RegisterOptions{Name: workflows.VerifyWorkflowName})
	w.RegisterActivityWithOptions(acts, activity.RegisterOptions{})
	return w
}
