package activities_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/mockupaws/archiver/internal/testenv"
)

// The worker role can do what archiving needs (every other test in this
// package runs activities as it) and nothing else.
func TestWorkerRoleIsLeastPrivilege(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	if _, err := b.db.Exec(ctx, `CREATE TABLE app_secrets (k text); INSERT INTO app_secrets VALUES ('s')`); err != nil {
		t.Fatal(err)
	}
	testenv.InsertLogs(t, b.db, testenv.SpreadTimes(3, cutoff, 1))
	worker := b.acts.DB
	for _, sql := range []string{
		`INSERT INTO scenario_logs (id, scenario_id, received_at, message_hash, source, size_bytes, has_pii, token_count, sqs_blocks)
		 VALUES (gen_random_uuid(), gen_random_uuid(), now(), 'h', 's', 1, false, 1, 1)`,
		`UPDATE scenario_logs SET message_preview = 'changed'`,
		`TRUNCATE scenario_logs`,
		`DROP TABLE scenario_logs`,
		`ALTER TABLE scenario_logs ADD COLUMN x int`,
		`SELECT * FROM app_secrets`,
		`DELETE FROM app_secrets`,
		`CREATE ROLE intruder`,
		`DELETE FROM archive_jobs`,
		`INSERT INTO scenario_metrics (id, scenario_id, timestamp, metric_type, metric_name, value, unit) VALUES (gen_random_uuid(), gen_random_uuid(), now(), 't', 'n', 1, 'u')`,
	} {
		_, err := worker.Exec(ctx, sql)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || (pgErr.Code != "42501" && pgErr.Code != "42P01") {
			t.Errorf("the worker role could run %q (error %v), want permission denied", sql, err)
		}
	}
	// What it needs: read replicas' lag (pg_monitor).
	var lagVisible bool
	if err := worker.QueryRow(ctx, `SELECT has_table_privilege('pg_stat_replication', 'SELECT') AND pg_has_role('pg_monitor', 'USAGE')`).Scan(&lagVisible); err != nil || !lagVisible {
		t.Fatalf("the worker role cannot read replica lag: %v", err)
	}
	var user string
	_ = worker.QueryRow(ctx, `SELECT current_user`).Scan(&user)
	if user != testenv.WorkerLogin {
		t.Fatalf("activities run as %s, want %s", user, testenv.WorkerLogin)
	}
}
