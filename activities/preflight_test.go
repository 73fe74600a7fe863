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
			`CREATE TABLE logs_q1 PARTITION OF scenario_logs_archive FOR VALUES FROM ('2025-01-15 00:00:00+00') TO ('2025-04-01 00:00:00+00')`, "partition logs_q1 (from 2025-01-15T00:00:00Z to 2025-04-01T00:00:00Z) that is not one of the archiver's"},
		"a live column wider than the archive's": {
			`DROP VIEW v_scenario_logs_all; ALTER TABLE scenario_logs ALTER COLUMN message_preview TYPE varchar(2000)`,
			`scenario_logs.message_preview is character varying(2000) but scenario_logs_archive.message_preview is character varying(500): character varying(2000) values can be longer than character varying(500) allows; widen the archive column: ALTER TABLE "scenario_logs_archive" ALTER COLUMN "message_preview" TYPE character varying(2000)`},
		"a nullable live column whose archive column is NOT NULL": {
			`ALTER TABLE scenario_logs ALTER COLUMN source DROP NOT NULL`,
			`scenario_logs.source is nullable but scenario_logs_archive.source is NOT NULL`},
		"a foreign key that cascades deletes": {
			`CREATE TABLE log_notes (id int PRIMARY KEY, log_id uuid REFERENCES scenario_logs (id) ON DELETE CASCADE)`,
			`scenario_logs is referenced by foreign key log_notes_log_id_fkey on log_notes (ON DELETE CASCADE): deleting archived rows would change or delete rows of log_notes that were never archived`},
		"a foreign key that restricts deletes": {
			`CREATE TABLE log_refs (id int PRIMARY KEY, log_id uuid, CONSTRAINT keeps_logs FOREIGN KEY (log_id) REFERENCES scenario_logs (id) ON DELETE RESTRICT)`,
			`scenario_logs is referenced by foreign key keeps_logs on log_refs (ON DELETE RESTRICT): deleting archived rows would fail on every row still referenced`},
		"an inheritance child with a column of its own": {
			`CREATE TABLE scenario_logs_eu (region text) INHERITS (scenario_logs)`,
			`scenario_logs_eu inherits scenario_logs and adds column "region": rows archived through scenario_logs would lose it`},
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
