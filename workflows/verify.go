package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/policy"
)

// VerifyWorkflowName is the verification workflow's type (the weekly
// verification schedule starts it).
const VerifyWorkflowName = "VerifyWorkflow"

// VerifyRequest is what a verification checks: the entries of Policy (the
// built-in ones when empty); Deep downloads every object.
type VerifyRequest struct {
	Policy []policy.Table `json:",omitempty"`
	Deep   bool           `json:",omitempty"`
}

// VerifyWorkflow runs `starter verify` as a workflow: it fails, with the
// report in the error's details, when any check finds a mismatch, so that
// a failed weekly verification shows in the Web UI and in
// archive_job_failures-style alerting on failed workflows.
func VerifyWorkflow(ctx workflow.Context, in VerifyRequest) (activities.VerifyReport, error) {
	entries := in.Policy
	if len(entries) == 0 {
		for _, t := range policy.Tables {
			if t.Built {
				entries = append(entries, t)
			}
		}
	}
	o := activityOptions
	o.StartToCloseTimeout = 6 * time.Hour
	o.ScheduleToCloseTimeout = 12 * time.Hour
	o.HeartbeatTimeout = 30 * time.Minute
	ctx = workflow.WithActivityOptions(ctx, o)
	var rep activities.VerifyReport
	vctx := summarized(ctx, "%s", VerifySummary(VerifyRequest{Policy: entries, Deep: in.Deep}))
	if err := workflow.ExecuteActivity(vctx, a.Verify, activities.VerifyInput{Entries: entries, Deep: in.Deep}).Get(ctx, &rep); err != nil {
		return rep, err
	}
	if rep.Failed() {
		n := 0
		for _, c := range rep.Checks {
			n += int(c.Items - c.OK)
		}
		return rep, temporal.NewNonRetryableApplicationError(fmt.Sprintf("verify found %d mismatches (see the details, or run `starter verify`)", n), "VerifyMismatch", nil, rep)
	}
	return rep, nil
}
