//go:build faults

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"

	"go.temporal.io/sdk/activity"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/objectstore"
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
// and, without killing it:
//
//   - ARCHIVER_FAULT_CORRUPT_UPLOAD=N: right after its N-th export upload,
//     one byte in the middle of the object is changed on S3, its size and
//     metadata (the recorded SHA-256) kept: what only reading the object
//     back can tell.
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
	killN, corruptN := envN("ARCHIVER_FAULT_KILL_AFTER_EXPORT_STEP"), envN("ARCHIVER_FAULT_CORRUPT_UPLOAD")
	if killN > 0 || corruptN > 0 {
		var steps, uploads atomic.Int32
		acts.AfterExportStep = func(step, key string) {
			if step == "uploaded" && int(uploads.Add(1)) == corruptN {
				corruptUpload(acts, key)
			}
			if int(steps.Add(1)) == killN {
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

// corruptUpload changes one byte of the object the upload just wrote,
// keeping its size and metadata. (Not "the newest manifest still
// uploading": with two exports at once that could be the other one, read
// back already, and its drop then trusted an object changed after the
// check, which no check can tell.)
func corruptUpload(acts *activities.Activities, key string) {
	ctx := context.Background()
	err := rewrite(ctx, acts.Store, key)
	if err != nil {
		fmt.Fprintf(os.Stderr, "failpoint: could not corrupt the upload: %v\n", err)
		return
	}
	fmt.Fprintf(os.Stderr, "failpoint: corrupted upload %s\n", key)
}

func rewrite(ctx context.Context, store *objectstore.Store, key string) error {
	obj, err := store.Head(ctx, key)
	if err != nil {
		return err
	}
	body, err := store.Get(ctx, key)
	if err != nil {
		return err
	}
	b, err := io.ReadAll(body)
	body.Close()
	if err != nil || len(b) == 0 {
		return fmt.Errorf("read %s: %v (%d bytes)", key, err, len(b))
	}
	b[len(b)/2] ^= 0x55
	_, err = store.Put(ctx, key, bytes.NewReader(b), "application/octet-stream", obj.Metadata)
	return err
}
