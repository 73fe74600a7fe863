package activities_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/testsuite"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/testenv"
)

// TestLogicalSlotHoldsBatches: a logical replication slot that retains more
// WAL than ARCHIVE_MAX_SLOT_RETAINED_BYTES holds a batch back until its
// consumer advances it, and goes once it is dropped; a draining worker gives
// up at once.
func TestLogicalSlotHoldsBatches(t *testing.T) {
	t.Parallel()
	admin, workerPool, _ := testenv.LogicalDB(t)
	ctx := context.Background()
	acts := &activities.Activities{DB: workerPool, MaxSlotRetained: 1 << 20, ReplicaPoll: 50 * time.Millisecond}
	jobID := uuid.NewString()
	if _, err := acts.StartJob(ctx, activities.StartJobInput{JobID: jobID, Table: "logs", WorkflowID: "wf-test", RunID: "run-test", AsOf: asOf, Cutoff: cutoff}); err != nil {
		t.Fatal(err)
	}
	testenv.InsertLogs(t, admin, testenv.SpreadTimes(100, cutoff, time.Hour))
	if _, err := acts.EnsurePartitions(ctx, activities.EnsurePartitionsInput{Table: "logs", Cutoff: cutoff}); err != nil {
		t.Fatal(err)
	}
	slot := "t_slot_" + testenv.RandomID()
	if _, err := admin.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, slot); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = admin.Exec(context.Background(), `SELECT pg_drop_replication_slot($1)`, slot) })
	// 2 MB of WAL past the slot's position: more than the 1 MiB limit.
	if _, err := admin.Exec(ctx, `SELECT pg_logical_emit_message(true, 'archiver-test', repeat('x', 2000000))`); err != nil {
		t.Fatal(err)
	}
	batch := func() activities.MoveBatchInput {
		return activities.MoveBatchInput{Table: "logs", JobID: jobID, BatchID: uuid.NewString(), Cutoff: cutoff, Limit: 1000}
	}

	// A draining worker does not wait: the batch fails at once, unbegun.
	var suite testsuite.WorkflowTestSuite
	stopEnv := suite.NewTestActivityEnvironment()
	stopEnv.RegisterActivity(acts)
	stop := make(chan struct{})
	close(stop)
	stopEnv.SetWorkerStopChannel(stop)
	if _, err := stopEnv.ExecuteActivity(acts.MoveBatch, batch()); err == nil || !strings.Contains(err.Error(), "waited for a logical replication slot") {
		t.Fatalf("a batch on a stopping worker behind a slot: %v, want it to give up", err)
	}

	// The batch waits: it has read the slots (its session's last query, as
	// pg_stat_activity shows it) and moved nothing. Then the consumer
	// catches up (the slot is advanced to the current WAL position) and
	// the batch goes.
	var workerRole string
	if err := workerPool.QueryRow(ctx, `SELECT current_user`).Scan(&workerRole); err != nil {
		t.Fatal(err)
	}
	type outcome struct {
		res activities.MoveBatchResult
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := acts.MoveBatch(ctx, batch())
		done <- outcome{res, err}
	}()
	retained := int64(0)
	for seen := false; !seen; {
		select {
		case o := <-done:
			t.Fatalf("the batch did not wait for the slot: %+v, %v", o.res, o.err)
		case <-time.After(20 * time.Millisecond): // poll the server for the waiting session
		}
		n := testenv.Count(t, admin, `SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND query LIKE '%FROM pg_replication_slots%'`, workerRole)
		seen = n > 0
	}
	if err := admin.QueryRow(ctx, `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&retained); err != nil {
		t.Fatal(err)
	}
	if n := testenv.Count(t, admin, `SELECT count(*) FROM scenario_logs_archive`); n != 0 || retained < 2000000 {
		t.Fatalf("while the slot retains %d bytes (limit 1 MiB), %d rows were archived: want at least 2 MB retained and none archived", retained, n)
	}
	if _, err := admin.Exec(ctx, `SELECT pg_replication_slot_advance($1, pg_current_wal_lsn())`, slot); err != nil {
		t.Fatalf("advance the slot: %v", err)
	}
	var o outcome
	select {
	case o = <-done:
	case <-time.After(time.Minute):
		t.Fatal("the batch still waits a minute after the slot was advanced")
	}
	if o.err != nil || o.res.RowsMoved != 100 || o.res.ReplicaWaitMillis <= 0 {
		t.Fatalf("batch %+v, %v: want its 100 rows moved after a wait", o.res, o.err)
	}
	t.Logf("waited %d ms on %s (%d bytes retained, limit %d), then moved %d rows", o.res.ReplicaWaitMillis, slot, retained, 1<<20, o.res.RowsMoved)

	// Dropped slot, nothing held: another eligible row moves at once.
	if _, err := admin.Exec(ctx, `SELECT pg_logical_emit_message(true, 'archiver-test', repeat('x', 2000000))`); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, slot); err != nil {
		t.Fatal(err)
	}
	testenv.InsertLogs(t, admin, testenv.SpreadTimes(5, cutoff, time.Hour))
	res2, err := acts.MoveBatch(ctx, batch())
	if err != nil || res2.RowsMoved != 5 {
		t.Fatalf("after the slot was dropped: %+v, %v; want 5 rows moved", res2, err)
	}
}
