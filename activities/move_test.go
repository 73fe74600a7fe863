package activities_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/temporal"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/testenv"
)

// asOf is fixed: tests never read the wall clock for the logic under test.
var asOf = time.Date(2026, 3, 15, 3, 0, 0, 0, time.UTC)
var cutoff = asOf.Add(-365 * 24 * time.Hour)

type bundle struct {
	db    *pgxpool.Pool
	url   string
	acts  *activities.Activities
	jobID string
}

func setup(t *testing.T) bundle {
	t.Helper()
	t.Parallel()
	return newBundle(t)
}

// newBundle is setup without t.Parallel, for a second database in one test.
func newBundle(t *testing.T) bundle {
	t.Helper()
	db, url := testenv.NewDB(t)
	// Activities run as the least-privilege worker role; fixtures and
	// assertions use the admin pool.
	b := bundle{db: db, url: url, acts: &activities.Activities{DB: testenv.WorkerPool(t, url)}, jobID: uuid.NewString()}
	_, err := b.acts.StartJob(context.Background(), activities.StartJobInput{
		JobID: b.jobID, Table: "logs", WorkflowID: "wf-test", RunID: "run-test", AsOf: asOf, Cutoff: cutoff})
	if err != nil {
		t.Fatalf("StartJob: %v", err)
	}
	return b
}

func (b bundle) move(t *testing.T, batchID string, limit int) activities.MoveBatchResult {
	t.Helper()
	res, err := b.acts.MoveBatch(context.Background(), activities.MoveBatchInput{
		Table: "logs", JobID: b.jobID, BatchID: batchID, Cutoff: cutoff, Limit: limit})
	if err != nil {
		t.Fatalf("MoveBatch %s: %v", batchID, err)
	}
	return res
}

func (b bundle) ensure(t *testing.T) activities.EnsurePartitionsResult {
	t.Helper()
	res, err := b.acts.EnsurePartitions(context.Background(), activities.EnsurePartitionsInput{Table: "logs", Cutoff: cutoff})
	if err != nil {
		t.Fatalf("EnsurePartitions: %v", err)
	}
	return res
}

func TestMoveBatch(t *testing.T) {
	t.Run("moves the oldest eligible rows with their content and batch id", func(t *testing.T) {
		b := setup(t)
		old := testenv.SpreadTimes(250, cutoff, 3*time.Hour) // 31 days before the cut-off
		testenv.InsertLogs(t, b.db, old)
		young := testenv.InsertLogs(t, b.db, testenv.SpreadTimes(40, asOf, time.Hour))
		wantN, wantSum := testenv.LogsChecksum(t, b.db, "scenario_logs", "received_at < '"+cutoff.Format(time.RFC3339Nano)+"'")
		b.ensure(t)

		first := b.move(t, uuid.NewString(), 100)
		if first.RowsMoved != 100 || first.RowsDeleted != 100 || first.Bytes <= 0 {
			t.Fatalf("first batch = %+v, want 100 rows moved and deleted with bytes", first)
		}
		if !first.MinTS.Equal(old[0]) || !first.MaxTS.Equal(old[99]) {
			t.Fatalf("first batch range %v..%v, want the 100 oldest rows %v..%v", first.MinTS, first.MaxTS, old[0], old[99])
		}
		b.move(t, uuid.NewString(), 100)
		last := b.move(t, uuid.NewString(), 100)
		if last.RowsMoved != 50 {
			t.Fatalf("last batch moved %d rows, want 50", last.RowsMoved)
		}

		gotN, gotSum := testenv.LogsChecksum(t, b.db, "scenario_logs_archive", "")
		if gotN != wantN || gotSum != wantSum {
			t.Fatalf("archive holds %d rows (checksum %s), want the %d eligible rows (checksum %s)", gotN, gotSum, wantN, wantSum)
		}
		if n := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_logs`); n != int64(len(young)) {
			t.Fatalf("live table has %d rows, want the %d young ones", n, len(young))
		}
		if n := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_logs_archive a
			WHERE NOT EXISTS (SELECT 1 FROM archive_batches b WHERE b.batch_id = a.archive_batch_id)`); n != 0 {
			t.Fatalf("%d archived rows carry no ledger batch id", n)
		}
		if n := testenv.Count(t, b.db, `SELECT count(*) FROM archive_batches b
			WHERE rows_moved <> (SELECT count(*) FROM scenario_logs_archive a WHERE a.archive_batch_id = b.batch_id)`); n != 0 {
			t.Fatalf("%d ledger rows disagree with the rows carrying their batch id", n)
		}
	})

	t.Run("a batch retried after its commit changes nothing and returns the recorded result", func(t *testing.T) {
		b := setup(t)
		testenv.InsertLogs(t, b.db, testenv.SpreadTimes(30, cutoff, time.Hour))
		b.ensure(t)
		id := uuid.NewString()
		first := b.move(t, id, 20)
		liveN, liveSum := testenv.LogsChecksum(t, b.db, "scenario_logs", "")
		archN, archSum := testenv.LogsChecksum(t, b.db, "scenario_logs_archive", "")

		again := b.move(t, id, 20)
		if !again.Replayed {
			t.Fatalf("retry of a committed batch was not recognised: %+v", again)
		}
		if again.RowsMoved != first.RowsMoved || again.Bytes != first.Bytes || !again.MinTS.Equal(*first.MinTS) || !again.MaxTS.Equal(*first.MaxTS) ||
			again.More != first.More || again.Last == nil || *again.Last != *first.Last {
			t.Fatalf("retry returned %+v (cursor %+v), want the recorded %+v (cursor %+v)", again, again.Last, first, first.Last)
		}
		n2, s2 := testenv.LogsChecksum(t, b.db, "scenario_logs", "")
		a2, as2 := testenv.LogsChecksum(t, b.db, "scenario_logs_archive", "")
		if n2 != liveN || s2 != liveSum || a2 != archN || as2 != archSum {
			t.Fatalf("retry changed the tables: live %d->%d, archive %d->%d", liveN, n2, archN, a2)
		}
	})

	t.Run("a batch id recorded for another job is refused without retry", func(t *testing.T) {
		b := setup(t)
		testenv.InsertLogs(t, b.db, testenv.SpreadTimes(5, cutoff, time.Hour))
		b.ensure(t)
		id := uuid.NewString()
		b.move(t, id, 10)
		other := setupJob(t, b)
		_, err := b.acts.MoveBatch(context.Background(), activities.MoveBatchInput{
			Table: "logs", JobID: other, BatchID: id, Cutoff: cutoff, Limit: 10})
		assertNonRetryable(t, err)
	})

	t.Run("concurrent attempts of one batch move it once", func(t *testing.T) {
		b := setup(t)
		testenv.InsertLogs(t, b.db, testenv.SpreadTimes(500, cutoff, time.Minute))
		b.ensure(t)
		id := uuid.NewString()
		results := make([]activities.MoveBatchResult, 4)
		var wg sync.WaitGroup
		for i := range results {
			wg.Go(func() { results[i] = b.move(t, id, 300) })
		}
		wg.Wait()
		fresh := 0
		for _, r := range results {
			if r.RowsMoved != 300 {
				t.Fatalf("attempt returned %d rows, want 300 for every attempt", r.RowsMoved)
			}
			if !r.Replayed {
				fresh++
			}
		}
		if fresh != 1 {
			t.Fatalf("%d attempts moved rows, want exactly 1", fresh)
		}
		if n := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_logs_archive`); n != 300 {
			t.Fatalf("archive has %d rows, want 300", n)
		}
	})

	t.Run("two concurrent workers never move the same row", func(t *testing.T) {
		b := setup(t)
		ids := testenv.InsertLogs(t, b.db, testenv.SpreadTimes(3000, cutoff, time.Minute))
		b.ensure(t)
		moved := make([]int64, 2)
		var wg sync.WaitGroup
		for w := range moved {
			wg.Go(func() {
				for {
					r := b.move(t, uuid.NewString(), 50)
					moved[w] += r.RowsMoved
					if r.RowsMoved == 0 {
						return
					}
				}
			})
		}
		wg.Wait()
		if moved[0]+moved[1] != int64(len(ids)) {
			t.Fatalf("workers moved %d + %d rows, want %d in all", moved[0], moved[1], len(ids))
		}
		if moved[0] == 0 || moved[1] == 0 {
			t.Logf("one worker moved everything (%v): the run was serialised, still correct", moved)
		}
		if n := testenv.Count(t, b.db, `SELECT count(DISTINCT id) FROM scenario_logs_archive`); n != int64(len(ids)) {
			t.Fatalf("archive has %d distinct ids, want %d", n, len(ids))
		}
		if n := testenv.Count(t, b.db, `SELECT sum(rows_moved) FROM archive_batches`); n != int64(len(ids)) {
			t.Fatalf("ledger records %d rows, want %d", n, len(ids))
		}
	})

	t.Run("the cut-off boundary: strictly older rows move, a row at the cut-off stays", func(t *testing.T) {
		b := setup(t)
		ids := testenv.InsertLogs(t, b.db, []time.Time{cutoff.Add(-time.Microsecond), cutoff, cutoff.Add(time.Microsecond)})
		b.ensure(t)
		if r := b.move(t, uuid.NewString(), 10); r.RowsMoved != 1 {
			t.Fatalf("moved %d rows, want only the one before the cut-off", r.RowsMoved)
		}
		if n := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_logs_archive WHERE id = $1`, ids[0]); n != 1 {
			t.Fatal("the row 1µs before the cut-off was not archived")
		}
		if n := testenv.Count(t, b.db, `SELECT count(*) FROM scenario_logs WHERE id = ANY($1)`, ids[1:]); n != 2 {
			t.Fatal("the rows at and after the cut-off left the live table")
		}
	})

	t.Run("a row older than the partitions made gets its partition on the fly", func(t *testing.T) {
		b := setup(t)
		testenv.InsertLogs(t, b.db, []time.Time{cutoff.Add(-time.Hour)})
		b.ensure(t)
		// A late import lands three years back, after EnsurePartitions ran.
		testenv.InsertLogs(t, b.db, []time.Time{cutoff.AddDate(-3, 0, 0)})
		if r := b.move(t, uuid.NewString(), 10); r.RowsMoved != 2 {
			t.Fatalf("moved %d rows, want 2", r.RowsMoved)
		}
	})

	t.Run("invalid input fails without retry", func(t *testing.T) {
		b := setup(t)
		for _, in := range []activities.MoveBatchInput{
			{Table: "logs", JobID: b.jobID, BatchID: uuid.NewString(), Cutoff: cutoff, Limit: 0},
			{Table: "logs", JobID: b.jobID, BatchID: uuid.NewString(), Cutoff: cutoff, Limit: -5},
			{Table: "nope", JobID: b.jobID, BatchID: uuid.NewString(), Cutoff: cutoff, Limit: 10},
		} {
			_, err := b.acts.MoveBatch(context.Background(), in)
			assertNonRetryable(t, err)
		}
	})
}

func setupJob(t *testing.T, b bundle) string {
	t.Helper()
	id := uuid.NewString()
	if _, err := b.acts.StartJob(context.Background(), activities.StartJobInput{
		JobID: id, Table: "logs", WorkflowID: "wf-other", RunID: "run-other", AsOf: asOf, Cutoff: cutoff}); err != nil {
		t.Fatalf("StartJob: %v", err)
	}
	return id
}

func assertNonRetryable(t *testing.T, err error) {
	t.Helper()
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || !appErr.NonRetryable() || appErr.Type() != activities.ErrInvalidInput {
		t.Fatalf("error %v: want a non-retryable %s application error", err, activities.ErrInvalidInput)
	}
}
