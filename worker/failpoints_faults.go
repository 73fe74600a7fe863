//go:build faults

package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"

	"go.temporal.io/sdk/activity"

	"github.com/mockupaws/archiver/activities"
)

// installFailpoints, in the worker the fault tests build (-tags faults),
// makes the process SIGKILL itself at a chosen point, so that a test can
// stop the worker exactly there:
//
//   - ARCHIVER_FAULT_KILL_AFTER_EXCHANGE_STEP=N: right after its N-th
//     partition-exchange DDL step;
//   - ARCHIVER_FAULT_KILL_AFTER_EXPORT_STEP=N: right after its N-th step of
//     a partition's export before retention drops it (manifest, uploaded,
//     verified, dropped);
//   - ARCHIVER_FAULT_KILL_AFTER_RESTORE_BATCH=N: right after the commit of
//     its N-th restore batch (a RestoreBatch, RestoreExport or RestoreFiles
//     activity: the ledger rows of kind 'restore'), before the activity
//     answers. Archive batches, which share the AfterCommit hook, are not
//     counted.
//   - ARCHIVER_FAULT_KILL_AFTER_BATCH=N: right after the commit of its N-th
//     archive batch (MoveBatch, local or not, or an offloaded file's row:
//     FinalizeReport, before its file is removed), before it answers.
//
// Each line the process writes before it dies starts "failpoint: killed
// after", for the test to read where.
func installFailpoints(acts *activities.Activities) {
	if n := envN("ARCHIVER_FAULT_KILL_AFTER_EXCHANGE_STEP"); n > 0 {
		var steps atomic.Int32
		acts.AfterExchangeStep = func(step string) {
			if int(steps.Add(1)) == n {
				die("exchange step " + step)
			}
		}
	}
	if n := envN("ARCHIVER_FAULT_KILL_AFTER_EXPORT_STEP"); n > 0 {
		var steps atomic.Int32
		acts.AfterExportStep = func(step string) {
			if int(steps.Add(1)) == n {
				die("export step " + step)
			}
		}
	}
	restoreN, batchN := envN("ARCHIVER_FAULT_KILL_AFTER_RESTORE_BATCH"), envN("ARCHIVER_FAULT_KILL_AFTER_BATCH")
	if restoreN > 0 || batchN > 0 {
		var restores, batches atomic.Int32
		acts.AfterCommit = func(ctx context.Context, res activities.MoveBatchResult) error {
			if !activity.IsActivity(ctx) || res.Replayed {
				return nil // a replayed batch committed nothing now
			}
			switch kind := activity.GetInfo(ctx).ActivityType.Name; kind {
			case "RestoreBatch", "RestoreExport", "RestoreFiles":
				if int(restores.Add(1)) == restoreN {
					die(fmt.Sprintf("restore batch %s (%s, %d rows)", res.BatchID, kind, res.RowsMoved))
				}
			case "MoveBatch", "FinalizeReport":
				if int(batches.Add(1)) == batchN {
					die(fmt.Sprintf("archive batch %s (%d rows)", res.BatchID, res.RowsMoved))
				}
			}
			return nil
		}
	}
}

func envN(name string) int {
	n, _ := strconv.Atoi(os.Getenv(name))
	return n
}

// die ends the process at once: no deferred function, no drain, no answer
// to Temporal.
func die(where string) {
	fmt.Fprintf(os.Stderr, "failpoint: killed after %s\n", where)
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is on its way
}
