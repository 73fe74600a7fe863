package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"go.temporal.io/sdk/client"

	"github.com/mockupaws/archiver/activities"

	"github.com/mockupaws/archiver/migrations"
	"github.com/mockupaws/archiver/workflows"
)

// exchangeWorkload: one live monthly partition of --exchange-rows rows,
// wholly older than the cut-off, archived by partition exchange and, on an
// identical clone, row by row (RowByRow); the seconds of each and the
// longest lock the exchange's steps held.
func (b *bench) exchangeWorkload(ctx context.Context) (Result, error) {
	r := Result{Workload: "partition_exchange", Rows: int64(b.o.exchangeRows)}
	if b.o.exchangeRows == 0 {
		return Result{}, nil
	}
	seed := b.seedDB + "_exchange"
	owner := "bench_owner_" + fmt.Sprint(time.Now().Unix())
	if err := b.exec(ctx, "CREATE ROLE "+owner+" NOLOGIN"); err != nil {
		return r, err
	}
	b.roles = append(b.roles, owner)
	if err := b.exec(ctx, "CREATE DATABASE "+seed); err != nil {
		return r, err
	}
	b.dbs = append(b.dbs, seed)
	fmt.Fprintf(os.Stderr, "bench: seeding one live partition of %d rows\n", b.o.exchangeRows)
	conn, err := pgx.Connect(ctx, b.dbURL(seed))
	if err != nil {
		return r, err
	}
	month := time.Date(logsCutoff.Year(), logsCutoff.Month(), 1, 0, 0, 0, 0, time.UTC).AddDate(0, -3, 0)
	stmts := []string{`CREATE TABLE scenario_logs (id uuid NOT NULL, scenario_id uuid NOT NULL, received_at timestamptz NOT NULL,
		message_hash varchar(64) NOT NULL, message_preview varchar(500), source varchar(100) NOT NULL, size_bytes integer NOT NULL,
		has_pii boolean NOT NULL, token_count integer NOT NULL, sqs_blocks integer NOT NULL, PRIMARY KEY (id, received_at))
		PARTITION BY RANGE (received_at)`}
	for m := month; m.Before(asOf.AddDate(0, 1, 0)); m = m.AddDate(0, 1, 0) {
		stmts = append(stmts, fmt.Sprintf(`CREATE TABLE scenario_logs_p%s PARTITION OF scenario_logs FOR VALUES FROM ('%s') TO ('%s')`,
			m.Format("2006_01"), m.Format(time.RFC3339), m.AddDate(0, 1, 0).Format(time.RFC3339)))
	}
	stmts = append(stmts, fmt.Sprintf(`INSERT INTO scenario_logs (`+logColumns+`)
		SELECT gen_random_uuid(), ('00000000-0000-4000-8000-' || lpad((g %% 50)::text, 12, '0'))::uuid,
		       '%s'::timestamptz + ((g::bigint * 7919) %% (28 * 86400)) * interval '1 second',
		       encode(sha256(g::text::bytea), 'hex'), 'bench log message number ' || g || ' with some text to be realistic',
		       (ARRAY['api','sqs','lambda','batch'])[g %% 4 + 1], 200 + g %% 1800, g %% 17 = 0, 50 + g %% 400, 1 + g %% 4
		FROM generate_series(1, %d) g`, month.Format(time.RFC3339), b.o.exchangeRows))
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			conn.Close(ctx)
			return r, fmt.Errorf("seed exchange: %w", err)
		}
	}
	if _, _, err := migrations.Up(ctx, conn); err != nil {
		conn.Close(ctx)
		return r, err
	}
	for _, s := range []string{
		fmt.Sprintf(`DO $$ DECLARE t regclass; BEGIN
			FOR t IN SELECT 'scenario_logs'::regclass UNION ALL SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'scenario_logs'::regclass LOOP
				EXECUTE format('ALTER TABLE %%s OWNER TO %s', t);
			END LOOP; END $$`, owner),
		"GRANT " + owner + " TO archiver_worker", "ANALYZE",
	} {
		if _, err := conn.Exec(ctx, s); err != nil {
			conn.Close(ctx)
			return r, err
		}
	}
	conn.Close(ctx)

	run := func(label string, rowByRow bool) (float64, workflows.ArchiveResult, error) {
		name := fmt.Sprintf("bench_%s_%d", label, time.Now().UnixNano()%1e9)
		if err := b.exec(ctx, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", name, seed)); err != nil {
			return 0, workflows.ArchiveResult{}, err
		}
		b.dbs = append(b.dbs, name)
		secs, _, id, res, err := b.runOurs(ctx, b.dbURL(name), workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf, RowByRow: rowByRow}, "")
		fmt.Fprintf(os.Stderr, "bench: %s %.2f s\n", label, secs)
		if err == nil && !rowByRow {
			steps, serr := exchangeSteps(ctx, b.c, id)
			if serr != nil {
				return secs, res, serr
			}
			r.Steps = steps
		}
		return secs, res, err
	}
	secs, res, err := run("exchange", false)
	if err != nil {
		return r, err
	}
	rowSecs, _, err := run("exchange_rows", true)
	if err != nil {
		return r, err
	}
	tr := res.Tables[0]
	if tr.PartitionsExchanged < 1 || tr.RowsArchived != r.Rows {
		return r, fmt.Errorf("the exchange run moved %d rows in %d partitions: want %d, exchanged", tr.RowsArchived, tr.PartitionsExchanged, r.Rows)
	}
	r.Seconds = round(secs)
	r.RowsPerS = round(float64(r.Rows) / secs)
	r.LongestLockMS = tr.LongestLockMillis
	r.RowByRowSeconds = round(rowSecs)
	r.Speedup = round(rowSecs / secs)
	for _, step := range []string{"detach", "detach-finalize", "attach"} {
		r.SharedLockMS = max(r.SharedLockMS, r.Steps[step])
	}
	r.Notes = append(r.Notes, "step_ms: the longest of each DDL step; detach locks the live table, attach the archive's partition list (SHARE UPDATE EXCLUSIVE: reads and writes go on); add-archive-columns, rename and index lock the detached table alone, which nobody else uses; shared_lock_ms is the longest lock on a table others use")
	return r, nil
}

// exchangeSteps sums each exchange step's milliseconds over a run's
// ExchangePartition results (from its history).
func exchangeSteps(ctx context.Context, c client.Client, workflowID string) (map[string]int64, error) {
	out := map[string]int64{}
	iter := c.GetWorkflowHistory(ctx, workflowID, "", false, 0)
	for iter.HasNext() {
		ev, err := iter.Next()
		if err != nil {
			return nil, err
		}
		a := ev.GetActivityTaskCompletedEventAttributes()
		if a == nil {
			continue
		}
		for _, p := range a.GetResult().GetPayloads() {
			var r activities.ExchangeResult
			if json.Unmarshal(p.GetData(), &r) == nil {
				for _, st := range r.Steps {
					out[st.Step] = max(out[st.Step], st.Millis)
				}
			}
		}
	}
	return out, nil
}
