package activities_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/policy"
	"github.com/mockupaws/archiver/internal/testenv"
)

// TestLoadControllerRestsAndResumes: with an application's load on the
// server (24 pgbench sessions each running a statement) past --max-load, a
// batch rests, then returns without running when the load stays; past
// --critical-load it does not run and names the signal that stops the run.
// Once the load is gone the same batch runs without a rest. The thresholds
// sit well above what the other tests of make test add to the server.
func TestLoadControllerRestsAndResumes(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	testenv.InsertLogs(t, b.db, testenv.SpreadTimes(100, cutoff, time.Hour))
	b.ensure(t)
	maxLoad, critical := &policy.Load{Active: 20}, &policy.Load{Active: 20}
	batch := func(in activities.MoveBatchInput) activities.MoveBatchResult {
		t.Helper()
		in.Table, in.JobID, in.BatchID, in.Cutoff, in.Limit = "logs", b.jobID, uuid.NewString(), cutoff, 1000
		res, err := b.acts.MoveBatch(ctx, in)
		if err != nil {
			t.Fatalf("MoveBatch: %v", err)
		}
		return res
	}

	load := testenv.StartAppLoad(t, b.db, b.url, 24)
	began := time.Now()
	res := batch(activities.MoveBatchInput{MaxLoad: maxLoad})
	if !res.LoadSkipped || res.RowsMoved != 0 || !strings.HasPrefix(res.Load, "active ") || res.StoppedAtLoad != "" {
		t.Fatalf("under a load past --max-load the batch returned %+v, want it skipped, having moved nothing, naming the active sessions", res)
	}
	if rested := time.Duration(res.LoadRestMillis) * time.Millisecond; rested < time.Second || time.Since(began) < rested {
		t.Fatalf("the batch rested %v (returned after %v), want the controller's rest of about 2 s", rested, time.Since(began))
	}
	res = batch(activities.MoveBatchInput{MaxLoad: maxLoad, CriticalLoad: critical})
	if !strings.HasPrefix(res.StoppedAtLoad, "active ") || !res.LoadSkipped || res.RowsMoved != 0 {
		t.Fatalf("under a load past --critical-load the batch returned %+v, want it stopped, having moved nothing", res)
	}
	if n := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_logs`); n != 100 {
		t.Fatalf("%d live rows left, want all 100: a batch moved rows under the load", n)
	}

	// Once the load is gone the batch runs: it may rest while the last
	// second's average falls, not longer. Then the critical load no
	// longer stops a batch either.
	load.Stop(t)
	res = batch(activities.MoveBatchInput{MaxLoad: maxLoad})
	if res.LoadSkipped || res.StoppedAtLoad != "" || res.RowsMoved != 100 {
		t.Fatalf("with the load gone the batch returned %+v, want all 100 rows moved", res)
	}
	if res = batch(activities.MoveBatchInput{MaxLoad: maxLoad, CriticalLoad: critical}); res.StoppedAtLoad != "" || res.LoadSkipped {
		t.Fatalf("with the load gone a batch under --critical-load returned %+v, want it run", res)
	}
}

// TestLoadControllerNeedsToSeeSessions: a worker role that cannot read
// other roles' sessions (no pg_monitor) would read an idle server whatever
// the load: a batch with --max-load fails at once, saying what to grant.
// The role is the test's own (roles are the cluster's: the shared worker
// role keeps its grants).
func TestLoadControllerNeedsToSeeSessions(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	role, pw := "blind_"+testenv.RandomID(), testenv.RandomID()
	if _, err := b.db.Exec(ctx, fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD '%s'`, role, pw)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := b.db.Exec(context.Background(), `DROP ROLE `+role); err != nil {
			t.Error(err)
		}
	})
	u, err := url.Parse(b.url)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(role, pw)
	acts := &activities.Activities{DB: testenv.Pool(t, u.String())}
	_, err = acts.MoveBatch(ctx, activities.MoveBatchInput{Table: "logs", JobID: b.jobID, BatchID: uuid.NewString(), Cutoff: cutoff, Limit: 1000,
		MaxLoad: &policy.Load{Active: 8}})
	if err == nil || !strings.Contains(err.Error(), "pg_monitor") {
		t.Fatalf("a batch with --max-load on a role blind to other sessions: %v, want an error naming pg_monitor", err)
	}
	assertNonRetryable(t, err)
}
