//go:build faults

package faults

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/workflows"
)

func long() bool { return os.Getenv("FAULTS_LONG") != "" }

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestWorkerKilledDuringLogsRun: the worker is SIGKILLed at random points
// of a logs run (short: 45k rows, one kill; long: 450k rows, three kills and
// a PostgreSQL restart); the run completes after recovery with every row in
// exactly one place.
func TestWorkerKilledDuringLogsRun(t *testing.T) {
	rows, kills := envInt("FAULTS_ROWS", 45000), envInt("FAULTS_KILLS", 1)
	if long() {
		rows, kills = envInt("FAULTS_ROWS", 450000), envInt("FAULTS_KILLS", 3)
	}
	admin, dbURL := testenv.NewDB(t)
	testenv.InsertLogs(t, admin, testenv.SpreadTimes(rows, asOf, 3*365*24*time.Hour/time.Duration(rows)))
	before := snapshotLogs(t, admin)
	batch := 2000
	batches := before.eligibleN/int64(batch) + 1
	t.Logf("%d rows, %d eligible, %d batches of %d, %d kills", rows, before.eligibleN, batches, batch, kills)

	c := testenv.Temporal(t)
	queue := "faults-" + testenv.RandomID()
	w := newWorker(t, workerURL(t, dbURL), queue)
	run := start(t, c, queue, workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf,
		BatchSize: batch, MinBatch: batch, MaxBatch: batch, ActivityTimeout: 10 * time.Second})

	r := rng(t)
	for k := 0; k < kills; k++ {
		at := int64(k)*batches/int64(kills) + 1 + r.Int64N(max(1, batches/int64(kills)-1))
		waitBatches(t, admin, at)
		w.Kill()
		t.Logf("kill %d: worker SIGKILLed after %d batches", k+1, count(context.Background(), admin, `SELECT count(*) FROM archive_batches`))
		if long() && k == 0 {
			stack(t, "pg-restart") // with the worker down and batches in flight lost
		}
		w.Start()
	}
	var res workflows.ArchiveResult
	if err := testenv.Wait(t, c, run, runWait(), &res); err != nil {
		t.Fatalf("the run did not complete after recovery: %v\nworker output:\n%s", err, w.Output())
	}
	admin = testenv.Pool(t, dbURL) // fresh connections after the restart
	verifyLogs(t, admin, before)
	if res.Tables[0].RowsArchived != before.eligibleN {
		t.Fatalf("the summary says %d rows, want %d", res.Tables[0].RowsArchived, before.eligibleN)
	}
	t.Logf("FAULTS logs: %d rows, %d eligible archived, %d kills, postgres restarts %d", rows, before.eligibleN, kills, map[bool]int{true: 1}[long()])
}

// TestTemporalRestartedDuringRun: the dev server restarts (keeping its
// database file) in the middle of a run; the run continues.
func TestTemporalRestartedDuringRun(t *testing.T) {
	if !long() {
		t.Skip("long fault test: make test-faults")
	}
	admin, dbURL := testenv.NewDB(t)
	testenv.InsertLogs(t, admin, testenv.SpreadTimes(150000, asOf, 3*365*24*time.Hour/150000))
	before := snapshotLogs(t, admin)
	c := testenv.Temporal(t)
	queue := "faults-" + testenv.RandomID()
	w := newWorker(t, workerURL(t, dbURL), queue)
	run := start(t, c, queue, workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf,
		BatchSize: 2000, MinBatch: 2000, MaxBatch: 2000, ActivityTimeout: 10 * time.Second})
	waitBatches(t, admin, 10)
	stack(t, "temporal-restart")
	var res workflows.ArchiveResult
	if err := testenv.Wait(t, c, run, runWait(), &res); err != nil {
		t.Fatalf("the run did not continue after the Temporal restart: %v\nworker output:\n%s", err, w.Output())
	}
	verifyLogs(t, admin, before)
}

// workerURL is the test database's URL for the least-privilege login.
func workerURL(t *testing.T, dbURL string) string {
	t.Helper()
	return testenv.WorkerURL(t, dbURL)
}
