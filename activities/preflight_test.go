package activities_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/testenv"
)

func TestPreflightRefuses(t *testing.T) {
	for name, tc := range map[string]struct {
		sql     string
		mention string
	}{
		"a live column the archive lacks (schema drift)": {
			`ALTER TABLE scenario_logs ADD COLUMN tenant_id int DEFAULT 7`, `scenario_logs has column "tenant_id"`},
		"an archive column the live table lacks": {
			`ALTER TABLE scenario_logs DROP COLUMN sqs_blocks CASCADE`, `scenario_logs lacks column "sqs_blocks"`},
		"a DEFAULT partition made by hand": {
			`CREATE TABLE logs_catch_all PARTITION OF scenario_logs_archive DEFAULT`, "DEFAULT partition logs_catch_all"},
		"an overlapping partition made by hand": {
			`CREATE TABLE logs_q1 PARTITION OF scenario_logs_archive FOR VALUES FROM ('2025-01-15 00:00:00+00') TO ('2025-04-01 00:00:00+00')`, "partition logs_q1 (FOR VALUES FROM ('2025-01-15 00:00:00+00') TO ('2025-04-01 00:00:00+00')) that is not one of the archiver's"},
		"NULL timestamps": {
			`ALTER TABLE scenario_logs ALTER COLUMN received_at DROP NOT NULL;
			 INSERT INTO scenario_logs (id, scenario_id, received_at, message_hash, source, size_bytes, has_pii, token_count, sqs_blocks)
			 VALUES (gen_random_uuid(), gen_random_uuid(), NULL, 'h', 's', 1, false, 1, 1)`, "1 rows of scenario_logs have a NULL received_at"},
	} {
		t.Run(name, func(t *testing.T) {
			b := setup(t)
			testenv.InsertLogs(t, b.db, testenv.SpreadTimes(10, cutoff, 24*time.Hour*7))
			if _, err := b.db.Exec(context.Background(), tc.sql); err != nil {
				t.Fatal(err)
			}
			before, sum := rowsChecksum(t, b)
			_, err := b.acts.EnsurePartitions(context.Background(), activities.EnsurePartitionsInput{Table: "logs", Cutoff: cutoff})
			assertNonRetryable(t, err)
			if !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("error %q does not name the problem (%q)", err, tc.mention)
			}
			if n, s := rowsChecksum(t, b); n != before || s != sum {
				t.Fatal("the live table changed")
			}
			if _, err := b.acts.Preview(context.Background(), activities.PreviewInput{Table: "logs", Cutoff: cutoff}); err == nil {
				t.Fatal("the dry run did not refuse too")
			}
		})
	}
}

// rowsChecksum digests whole rows, whatever columns the table has now.
func rowsChecksum(t *testing.T, b bundle) (n int64, sum string) {
	t.Helper()
	if err := b.db.QueryRow(context.Background(),
		`SELECT count(*), COALESCE(md5(string_agg(l::text, '' ORDER BY id)), '') FROM scenario_logs l`).Scan(&n, &sum); err != nil {
		t.Fatal(err)
	}
	return n, sum
}
