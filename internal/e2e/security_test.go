package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/uuid"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"google.golang.org/protobuf/proto"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/workflows"
)

// history returns every event of every run of a workflow id (the whole
// continue-as-new chain) and of its child workflows, as raw bytes.
func history(t *testing.T, c client.Client, workflowID string) string {
	t.Helper()
	ctx := context.Background()
	resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
		Query: "WorkflowId = '" + workflowID + "' OR ParentWorkflowId = '" + workflowID + "'",
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetExecutions()) == 0 {
		t.Fatalf("no runs of %s in visibility", workflowID)
	}
	var all bytes.Buffer
	for _, e := range resp.GetExecutions() {
		iter := c.GetWorkflowHistory(ctx, e.GetExecution().GetWorkflowId(), e.GetExecution().GetRunId(), false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		for iter.HasNext() {
			ev, err := iter.Next()
			if err != nil {
				t.Fatal(err)
			}
			// Binary protobuf: payload bytes (the JSON of our inputs and
			// results) appear verbatim, where a JSON rendering would base64
			// them and hide a marker.
			b, err := proto.Marshal(ev)
			if err != nil {
				t.Fatal(err)
			}
			all.Write(b)
		}
	}
	return all.String()
}

// No row content reaches Temporal: a marker in message previews, metric
// names, report paths and report contents appears nowhere in the histories
// of a run over all three tables (every run of its continue-as-new chain)
// nor in its progress query.
func TestNoRowContentInPayloads(t *testing.T) {
	b := setup(t)
	dir := t.TempDir()
	b.acts.Store, b.acts.ReportsDir = testenv.Store(t), dir
	ctx := context.Background()
	marker := "MARKER-" + testenv.RandomID()
	if _, err := b.db.Exec(ctx, `UPDATE scenario_logs SET message_preview = $1 || ' ' || message_preview`, marker); err != nil {
		t.Fatal(err)
	}
	samples := testenv.MetricSamples(activities.DayStart(asOf).AddDate(-2, 0, -1), 3, 10)
	for i := range samples {
		samples[i].Name = marker
	}
	testenv.InsertMetrics(t, b.db, samples)
	id := uuid.New()
	testenv.InsertReports(t, b.db, dir, []testenv.Report{{ID: id, Created: asOf.AddDate(-1, 0, 0), Format: "csv",
		File: marker + "/" + marker + ".csv", Content: []byte(strings.Repeat(marker+",1,2\n", 1000))}})

	res, run, err := b.run(t, workflows.ArchiveInput{Tables: []string{"logs", "metrics", "reports"}, AsOf: asOf, BatchSize: 2000, MaxBatch: 2000, MaxBatchesPerRun: 3})
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if res.Runs == 0 {
		t.Fatal("the run did not continue as new: the test means to read a whole chain")
	}
	h := history(t, b.c, run.GetID())
	if strings.Contains(h, marker) {
		i := strings.Index(h, marker)
		t.Fatalf("row content in the workflow history: ...%s...", h[max(0, i-200):min(len(h), i+100)])
	}
	if len(h) < 10000 {
		t.Fatalf("history of %d bytes: suspiciously little was read", len(h))
	}
	// The job id is in every activity input: finding it proves the scan
	// sees payload contents.
	if !strings.Contains(h, res.Tables[0].JobID) {
		t.Fatal("the job id is not found in the history: the scan does not see payloads")
	}
	p, _ := json.Marshal(res)
	if strings.Contains(string(p), marker) {
		t.Fatal("row content in the run's result")
	}
}

// Secrets never reach logs, errors or the history: the real worker and
// starter binaries run with a wrong database password, then a worker runs a
// reports archive against a missing bucket (an S3 error); the database
// password and the AWS secret appear in no output and no history.
func TestSecretsStayOut(t *testing.T) {
	b := setup(t)
	u, _ := url.Parse(b.url)
	dbPassword, _ := u.User.Password()
	awsSecret := os.Getenv("AWS_SECRET_ACCESS_KEY")
	if dbPassword == "" || awsSecret == "" {
		t.Fatal("the dev stack should give a database password and an AWS secret")
	}
	wrong := *u
	wrong.User = url.UserPassword(u.User.Username(), "wrong-"+dbPassword)
	// No metrics endpoint: a worker left by `make run` may hold the port.
	base := append(os.Environ(), "TEMPORAL_NAMESPACE=default", "METRICS_ADDR=")

	var outputs bytes.Buffer
	run := func(name string, env []string, args ...string) {
		cmd := exec.Command(testenv.Binary(t, name), args...)
		cmd.Env = env
		out, _ := cmd.CombinedOutput()
		outputs.Write(out)
	}
	run("starter", append(base, "DATABASE_URL="+wrong.String()), "migrate")
	run("starter", append(base, "DATABASE_URL="+wrong.String()), "status")
	run("worker", append(base, "DATABASE_URL="+wrong.String()))
	if !strings.Contains(outputs.String(), "password authentication failed") {
		t.Fatalf("the wrong password was not reported clearly:\n%s", outputs.String())
	}

	// A real worker process, a real failure that goes through the S3 client.
	dir := t.TempDir()
	testenv.InsertReports(t, b.db, dir, []testenv.Report{{ID: uuid.New(), Created: asOf.AddDate(-1, 0, 0), Format: "csv", File: "r.csv", Content: []byte("a,b\n")}})
	queue := "secrets-" + testenv.RandomID()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := exec.CommandContext(ctx, testenv.Binary(t, "worker"))
	w.Env = append(base, "DATABASE_URL="+b.url, "ARCHIVE_TASK_QUEUE="+queue, "REPORTS_DIR="+dir,
		"REPORTS_ARCHIVE_BUCKET=missing-"+testenv.RandomID(), "ARCHIVE_MAX_REPLICA_LAG=0")
	var wout bytes.Buffer
	w.Stdout, w.Stderr = &wout, &wout
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	r, err := b.c.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{ID: "secrets-" + testenv.RandomID(), TaskQueue: queue},
		workflows.ArchiveWorkflowName, workflows.ArchiveInput{Tables: []string{"reports"}, AsOf: asOf})
	if err != nil {
		t.Fatal(err)
	}
	runErr := testenv.Wait(t, b.c, r, testenv.DefaultWait, nil)
	if runErr == nil || !strings.Contains(runErr.Error(), "NoSuchBucket") {
		t.Fatalf("run error %v: want the missing bucket reported", runErr)
	}
	cancel()
	_ = w.Wait()
	outputs.Write(wout.Bytes())
	outputs.WriteString(runErr.Error())
	outputs.WriteString(history(t, b.c, r.GetID()))
	for name, secret := range map[string]string{"database password": dbPassword, "AWS secret": awsSecret} {
		if strings.Contains(outputs.String(), secret) {
			t.Errorf("the %s appears in logs, errors or history", name)
		}
	}
}
