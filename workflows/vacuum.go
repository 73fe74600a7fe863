package workflows

import (
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/mockupaws/archiver/activities"
)

// vacuumOptions: a VACUUM of a large table takes minutes; the activity
// heartbeats while it runs, so a lost worker's VACUUM is started again
// within a minute. It is maintenance, not the archive: after three attempts
// the branch records the error and goes on.
func vacuumOptions(ctx workflow.Context) workflow.ActivityOptions {
	o := workflow.GetActivityOptions(ctx)
	o.StartToCloseTimeout = 2 * time.Hour
	o.HeartbeatTimeout = time.Minute
	o.ScheduleToCloseTimeout = 6 * time.Hour
	o.RetryPolicy = &temporal.RetryPolicy{
		InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: 30 * time.Second, MaximumAttempts: 3,
		NonRetryableErrorTypes: activities.NonRetryable,
	}
	return o
}

// vacuum runs VACUUM (ANALYZE) on the live table when the worker finds the
// share of rows this job deleted large enough (ARCHIVE_VACUUM_SHARE). Past
// the run's deadline it is not started. Its outcome is recorded, never
// failing the table: the rows moved either way.
func (b *branch) vacuum(ctx workflow.Context) {
	r := b.result
	if b.run.pastDeadline(ctx) {
		r.Vacuum = &activities.VacuumResult{Table: b.table.Live, Skipped: "past the run's deadline"}
		return
	}
	var v activities.VacuumResult
	vctx := summarized(workflow.WithActivityOptions(ctx, vacuumOptions(ctx)), "%s VACUUM (ANALYZE) if this job deleted a large share (%d rows)", b.table.Name, r.RowsDeleted)
	err := workflow.ExecuteActivity(vctx, a.VacuumTable, activities.VacuumInput{
		Table: b.table.Name, Entry: b.entry(), RowsDeleted: r.RowsDeleted,
	}).Get(ctx, &v)
	if err != nil {
		v = activities.VacuumResult{Table: b.table.Live, Error: errorMessage(err)}
	}
	r.Vacuum = &v
}
