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
// keep the SDK's default slots. Local activities (the batches of a run,
// changeLocalBatches in package workflows) have n slots of their own: a
// supplier shared with activities would lose the slots its idle pollers
// reserve. They are as many as the batch loops of the runs the worker
// holds (one per table, or --parallel), so at most that many may briefly
// wait for a connection while n activities hold the pool.
func WithActivitySlots(n int) WorkerOption {
	return func(o *worker.Options) {
		if n <= 0 {
			return
		}
		// Only a non-positive size fails, and n is positive.
		tuner, err := worker.NewFixedSizeTuner(worker.FixedSizeTunerOptions{NumActivitySlots: n, NumLocalActivitySlots: n})
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

// WithDeployment makes the worker version buildID of the Worker Deployment
// name (Worker Versioning): it takes only the tasks of workflows that
// started on its version (Pinned) or of AutoUpgrade workflows while its
// version is the deployment's current one, which an operator sets
// (docs/deploying.md). A workflow type registered without
// a behaviour would be Pinned.
func WithDeployment(name, buildID string) WorkerOption {
	return func(o *worker.Options) {
		o.DeploymentOptions = worker.DeploymentOptions{
			UseVersioning:             true,
			Version:                   worker.WorkerDeploymentVersion{DeploymentName: name, BuildID: buildID},
			DefaultVersioningBehavior: workflow.VersioningBehaviorPinned,
		}
	}
}

// Workflows are the workflow types a worker registers, with their
// behaviour under Worker Versioning (ignored by an unversioned worker):
//
//   - ArchiveWorkflow is Pinned: a night's run (and the runs it continues
//     as new into, and a backfill's child runs) finishes on the build it
//     started on; a rollout never changes the code under a run.
//   - BackfillWorkflow is AutoUpgrade: it lives as long as requests keep
//     coming, and pinning it would keep an old build's workers alive for
//     as long; it moves to the current build at its next task, so every
//     change to it stays behind workflow.GetVersion. The runs it starts
//     are ArchiveWorkflows, pinned to the build current when they start.
//   - RestoreWorkflow and VerifyWorkflow are Pinned: bounded runs an
//     operator starts and waits for, like an archive run; the build that
//     planned a restore's windows moves them back.
var Workflows = []struct {
	Name     string
	Fn       any
	Behavior workflow.VersioningBehavior
}{
	{workflows.ArchiveWorkflowName, workflows.ArchiveWorkflow, workflow.VersioningBehaviorPinned},
	{workflows.BackfillWorkflowName, workflows.BackfillWorkflow, workflow.VersioningBehaviorAutoUpgrade},
	{workflows.RestoreWorkflowName, workflows.RestoreWorkflow, workflow.VersioningBehaviorPinned},
	{workflows.VerifyWorkflowName, workflows.VerifyWorkflow, workflow.VersioningBehaviorPinned},
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
	// Innermost (interceptors listed earlier wrap later ones): the others
	// see the error as the workflow will.
	o.Interceptors = append(o.Interceptors, activities.ClassifyErrors())
	w := worker.New(c, taskQueue, o)
	for _, r := range Workflows {
		w.RegisterWorkflowWithOptions(r.Fn, workflow.RegisterOptions{Name: r.Name, VersioningBehavior: r.Behavior})
	}
	w.RegisterActivityWithOptions(acts, activity.RegisterOptions{})
	return w
}
