package main

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/workflows"
)

// TestWorkerVersioning: two builds of the real worker, A and B, as
// versions of one Worker Deployment (the test's own name and task queue
// on the shared dev server). A is made current with the CLI command of
// docs/deploying.md; a nightly run (ArchiveWorkflow, Pinned) starts on A and
// holds in its first batch; the backfill workflow (AutoUpgrade) waits
// idle on A. Then B starts and becomes current: a new run goes to B, the
// backfill workflow's next task runs on B, and the pinned run stays on A
// and finishes there, every workflow task of its history completed by A.
func TestWorkerVersioning(t *testing.T) {
	ctx := context.Background()
	env := testenv.Load(t)
	bin := os.Getenv("ARCHIVER_TEMPORAL_BIN")
	if bin == "" {
		if os.Getenv("ARCHIVER_REQUIRE_STACK") != "" {
			t.Fatal("ARCHIVER_TEMPORAL_BIN is not set: the dev stack's environment (.dev/env) names the Temporal CLI")
		}
		t.Skip("ARCHIVER_TEMPORAL_BIN is not set")
	}
	admin, dbURL := testenv.NewDB(t)
	testenv.InsertLogs(t, admin, testenv.SpreadTimes(drainRows, cutoff, time.Hour))
	c := testenv.Temporal(t)
	workerURL := testenv.WorkerURL(t, dbURL)
	id := testenv.RandomID()
	queue, deployment := "versioning-"+id, "archiver-test-"+id
	buildA, buildB := "a-"+id, "b-"+id
	cli := func(args ...string) string {
		t.Helper()
		args = append(args, "--address", env.TemporalAddress, "--namespace", env.Namespace, "--command-timeout", "20s")
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("temporal %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	dh := c.WorkerDeploymentClient().GetHandle(deployment)
	// setCurrent waits for the build's workers to poll both of the task
	// queue's types (the server refuses a current version that would leave
	// a polled queue unversioned), then makes it current as an operator
	// would.
	setCurrent := func(build string) {
		t.Helper()
		waitFor(t, 30*time.Second, "version "+build+" polling "+queue, func() bool {
			d, err := dh.DescribeVersion(ctx, client.WorkerDeploymentDescribeVersionOptions{BuildID: build})
			if err != nil {
				return false
			}
			polled := 0
			for _, tq := range d.Info.TaskQueuesInfos {
				if tq.Name == queue && (tq.Type == client.TaskQueueTypeWorkflow || tq.Type == client.TaskQueueTypeActivity) {
					polled++
				}
			}
			return polled == 2
		})
		cli("worker", "deployment", "set-current-version", "--deployment-name", deployment, "--build-id", build, "--yes")
		d, err := dh.Describe(ctx, client.WorkerDeploymentDescribeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if cur := d.Info.RoutingConfig.CurrentVersion; cur == nil || cur.BuildID != build {
			t.Fatalf("after set-current-version %s the deployment's current version is %+v", build, cur)
		}
	}
	// versionOf is the build a workflow runs on and its behaviour, as
	// DescribeWorkflowExecution reports them.
	versionOf := func(wid string) (string, enumspb.VersioningBehavior) {
		t.Helper()
		desc, err := c.DescribeWorkflowExecution(ctx, wid, "")
		if err != nil {
			t.Fatal(err)
		}
		vi := desc.GetWorkflowExecutionInfo().GetVersioningInfo()
		if vi.GetDeploymentVersion().GetDeploymentName() != "" && vi.GetDeploymentVersion().GetDeploymentName() != deployment {
			t.Fatalf("%s runs on deployment %q, want %q", wid, vi.GetDeploymentVersion().GetDeploymentName(), deployment)
		}
		return vi.GetDeploymentVersion().GetBuildId(), vi.GetBehavior()
	}
	waitVersion := func(wid, build string, behavior enumspb.VersioningBehavior) {
		t.Helper()
		var got string
		var gotB enumspb.VersioningBehavior
		waitFor(t, 30*time.Second, wid+" on "+build+" "+behavior.String(), func() bool {
			got, gotB = versionOf(wid)
			return got == build && gotB == behavior
		})
	}

	// The test holds a SHARE lock on scenario_logs: the pinned run's first
	// batch waits on it (as in the drain tests), so the run is in flight
	// across the switch.
	lock, err := admin.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lock.Rollback(ctx) })
	if _, err := lock.Exec(ctx, `LOCK TABLE scenario_logs IN SHARE MODE`); err != nil {
		t.Fatal(err)
	}

	a := startWorker(t, workerURL, queue, "ARCHIVE_WORKER_DEPLOYMENT="+deployment, "ARCHIVE_WORKER_BUILD_ID="+buildA)
	var m map[string]any
	waitFor(t, 30*time.Second, "worker A started", func() bool {
		if a.exited() {
			t.Fatalf("worker A exited: %v\n%s", a.err, a.out.String())
		}
		m = a.logLine("worker started")
		return m != nil
	})
	if m["deployment"] != deployment || m["build_id"] != buildA {
		t.Fatalf("worker A's start line %v, want deployment %s build_id %s", m, deployment, buildA)
	}
	// Until an operator sets one, the deployment has no current version:
	// its workers get no task of a new workflow (docs/deploying.md: versioning is off
	// unless ARCHIVE_WORKER_DEPLOYMENT is set, for this reason).
	waitFor(t, 30*time.Second, "deployment "+deployment+" known to the server", func() bool {
		_, err := dh.Describe(ctx, client.WorkerDeploymentDescribeOptions{})
		return err == nil
	})
	if d, err := dh.Describe(ctx, client.WorkerDeploymentDescribeOptions{}); err != nil || d.Info.RoutingConfig.CurrentVersion != nil {
		t.Fatalf("a new deployment's current version: %+v (%v), want none", d.Info.RoutingConfig.CurrentVersion, err)
	}
	setCurrent(buildA)

	pinned, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "versioning-pinned-" + id, TaskQueue: queue},
		workflows.ArchiveWorkflowName, workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf,
			BatchSize: drainBatch, MinBatch: drainBatch, MaxBatch: drainBatch, ActivityTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	auto, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "versioning-backfill-" + id, TaskQueue: queue},
		workflows.BackfillWorkflowName, workflows.BackfillState{IdleTimeout: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.TerminateWorkflow(context.Background(), auto.GetID(), "", "test over") })
	waitFor(t, 30*time.Second, "the pinned run's first MoveBatch waiting on the test's lock", func() bool {
		return testenv.Count(t, admin, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE ONLY%'`) == 1
	})
	waitVersion(pinned.GetID(), buildA, enumspb.VERSIONING_BEHAVIOR_PINNED)
	waitVersion(auto.GetID(), buildA, enumspb.VERSIONING_BEHAVIOR_AUTO_UPGRADE)

	// Build B rolls out.
	b := startWorker(t, workerURL, queue, "ARCHIVE_WORKER_DEPLOYMENT="+deployment, "ARCHIVE_WORKER_BUILD_ID="+buildB)
	waitFor(t, 30*time.Second, "worker B started", func() bool { return b.logLine("worker started") != nil })
	setCurrent(buildB)

	// A new run goes to B (a dry run: it reads past the test's lock).
	fresh, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "versioning-new-" + id, TaskQueue: queue},
		workflows.ArchiveWorkflowName, workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	var dry workflows.ArchiveResult
	if err := testenv.Wait(t, c, fresh, time.Minute, &dry); err != nil {
		t.Fatalf("the new run: %v\nworker B:\n%s", err, b.out.String())
	}
	if build, behavior := versionOf(fresh.GetID()); build != buildB || behavior != enumspb.VERSIONING_BEHAVIOR_PINNED {
		t.Fatalf("the run started after the switch ran on %q (%s), want %s pinned", build, behavior, buildB)
	}
	if len(dry.Tables) != 1 || dry.Tables[0].Preview == nil || dry.Tables[0].Preview.Rows != drainRows {
		t.Fatalf("the new run's dry run: %+v, want %d eligible rows", dry.Tables, drainRows)
	}

	// The backfill workflow's next task (a request, refused: table
	// unknown) runs on B.
	if err := c.SignalWorkflow(ctx, auto.GetID(), "", workflows.SignalBackfill, workflows.BackfillRequest{Table: "no_such_table", Before: asOf}); err != nil {
		t.Fatal(err)
	}
	waitVersion(auto.GetID(), buildB, enumspb.VERSIONING_BEHAVIOR_AUTO_UPGRADE)
	q, err := c.QueryWorkflow(ctx, auto.GetID(), "", workflows.BackfillQuery)
	if err != nil {
		t.Fatal(err)
	}
	var state workflows.BackfillState
	if err := q.Get(&state); err != nil || len(state.Refused) != 1 {
		t.Fatalf("the backfill workflow's state after the request: %+v (%v), want one refusal", state, err)
	}

	// The pinned run is still A's, and finishes there once its batch can.
	if build, _ := versionOf(pinned.GetID()); build != buildA {
		t.Fatalf("the pinned run moved to %q after B became current", build)
	}
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	var res workflows.ArchiveResult
	if err := testenv.Wait(t, c, pinned, 2*time.Minute, &res); err != nil {
		t.Fatalf("the pinned run: %v\nworker A:\n%s", err, a.out.String())
	}
	if res.Tables[0].RowsArchived != drainRows {
		t.Fatalf("the pinned run archived %d rows, want %d", res.Tables[0].RowsArchived, drainRows)
	}
	if build, behavior := versionOf(pinned.GetID()); build != buildA || behavior != enumspb.VERSIONING_BEHAVIOR_PINNED {
		t.Fatalf("the finished pinned run is on %q (%s), want %s pinned", build, behavior, buildA)
	}
	tasks := 0
	it := c.GetWorkflowHistory(ctx, pinned.GetID(), pinned.GetRunID(), false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		if attrs := ev.GetWorkflowTaskCompletedEventAttributes(); attrs != nil {
			tasks++
			if got := attrs.GetDeploymentVersion().GetBuildId(); got != buildA {
				t.Fatalf("the pinned run's workflow task %d was completed by build %q, want %s", ev.GetEventId(), got, buildA)
			}
		}
	}
	if tasks < 3 {
		t.Fatalf("the pinned run's history has %d completed workflow tasks; want the ones before and after the switch", tasks)
	}

	// What an operator watches before stopping A's workers.
	out := cli("worker", "deployment", "describe-version", "--deployment-name", deployment, "--build-id", buildA)
	t.Logf("describe-version %s after the switch:\n%s", buildA, out)
	if !strings.Contains(out, "Drain") {
		t.Fatalf("describe-version of the old build shows no drainage status:\n%s", out)
	}
}
