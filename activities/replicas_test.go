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

// The dev stack's replica applies WAL 3 s late, so a write on the primary
// shows up as real replay lag in pg_stat_replication. The test makes the
// replica (stack.sh replica-up) and removes it when it ends.
func TestReplicaLagHoldsBatches(t *testing.T) {
	b := setup(t)
	testenv.Stack(t, "replica-up")
	t.Cleanup(func() { testenv.Stack(t, "replica-down") })
	ctx := context.Background()
	testenv.InsertLogs(t, b.db, testenv.SpreadTimes(100, cutoff, time.Hour))
	b.ensure(t)

	// Wait until the replica's delayed replay shows as lag above 1 s: the
	// inserts above are WAL it applies 3 s late.
	lagging := func() {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			var lag float64
			if err := b.db.QueryRow(ctx, `SELECT COALESCE(max(EXTRACT(epoch FROM replay_lag)), 0)::float8 FROM pg_stat_replication`).Scan(&lag); err != nil {
				t.Fatal(err)
			}
			if lag > 1 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("the replica never showed replay lag above 1 s")
			}
			// Keep WAL flowing so that lag is measured.
			if _, err := b.db.Exec(ctx, `SELECT txid_current()`); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	lagging()

	// Lag above the limit: the batch holds (given 1.5 s, it gives up
	// having moved nothing).
	b.acts.MaxReplicaLag, b.acts.ReplicaPoll = time.Second, 100*time.Millisecond
	hold, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	_, err := b.acts.MoveBatch(hold, activities.MoveBatchInput{Table: "logs", JobID: b.jobID, BatchID: uuid.NewString(), Cutoff: cutoff, Limit: 1000})
	if err == nil {
		t.Fatal("the batch ran while the replica lagged more than the limit")
	}
	if n := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_logs`); n != 100 {
		t.Fatalf("%d live rows left, want all 100: the held batch moved rows", n)
	}
	// A worker told to stop does not wait out the lag: the batch fails at
	// once, having moved nothing, and is retried elsewhere.
	lagging()
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	env.RegisterActivity(b.acts)
	stop := make(chan struct{})
	close(stop)
	env.SetWorkerStopChannel(stop)
	began := time.Now()
	_, err = env.ExecuteActivity(b.acts.MoveBatch, activities.MoveBatchInput{Table: "logs", JobID: b.jobID, BatchID: uuid.NewString(), Cutoff: cutoff, Limit: 1000})
	if err == nil || !strings.Contains(err.Error(), "the worker is stopping") {
		t.Fatalf("a batch waiting for replicas on a stopping worker: %v, want it to give up", err)
	}
	if waited := time.Since(began); waited > 5*time.Second {
		t.Fatalf("it gave up after %v, want at once", waited)
	}
	if n := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_logs`); n != 100 {
		t.Fatalf("%d live rows left, want all 100", n)
	}
	// A limit above the lag: the batch goes at once.
	b.acts.MaxReplicaLag = time.Hour
	res, err := b.acts.MoveBatch(ctx, activities.MoveBatchInput{Table: "logs", JobID: b.jobID, BatchID: uuid.NewString(), Cutoff: cutoff, Limit: 1000})
	if err != nil || res.RowsMoved != 100 {
		t.Fatalf("with the lag under the limit: %+v, %v", res, err)
	}
}
