package workflows

import (
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/workflow"

	"github.com/mockupaws/archiver/activities"
)

// reportConcurrency is how many reports of a page are in flight at once.
const reportConcurrency = 4

// archiveReports offloads eligible reports page by page (ids only in the
// history). Each report goes Upload -> Finalize -> RemoveLocalFile, each step
// idempotent on the report's batch id, so a retry or a rerun finishes what a
// crash interrupted. A report that fails is counted and reported; the others
// go on, and the table fails at the end.
func (b *branch) archiveReports(ctx workflow.Context) error {
	r := b.result
	page := activities.ListReportsInput{Cutoff: r.Cutoff, After: b.window(), Limit: b.limit(), Table: b.table.Name, Entry: b.entry()}
	if r.Cursor != nil {
		page = *r.Cursor // continued run: resume after the last page done
	} else {
		// Removals a crash interrupted in an earlier run come first.
		var pending activities.CompleteRemovalsResult
		if err := workflow.ExecuteActivity(summarized(ctx, "%s: finish file removals a crash interrupted (up to 1,000)", b.table.Name), a.CompleteRemovals, activities.CompleteRemovalsInput{Limit: 1000, Table: b.table.Name, Entry: b.entry()}).Get(ctx, &pending); err != nil {
			return err
		}
		var parts activities.EnsurePartitionsResult
		if err := workflow.ExecuteActivity(summarized(ctx, "%s partitions for %s", b.table.Name, span(b.window(), r.Cutoff)), a.EnsurePartitions, activities.EnsurePartitionsInput{Table: b.table.Name, Entry: b.entry(), Cutoff: r.Cutoff, After: b.window()}).Get(ctx, &parts); err != nil {
			return err
		}
		r.PartitionsCreated = len(parts.Created)
		r.Oldest = parts.Oldest
	}

	var failures []string
	if r.Error != "" {
		failures = append(failures, r.Error)
	}
	for {
		ok, err := b.proceed(ctx)
		if err != nil {
			return err
		}
		if !ok && r.StoppedAtDeadline {
			break
		}
		if !ok {
			r.Cursor = &page
			if len(failures) > 0 {
				r.Error = strings.Join(failures, "; ")
			}
			return nil
		}
		var list activities.ListReportsResult
		from := page.After
		if page.AfterTime != nil {
			from = *page.AfterTime
		} else if r.Oldest != nil && r.Oldest.After(from) {
			from = *r.Oldest
		}
		lctx := summarized(ctx, "%s page %s, up to %s files", b.table.Name, span(from, page.Cutoff), thousands(int64(page.Limit)))
		if err := workflow.ExecuteActivity(lctx, a.ListReports, page).Get(ctx, &list); err != nil {
			return err
		}
		errs := b.reportPage(ctx, list.IDs)
		for _, e := range errs {
			r.Failures++
			if len(failures) < 3 {
				failures = append(failures, e)
			}
		}
		if r.StoppedAtDeadline {
			break // the page's reports not begun wait for the next run
		}
		if list.NextTime != nil {
			r.Reached = list.NextTime
		}
		if !list.More {
			break
		}
		page.AfterTime, page.AfterID = list.NextTime, list.NextID
	}
	if r.Failures > 0 {
		return fmt.Errorf("%d report(s) failed, nothing deleted for them: %s", r.Failures, strings.Join(failures, "; "))
	}
	return nil
}

// reportPage archives one page of reports, a few at a time, and returns the
// errors of those that failed.
func (b *branch) reportPage(ctx workflow.Context, ids []string) []string {
	errs := make([]string, len(ids))
	sem := workflow.NewSemaphore(ctx, reportConcurrency)
	wg := workflow.NewWaitGroup(ctx)
	for i, id := range ids {
		if err := sem.Acquire(ctx, 1); err != nil {
			errs[i] = err.Error()
			continue
		}
		if b.atDeadline(ctx) {
			sem.Release(1)
			break // reports not begun wait for the next run
		}
		wg.Add(1)
		workflow.Go(ctx, func(ctx workflow.Context) {
			defer wg.Done()
			defer sem.Release(1)
			if err := b.archiveReport(ctx, id); err != nil {
				errs[i] = "report " + id + ": " + errorMessage(err)
			}
		})
	}
	wg.Wait(ctx)
	var out []string
	for _, e := range errs {
		if e != "" {
			out = append(out, e)
		}
	}
	return out
}

// uploadOptions give an upload time for a large file, and a heartbeat
// timeout so that a lost worker's upload is retried within a minute.
func uploadOptions(ctx workflow.Context) workflow.ActivityOptions {
	o := workflow.GetActivityOptions(ctx)
	o.StartToCloseTimeout = 2 * time.Hour
	o.HeartbeatTimeout = time.Minute
	o.ScheduleToCloseTimeout = 6 * time.Hour
	return o
}

func (b *branch) archiveReport(ctx workflow.Context, id string) error {
	r := b.result
	batchID := runUUID(workflow.GetInfo(ctx), b.table.Name, "report-"+id).String()
	var up activities.UploadReportResult
	uctx := summarized(workflow.WithActivityOptions(ctx, uploadOptions(ctx)), "%s upload file of %s", b.table.Name, id)
	if err := workflow.ExecuteActivity(uctx, a.UploadReport, activities.UploadReportInput{ReportID: id, Table: b.table.Name, Entry: b.entry()}).Get(ctx, &up); err != nil {
		return err
	}
	if up.AlreadyArchived {
		return nil // another run finalized it; its removal is CompleteRemovals' job
	}
	var fin activities.FinalizeReportResult
	err := workflow.ExecuteActivity(summarized(ctx, "%s move row of %s to %s", b.table.Name, id, b.table.Archive), a.FinalizeReport, activities.FinalizeReportInput{
		ReportID: id, JobID: r.JobID, BatchID: batchID, Object: up.Object, Table: b.table.Name, Entry: b.entry(),
	}).Get(ctx, &fin)
	if err != nil {
		return err
	}
	r.Batches++
	r.RowsArchived += fin.RowsMoved
	r.RowsDeleted += fin.RowsMoved
	r.Bytes += fin.Bytes
	return workflow.ExecuteActivity(summarized(ctx, "%s remove local file of %s", b.table.Name, id), a.RemoveReportFile, activities.RemoveReportFileInput{ReportID: id, Table: b.table.Name, Entry: b.entry()}).Get(ctx, nil)
}
