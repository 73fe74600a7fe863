package temporalclient

import (
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/workflows"
)

// NewWorker builds a worker with the archiver's workflows and activities
// registered under readable names. The worker binary and the tests use it,
// so both run exactly what production runs.
func NewWorker(c client.Client, taskQueue string, acts *activities.Activities) worker.Worker {
	w := worker.New(c, taskQueue, worker.Options{})
	w.RegisterWorkflowWithOptions(workflows.ArchiveWorkflow, workflow.RegisterOptions{Name: workflows.ArchiveWorkflowName})
	w.RegisterWorkflowWithOptions(workflows.BackfillWorkflow, workflow.RegisterOptions{Name: workflows.BackfillWorkflowName})
	w.RegisterWorkflowWithOptions(workflows.RestoreWorkflow, workflow.RegisterOptions{Name: workflows.RestoreWorkflowName})
	w.RegisterWorkflowWithOptions(workflows.VerifyWorkflow, workflow.RegisterOptions{Name: workflows.VerifyWorkflowName})
	w.RegisterActivityWithOptions(acts, activity.RegisterOptions{})
	return w
}
