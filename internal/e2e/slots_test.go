package e2e

import (
	"context"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/workflows"
)

// TestLogicalSlotHoldsRun: a whole run through the Temporal dev server on a
// wal_level=logical server: while a logical slot's consumer lags more than
// ARCHIVE_MAX_SLOT_RETAINED_BYTES, the run's batch waits and the server
// shows its heartbeat (the slot and its bytes); once the slot is advanced
// the run archives every eligible row.
func TestLogicalSlotHoldsRun(t *testing.T) {
	t.Parallel()
	admin, workerPool, _ := testenv.LogicalDB(t)
	ctx := context.Background()
	c := testenv.Temporal(t)
	queue := testenv.StartWorker(t, c, &activities.Activities{DB: workerPool, MaxSlotRetained: 1 << 20, ReplicaPoll: 100 * time.Millisecond})
	testenv.InsertLogs(t, admin, testenv.SpreadTimes(3000, asOf, 6*time.Hour)) // 750 days: about half eligible
	eligible := testenv.Count(t, admin, `SELECT count(*) FROM scenario_logs WHERE received_at < $1`, asOf.Add(-365*24*time.Hour))
	slot := "t_slot_" + testenv.RandomID()
	if _, err := admin.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, slot); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = admin.Exec(context.Background(), `SELECT pg_drop_replication_slot($1)`, slot) })
	if _, err := admin.Exec(ctx, `SELECT pg_logical_emit_message(true, 'archiver-test', repeat('x', 2000000))`); err != nil {
		t.Fatal(err)
	}
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "e2e-slot-" + testenv.RandomID(), TaskQueue: queue},
		workflows.ArchiveWorkflowName, workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf, BatchSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	// Observe the server until the batch's heartbeat shows the wait.
	var beat activities.SlotWait
	for until := time.Now().Add(time.Minute); beat.Slot == ""; {
		if time.Now().After(until) {
			t.Fatalf("no MoveBatch heartbeat naming the slot within a minute:\n%s", describeRun(c, run))
		}
		d, err := c.DescribeWorkflowExecution(ctx, run.GetID(), run.GetRunID())
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range d.GetPendingActivities() {
			if p.GetActivityType().GetName() == "MoveBatch" && p.GetHeartbeatDetails() != nil {
				if err := converter.GetDefaultDataConverter().FromPayloads(p.GetHeartbeatDetails(), &beat); err != nil {
					t.Fatalf("heartbeat details: %v", err)
				}
			}
		}
		if beat.Slot == "" {
			<-time.After(100 * time.Millisecond) // poll the server again
		}
	}
	if beat.Slot != slot || beat.RetainedBytes < 2000000 || beat.LimitBytes != 1<<20 {
		t.Fatalf("heartbeat %+v, want slot %s with at least 2 MB over a 1 MiB limit", beat, slot)
	}
	if n := testenv.Count(t, admin, `SELECT count(*) FROM scenario_logs_archive`); n != 0 {
		t.Fatalf("%d rows archived while the batch waited on the slot", n)
	}
	if _, err := admin.Exec(ctx, `SELECT pg_replication_slot_advance($1, pg_current_wal_lsn())`, slot); err != nil {
		t.Fatal(err)
	}
	var res workflows.ArchiveResult
	if err := testenv.Wait(t, c, run, testenv.DefaultWait, &res); err != nil {
		t.Fatalf("run: %v", err)
	}
	if n := testenv.Count(t, admin, `SELECT count(*) FROM scenario_logs_archive`); n != eligible || res.Tables[0].RowsArchived != eligible {
		t.Fatalf("archived %d rows (summary %d), want the %d eligible", n, res.Tables[0].RowsArchived, eligible)
	}
	t.Logf("heartbeat while waiting: %+v; then %d rows archived", beat, eligible)
}

func describeRun(c client.Client, run client.WorkflowRun) string {
	d, err := c.DescribeWorkflowExecution(context.Background(), run.GetID(), run.GetRunID())
	if err != nil {
		return err.Error()
	}
	return d.String()
}
