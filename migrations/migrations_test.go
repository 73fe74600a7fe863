package migrations_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/migrations"
)

func TestUp(t *testing.T) {
	t.Parallel()
	_, url := testenv.NewDB(t) // already migrated from the template
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	from, to, err := migrations.Up(ctx, conn)
	if err != nil || from != to || to < 1 {
		t.Fatalf("second Up: %d -> %d, %v; want a no-op at the latest version", from, to, err)
	}

	// The archive tables are partitioned by range on their timestamp column
	// with composite primary keys (DESIGN.md §4).
	for table, key := range map[string]string{
		"scenario_logs_archive":    "RANGE (received_at)",
		"scenario_metrics_archive": "RANGE (\"timestamp\")",
		"reports_archive":          "RANGE (created_at)",
	} {
		var got string
		if err := conn.QueryRow(ctx, `SELECT pg_get_partkeydef($1::regclass)`, table).Scan(&got); err != nil {
			t.Fatalf("%s: %v", table, err)
		}
		if got != key {
			t.Errorf("%s partitioned by %q, want %q", table, got, key)
		}
	}
	for _, view := range []string{"v_scenario_logs_all", "v_scenario_metrics_all", "v_archive_statistics", "v_archive_growth"} {
		if _, err := conn.Exec(ctx, "SELECT * FROM "+pgx.Identifier{view}.Sanitize()+" LIMIT 1"); err != nil {
			t.Errorf("view %s: %v", view, err)
		}
	}
}

// The live tables belong to the application: an existing one is kept as it
// is, and migrating around it works.
func TestUpKeepsExistingLiveTables(t *testing.T) {
	t.Parallel()
	_, url := testenv.NewDB(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// Start again from an application database that has only its own tables.
	_, err = conn.Exec(ctx, `
		DROP SCHEMA public CASCADE; CREATE SCHEMA public;
		CREATE TABLE scenario_logs (
			id UUID PRIMARY KEY, scenario_id UUID NOT NULL, received_at TIMESTAMPTZ NOT NULL,
			message_hash VARCHAR(64) NOT NULL, message_preview VARCHAR(500), source VARCHAR(100) NOT NULL,
			size_bytes INTEGER NOT NULL, has_pii BOOLEAN NOT NULL, token_count INTEGER NOT NULL,
			sqs_blocks INTEGER NOT NULL, app_only_marker INTEGER);
		INSERT INTO scenario_logs VALUES (gen_random_uuid(), gen_random_uuid(), now(), 'h', 'p', 's', 1, false, 1, 1, 7);`)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := migrations.Up(ctx, conn); err != nil {
		t.Fatalf("migrate an application database: %v", err)
	}
	var marker int
	if err := conn.QueryRow(ctx, `SELECT app_only_marker FROM scenario_logs`).Scan(&marker); err != nil || marker != 7 {
		t.Fatalf("the application's table was replaced: %v", err)
	}
}
