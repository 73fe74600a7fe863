//go:build faults

package faults

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mockupaws/archiver/internal/database"
	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/migrations"
	"github.com/mockupaws/archiver/workflows"
)

// TestWorkerKilledDuringPartitionExchange: a live table partitioned by
// month archives 12 whole partitions by exchange while the real worker is
// SIGKILLed right after a DDL step (a failpoint of the faults build), again
// and again: short, after each of the first partition's steps; long, after
// every step of every partition. Afterwards every row is in exactly one
// place and every exchange is one completed ledger entry.
func TestWorkerKilledDuringPartitionExchange(t *testing.T) {
	ctx := context.Background()
	// The owner role is dropped after the database (cleanups run last-in
	// first-out).
	owner := "app_owner_" + testenv.RandomID()
	adminExec(t, `CREATE ROLE `+owner+` NOLOGIN`)
	t.Cleanup(func() { adminExec(t, `DROP ROLE IF EXISTS `+owner) })
	_, dbURL := testenv.EmptyDB(t)
	db := testenv.Pool(t, dbURL)
	exec := func(sql string) {
		t.Helper()
		if _, err := db.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`CREATE TABLE scenario_logs (id uuid NOT NULL, scenario_id uuid NOT NULL, received_at timestamptz NOT NULL,
		message_hash varchar(64) NOT NULL, message_preview varchar(500), source varchar(100) NOT NULL, size_bytes integer NOT NULL,
		has_pii boolean NOT NULL, token_count integer NOT NULL, sqs_blocks integer NOT NULL, PRIMARY KEY (id, received_at))
		PARTITION BY RANGE (received_at)`)
	// 12 months wholly before the cut-off (2025-03-15 03:00), and the
	// months after it up to the run.
	for m := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC); m.Before(time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)); m = m.AddDate(0, 1, 0) {
		exec(fmt.Sprintf(`CREATE TABLE scenario_logs_p%s PARTITION OF scenario_logs FOR VALUES FROM ('%s') TO ('%s')`,
			m.Format("2006_01"), m.Format(time.RFC3339), m.AddDate(0, 1, 0).Format(time.RFC3339)))
	}
	exec(fmt.Sprintf(`INSERT INTO scenario_logs
		SELECT gen_random_uuid(), gen_random_uuid(), '2024-03-01Z'::timestamptz + i * interval '37 minutes', md5(i::text),
		       CASE WHEN i %% 5 = 0 THEN NULL ELSE 'preview ' || i END, 'api', i, i %% 11 = 0, 1, 1
		FROM generate_series(0, %d) i`, int((asOf.Sub(time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC))/(37*time.Minute)))-1))
	exec(fmt.Sprintf(`DO $$ DECLARE r regclass; BEGIN
		FOR r IN SELECT 'scenario_logs'::regclass UNION ALL SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'scenario_logs'::regclass LOOP
			EXECUTE format('ALTER TABLE %%s OWNER TO %s', r);
		END LOOP; END $$`, owner))
	conn, err := database.Connect(ctx, dbURL, "archiver-starter")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := migrations.Up(ctx, conn); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close(ctx)
	exec(`GRANT ` + owner + ` TO archiver_worker`)
	db.Reset()
	before := snapshotLogs(t, db)

	c := testenv.Temporal(t)
	queue := "faults-" + testenv.RandomID()
	failpoint := "ARCHIVER_FAULT_KILL_AFTER_EXCHANGE_STEP=1" // each process dies after its first step
	w := newWorker(t, workerURL(t, dbURL), queue, failpoint)
	run := start(t, c, queue, workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf,
		BatchSize: 2000, MinBatch: 2000, MaxBatch: 2000, ActivityTimeout: 3 * time.Second})

	maxKills := 5 // short: after each step of the first partition
	if long() {
		maxKills = 1000 // after every step
	}
	kills := 0
	result := make(chan error, 1)
	var res workflows.ArchiveResult
	go func() { result <- testenv.Wait(t, c, run, runWait(), &res) }()
	for done := false; !done; {
		select {
		case err := <-result:
			if err != nil {
				t.Fatalf("the run did not complete: %v\nworker output:\n%s", err, w.Output())
			}
			done = true
		case <-w.Exited():
			kills++
			if kills < maxKills {
				w.Start()
			} else {
				w.Env = withoutEnv(w.Env, failpoint)
				w.Start()
				maxKills = -1 // no more failpoints
			}
		}
	}
	steps := map[string]int{}
	for _, line := range strings.Split(w.Output(), "\n") {
		if _, step, ok := strings.Cut(line, "failpoint: killed after exchange step "); ok {
			steps[step]++
		}
	}
	t.Logf("FAULTS exchange: %d rows, %d eligible, worker SIGKILLed %d times, after steps %v", before.allN, before.eligibleN, kills, steps)
	for _, step := range []string{"detach", "add-archive-columns", "rename", "index", "attach"} {
		if steps[step] == 0 {
			t.Errorf("never killed after step %s (kills after %v)", step, steps)
		}
	}
	verifyLogs(t, db, before)
	tr := res.Tables[0]
	if tr.PartitionsExchanged != 12 {
		t.Fatalf("summary %+v: want 12 partitions exchanged", tr)
	}
	if n := testenv.Count(t, db, `SELECT count(*) FROM archive_batches WHERE kind = 'partition' AND state = 'done'`); n != 12 {
		t.Fatalf("%d completed partition entries in the ledger, want 12", n)
	}
	if n := testenv.Count(t, db, `SELECT count(*) FROM archive_batches WHERE state <> 'done'`); n != 0 {
		t.Fatalf("%d ledger entries left unfinished", n)
	}
}

func withoutEnv(env []string, kv string) []string {
	var out []string
	for _, e := range env {
		if e != kv {
			out = append(out, e)
		}
	}
	return out
}

// adminExec runs a statement on the cluster as the superuser.
func adminExec(t *testing.T, sql string) {
	t.Helper()
	c, err := pgx.Connect(context.Background(), testenv.Load(t).AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(context.Background(), sql); err != nil {
		t.Errorf("%s: %v", sql, err)
	}
}
