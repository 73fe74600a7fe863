package e2e

import (
	"context"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/workflows"
)

// Queued backfill requests run in order, an overlapping one is refused
// (visible in the query and the history, the run goes on), and only rows in
// the windows move.
func TestBackfillQueue(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	id := "backfill-" + testenv.RandomID()
	day := func(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }
	reqs := []workflows.BackfillRequest{
		{Table: "logs", After: day(2024, 1, 1), Before: day(2024, 2, 1)},
		{Table: "logs", After: day(2024, 1, 20), Before: day(2024, 3, 1)}, // overlaps the first: refused
		{Table: "logs", After: day(2023, 6, 1), Before: day(2023, 7, 1)},
	}
	inWindows := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_logs WHERE
		(received_at >= '2024-01-01Z' AND received_at < '2024-02-01Z') OR (received_at >= '2023-06-01Z' AND received_at < '2023-07-01Z')`)
	total := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_logs`)

	var run client.WorkflowRun
	var err error
	for _, r := range reqs {
		run, err = b.c.SignalWithStartWorkflow(ctx, id, workflows.SignalBackfill, r,
			client.StartWorkflowOptions{ID: id, TaskQueue: b.queue}, workflows.BackfillWorkflowName,
			workflows.BackfillState{IdleTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
	}
	var s workflows.BackfillState
	if err := testenv.Wait(t, b.c, run, testenv.DefaultWait, &s); err != nil {
		t.Fatalf("backfill workflow: %v", err)
	}
	if len(s.Refused) != 1 || s.Refused[0].Request != reqs[1] {
		t.Fatalf("refused %+v, want the overlapping request", s.Refused)
	}
	if len(s.Done) != 2 || s.Done[0].Request != reqs[0] || s.Done[1].Request != reqs[2] {
		t.Fatalf("done %+v, want the two valid requests in the order sent", s.Done)
	}
	var moved int64
	for _, d := range s.Done {
		if d.Status != workflows.StatusCompleted {
			t.Fatalf("%s: %s %s", d.Request, d.Status, d.Error)
		}
		moved += d.Rows
	}
	if moved != inWindows || moved == 0 {
		t.Fatalf("moved %d rows, want the %d in the windows", moved, inWindows)
	}
	if left := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_logs`); left != total-inWindows {
		t.Fatalf("%d live rows left, want %d: rows outside the windows moved", left, total-inWindows)
	}
	if n := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_logs_archive WHERE NOT (
		(received_at >= '2024-01-01Z' AND received_at < '2024-02-01Z') OR (received_at >= '2023-06-01Z' AND received_at < '2023-07-01Z'))`); n != 0 {
		t.Fatalf("%d archived rows outside the windows", n)
	}
	record(t, b.c, run, "backfill-v2.json")
}
