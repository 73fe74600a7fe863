//go:build faults

package faults

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/workflows"
)

// load is the application: 120-row inserts every 100 ms (1,200 rows/s)
// and a read after each, through its own pool, timing every statement.
type load struct {
	mu        sync.Mutex
	latencies []time.Duration
	errs      []error
	rows      int64
}

func (l *load) run(ctx context.Context, db *pgxpool.Pool) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		l.timed(db, func(ctx context.Context) error {
			_, err := db.Exec(ctx, `
				INSERT INTO scenario_logs (id, scenario_id, received_at, message_hash, message_preview, source, size_bytes, has_pii, token_count, sqs_blocks)
				SELECT gen_random_uuid(), '00000000-0000-4000-8000-000000000001', now(), md5(g::text), 'live', 'api', 100, false, 10, 1
				FROM generate_series(1, 120) g`)
			return err
		}, 120)
		l.timed(db, func(ctx context.Context) error {
			var n int64
			return db.QueryRow(ctx, `SELECT count(*) FROM scenario_logs
				WHERE scenario_id = '00000000-0000-4000-8000-000000000001' AND received_at > now() - interval '1 minute'`).Scan(&n)
		}, 0)
	}
}

func (l *load) timed(db *pgxpool.Pool, f func(context.Context) error, rows int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	t0 := time.Now()
	err := f(ctx)
	d := time.Since(t0)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.latencies = append(l.latencies, d)
	if err != nil {
		l.errs = append(l.errs, err)
	} else {
		l.rows += rows
	}
}

func (l *load) stats() (p50, p99, worst time.Duration, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := slices.Clone(l.latencies)
	slices.Sort(s)
	if len(s) == 0 {
		return 0, 0, 0, 0
	}
	return s[len(s)/2], s[len(s)*99/100], s[len(s)-1], len(s)
}

// TestLiveLoadDuringArchiving: while a run archives, a second process
// inserts into and reads from the live table at 1,000 rows/s; none of its
// statements fails or waits longer than the batch lock-time budget plus
// 100 ms. Its p99 latency with and without archiving is reported.
func TestLiveLoadDuringArchiving(t *testing.T) {
	if !long() {
		t.Skip("long fault test: make test-faults")
	}
	admin, dbURL := testenv.NewDB(t)
	rows := envInt("FAULTS_LOAD_ROWS", 600000)
	testenv.InsertLogs(t, admin, testenv.SpreadTimes(rows, asOf.AddDate(0, 0, -1), 3*365*24*time.Hour/time.Duration(rows)))
	if _, err := admin.Exec(context.Background(), `ANALYZE scenario_logs`); err != nil {
		t.Fatal(err)
	}
	app := testenv.Pool(t, dbURL)

	measure := func(d time.Duration, during func()) *load {
		l := &load{}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		// Deferred: a t.Fatalf in during must stop the load too.
		defer wg.Wait()
		defer cancel()
		wg.Go(func() { l.run(ctx, app) })
		if during != nil {
			during()
		} else {
			time.Sleep(d) // the idle baseline's duration
		}
		return l
	}
	idle := measure(10*time.Second, nil)

	c := testenv.Temporal(t)
	queue := "faults-" + testenv.RandomID()
	newWorker(t, workerURL(t, dbURL), queue)
	budget := 200 * time.Millisecond
	var took time.Duration
	var res workflows.ArchiveResult
	busy := measure(0, func() {
		t0 := time.Now()
		run := start(t, c, queue, workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf, LockBudget: budget})
		if err := testenv.Wait(t, c, run, runWait(), &res); err != nil {
			t.Errorf("run: %v", err)
		}
		took = time.Since(t0)
	})

	ip50, ip99, iworst, in := idle.stats()
	bp50, bp99, bworst, bn := busy.stats()
	rate := float64(busy.rows) / took.Seconds()
	t.Logf("FAULTS load: idle p50 %v p99 %v max %v (%d statements); while archiving %d rows in %v: p50 %v p99 %v max %v (%d statements, %.0f rows/s inserted)",
		ip50, ip99, iworst, in, res.Tables[0].RowsArchived, took.Round(time.Millisecond), bp50, bp99, bworst, bn, rate)
	if len(busy.errs) > 0 {
		t.Fatalf("%d statements of the live load failed while archiving, first: %v", len(busy.errs), busy.errs[0])
	}
	if rate < 1000 {
		t.Fatalf("the load inserted only %.0f rows/s: the measurement is not at the promised rate", rate)
	}
	if limit := budget + 100*time.Millisecond; bworst > limit {
		t.Fatalf("a live statement waited %v while archiving, over the lock-time budget plus 100 ms (%v)", bworst, limit)
	}
}
