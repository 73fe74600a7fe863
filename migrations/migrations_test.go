package migrations_test

import (
	"context"
	"strings"
	"testing"
	"time"

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
	// with composite primary keys (docs/design.md).
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

// The application's live tables, as an application database has them
// before the archiver's first migrate (no (time, id) indexes).
const (
	liveLogsColumns = `id UUID NOT NULL, scenario_id UUID NOT NULL, received_at TIMESTAMPTZ NOT NULL,
		message_hash VARCHAR(64) NOT NULL, message_preview VARCHAR(500), source VARCHAR(100) NOT NULL,
		size_bytes INTEGER NOT NULL, has_pii BOOLEAN NOT NULL, token_count INTEGER NOT NULL,
		sqs_blocks INTEGER NOT NULL`
	liveMetricsTable = `CREATE TABLE scenario_metrics (
		id UUID PRIMARY KEY, scenario_id UUID NOT NULL, timestamp TIMESTAMPTZ NOT NULL,
		metric_type VARCHAR(50) NOT NULL, metric_name VARCHAR(100) NOT NULL, value DECIMAL(15,6) NOT NULL,
		unit VARCHAR(20) NOT NULL, extra_data JSONB DEFAULT '{}');`
	liveReportsTable = `CREATE TABLE reports (
		id UUID PRIMARY KEY, scenario_id UUID NOT NULL, format VARCHAR(10) NOT NULL,
		file_path VARCHAR(500) NOT NULL, file_size_bytes INTEGER, generated_by VARCHAR(100),
		extra_data JSONB DEFAULT '{}', created_at TIMESTAMPTZ NOT NULL);`
	insertLog = `INSERT INTO scenario_logs (id, scenario_id, received_at, message_hash, message_preview, source, size_bytes, has_pii, token_count, sqs_blocks)
		VALUES (gen_random_uuid(), gen_random_uuid(), $1, 'h', 'p', 's', 1, false, 1, 1)`
)

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func mustExec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// leadingIndexes lists rel's indexes whose two leading key columns are
// (timeCol, id), as "name valid|INVALID".
func leadingIndexes(t *testing.T, conn *pgx.Conn, rel, timeCol string) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), `
		SELECT c.relname || CASE WHEN i.indisvalid THEN ' valid' ELSE ' INVALID' END
		FROM pg_index i
		JOIN pg_class c ON c.oid = i.indexrelid
		JOIN pg_attribute a0 ON a0.attrelid = i.indrelid AND a0.attnum = i.indkey[0]
		JOIN pg_attribute a1 ON a1.attrelid = i.indrelid AND a1.attnum = i.indkey[1]
		WHERE i.indrelid = $1::regclass AND a0.attname = $2 AND a1.attname = 'id'
		ORDER BY 1`, rel, timeCol)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// indexSnapshot is every index of the database's user schemas with its
// oid, validity and definition: a rebuild changes the oid.
func indexSnapshot(t *testing.T, conn *pgx.Conn) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), `
		SELECT i.indexrelid::text || ' ' || i.indisvalid::text || ' ' || pg_get_indexdef(i.indexrelid)
		FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
		ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// An application's own index on (received_at, id) is reused whatever its
// name; one on the time column alone, or descending, is not equivalent.
func TestLiveIndexesReuseEquivalentIndex(t *testing.T) {
	t.Parallel()
	_, url := testenv.EmptyDB(t)
	ctx := context.Background()
	conn := connect(t, url)
	mustExec(t, conn, `CREATE TABLE scenario_logs (`+liveLogsColumns+`, PRIMARY KEY (id));
		CREATE INDEX my_own_idx ON scenario_logs (received_at, id);
		`+liveMetricsTable+`
		CREATE INDEX metrics_time_only ON scenario_metrics (timestamp);
		`+liveReportsTable+`
		CREATE INDEX reports_desc ON reports (created_at DESC, id DESC);`)

	res, err := migrations.Apply(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if got := leadingIndexes(t, conn, "scenario_logs", "received_at"); !equalStrings(got, []string{"my_own_idx valid"}) {
		t.Errorf("scenario_logs (received_at, id) indexes: %v, want only my_own_idx", got)
	}
	if got := leadingIndexes(t, conn, "scenario_metrics", "timestamp"); !equalStrings(got, []string{"scenario_metrics_timestamp_id_idx valid"}) {
		t.Errorf("scenario_metrics (timestamp, id) indexes: %v", got)
	}
	if got := leadingIndexes(t, conn, "reports", "created_at"); !equalStrings(got, []string{"reports_created_at_id_idx valid", "reports_desc valid"}) {
		t.Errorf("reports (created_at, id) indexes: %v, want reports_desc and a new reports_created_at_id_idx", got)
	}
	want := []string{"public.scenario_metrics_timestamp_id_idx", "public.reports_created_at_id_idx"}
	if !equalStrings(res.Indexes, want) {
		t.Errorf("Apply reported %v built, want %v", res.Indexes, want)
	}
}

// The build is CONCURRENTLY: while it waits for a transaction already
// writing to the table, other writers go on (a plain CREATE INDEX queues
// for a SHARE lock behind that transaction, and every writer queues
// behind it).
func TestLiveIndexBuildDoesNotBlockWrites(t *testing.T) {
	t.Parallel()
	_, url := testenv.EmptyDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	setup := connect(t, url)
	mustExec(t, setup, `CREATE TABLE scenario_logs (`+liveLogsColumns+`, PRIMARY KEY (id))`)
	mustExec(t, setup, `INSERT INTO scenario_logs SELECT gen_random_uuid(), gen_random_uuid(), now() - g * interval '1 minute',
		'h', 'p', 's', 1, false, 1, 1 FROM generate_series(1, 10000) g`)

	// A transaction of the application's, writing, not yet committed.
	writer := connect(t, url)
	tx, err := writer.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	if _, err := tx.Exec(ctx, insertLog, time.Now()); err != nil {
		t.Fatal(err)
	}

	migrator := connect(t, url)
	pid := migrator.PgConn().PID()
	done := make(chan error, 1)
	go func() { _, _, err := migrations.Up(ctx, migrator); done <- err }()

	// Wait until the migrator waits for the open transaction.
	for waiting := false; !waiting; {
		select {
		case err := <-done:
			t.Fatalf("Up returned while a writer's transaction was open: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		if err := setup.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND NOT granted)`, pid).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
	}

	// Meanwhile another writer is not held up.
	other := connect(t, url)
	mustExec(t, other, `SET lock_timeout = '200ms'`)
	for i := 0; i < 20; i++ {
		if _, err := other.Exec(ctx, insertLog, time.Now()); err != nil {
			t.Errorf("INSERT during the index build: %v", err)
			break
		}
	}

	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Up: %v", err)
	}
	if got := leadingIndexes(t, setup, "scenario_logs", "received_at"); !equalStrings(got, []string{"scenario_logs_received_at_id_idx valid"}) {
		t.Errorf("scenario_logs (received_at, id) indexes: %v", got)
	}
}

// An interrupted concurrent build leaves an invalid index under our name:
// it is dropped and built again (a CREATE INDEX IF NOT EXISTS would keep
// the useless invalid one).
func TestLiveIndexesReplaceInvalidLeftover(t *testing.T) {
	t.Parallel()
	_, url := testenv.EmptyDB(t)
	ctx := context.Background()
	conn := connect(t, url)
	mustExec(t, conn, liveMetricsTable+`
		INSERT INTO scenario_metrics (id, scenario_id, timestamp, metric_type, metric_name, value, unit)
		SELECT gen_random_uuid(), '00000000-0000-4000-8000-000000000001', '2026-01-01', 't', 'n', g, 'u'
		FROM generate_series(1, 3) g;`)
	// A concurrent build that fails half-way (duplicate keys) leaves its
	// index behind, invalid.
	if _, err := conn.Exec(ctx, `CREATE UNIQUE INDEX CONCURRENTLY scenario_metrics_timestamp_id_idx ON scenario_metrics (timestamp, scenario_id)`); err == nil {
		t.Fatal("the unique build over duplicates succeeded")
	}
	var valid bool
	if err := conn.QueryRow(ctx, `SELECT indisvalid FROM pg_index WHERE indexrelid = 'scenario_metrics_timestamp_id_idx'::regclass`).Scan(&valid); err != nil || valid {
		t.Fatalf("no invalid leftover to test with: valid=%v, %v", valid, err)
	}

	if _, _, err := migrations.Up(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if got := leadingIndexes(t, conn, "scenario_metrics", "timestamp"); !equalStrings(got, []string{"scenario_metrics_timestamp_id_idx valid"}) {
		t.Errorf("scenario_metrics (timestamp, id) indexes: %v, want our index rebuilt valid", got)
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_index WHERE indrelid = 'scenario_metrics'::regclass AND NOT indisvalid`).Scan(&n); err != nil || n != 0 {
		t.Errorf("invalid indexes left on scenario_metrics: %d, %v", n, err)
	}
}

// A partitioned live table (a DEFAULT partition, three monthly ones, one of
// them sub-partitioned, one with an equivalent index of its own): every
// partition gets a valid equivalent index, built concurrently, the parent a
// valid index with them attached, and a new partition inherits it.
func TestLiveIndexesPartitionedTable(t *testing.T) {
	t.Parallel()
	_, url := testenv.EmptyDB(t)
	ctx := context.Background()
	conn := connect(t, url)
	mustExec(t, conn, `CREATE TABLE scenario_logs (`+liveLogsColumns+`, PRIMARY KEY (id, received_at)) PARTITION BY RANGE (received_at);
		CREATE TABLE scenario_logs_y2026m01 PARTITION OF scenario_logs FOR VALUES FROM ('2026-01-01 00:00Z') TO ('2026-02-01 00:00Z');
		CREATE TABLE scenario_logs_y2026m02 PARTITION OF scenario_logs FOR VALUES FROM ('2026-02-01 00:00Z') TO ('2026-03-01 00:00Z');
		CREATE INDEX feb_own_idx ON scenario_logs_y2026m02 (received_at, id);
		CREATE TABLE scenario_logs_y2026m03 PARTITION OF scenario_logs FOR VALUES FROM ('2026-03-01 00:00Z') TO ('2026-04-01 00:00Z')
			PARTITION BY HASH (id);
		CREATE TABLE scenario_logs_y2026m03_h0 PARTITION OF scenario_logs_y2026m03 FOR VALUES WITH (MODULUS 2, REMAINDER 0);
		CREATE TABLE scenario_logs_y2026m03_h1 PARTITION OF scenario_logs_y2026m03 FOR VALUES WITH (MODULUS 2, REMAINDER 1);
		CREATE TABLE scenario_logs_default PARTITION OF scenario_logs DEFAULT;`)
	for _, ts := range []string{"2025-06-01", "2026-01-15", "2026-02-15", "2026-03-15", "2026-03-16", "2027-01-01"} {
		mustExec(t, conn, insertLog, ts)
	}

	res, err := migrations.Apply(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built: %v", res.Indexes)

	want := map[string]string{
		"scenario_logs":             "scenario_logs_received_at_id_idx valid",
		"scenario_logs_y2026m01":    "scenario_logs_y2026m01_received_at_id_idx valid",
		"scenario_logs_y2026m02":    "feb_own_idx valid",
		"scenario_logs_y2026m03":    "scenario_logs_y2026m03_received_at_id_idx valid",
		"scenario_logs_y2026m03_h0": "scenario_logs_y2026m03_h0_received_at_id_idx valid",
		"scenario_logs_y2026m03_h1": "scenario_logs_y2026m03_h1_received_at_id_idx valid",
		"scenario_logs_default":     "scenario_logs_default_received_at_id_idx valid",
	}
	check := func(want map[string]string) {
		t.Helper()
		for rel, idx := range want {
			if got := leadingIndexes(t, conn, rel, "received_at"); !equalStrings(got, []string{idx}) {
				t.Errorf("%s (received_at, id) indexes: %v, want [%s]", rel, got, idx)
			}
		}
	}
	check(want)
	// Every partition's index is attached to the parent's (which is why
	// it is valid).
	var unattached int
	if err := conn.QueryRow(ctx, `
		SELECT count(*) FROM pg_partition_tree('scenario_logs_received_at_id_idx') WHERE parentrelid IS NULL AND level > 0`).Scan(&unattached); err != nil || unattached != 0 {
		t.Errorf("unattached partition indexes: %d, %v", unattached, err)
	}
	var tree int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_partition_tree('scenario_logs_received_at_id_idx')`).Scan(&tree); err != nil || tree != len(want) {
		t.Errorf("index tree has %d indexes, want %d: %v", tree, len(want), err)
	}

	// Again: nothing to do.
	before := indexSnapshot(t, conn)
	res, err = migrations.Apply(ctx, conn)
	if err != nil || len(res.Indexes) != 0 {
		t.Fatalf("second Apply built %v: %v", res.Indexes, err)
	}
	if after := indexSnapshot(t, conn); !equalStrings(before, after) {
		t.Errorf("second Apply changed the indexes:\n%v\n%v", before, after)
	}

	// A partition made later gets the index from the parent's.
	mustExec(t, conn, `CREATE TABLE scenario_logs_y2026m04 PARTITION OF scenario_logs FOR VALUES FROM ('2026-04-01 00:00Z') TO ('2026-05-01 00:00Z')`)
	if got := leadingIndexes(t, conn, "scenario_logs_y2026m04", "received_at"); len(got) != 1 || !strings.HasSuffix(got[0], " valid") {
		t.Errorf("new partition's (received_at, id) indexes: %v", got)
	}
}

// An inheritance parent and its child each get the index: indexes are not
// inherited.
func TestLiveIndexesInheritanceParent(t *testing.T) {
	t.Parallel()
	_, url := testenv.EmptyDB(t)
	ctx := context.Background()
	conn := connect(t, url)
	mustExec(t, conn, liveMetricsTable+`
		CREATE TABLE scenario_metrics_2025 () INHERITS (scenario_metrics);`)
	if _, _, err := migrations.Up(ctx, conn); err != nil {
		t.Fatal(err)
	}
	for rel, idx := range map[string]string{
		"scenario_metrics":      "scenario_metrics_timestamp_id_idx valid",
		"scenario_metrics_2025": "scenario_metrics_2025_timestamp_id_idx valid",
	} {
		if got := leadingIndexes(t, conn, rel, "timestamp"); !equalStrings(got, []string{idx}) {
			t.Errorf("%s (timestamp, id) indexes: %v, want [%s]", rel, got, idx)
		}
	}
}

// Up twice: the second builds nothing and changes no index.
func TestLiveIndexesUpTwiceChangesNothing(t *testing.T) {
	t.Parallel()
	_, url := testenv.EmptyDB(t)
	ctx := context.Background()
	conn := connect(t, url)
	res, err := migrations.Apply(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"public.scenario_logs_received_at_id_idx", "public.scenario_metrics_timestamp_id_idx", "public.reports_created_at_id_idx"}
	if !equalStrings(res.Indexes, want) {
		t.Errorf("first Apply built %v, want %v", res.Indexes, want)
	}
	before := indexSnapshot(t, conn)
	res, err = migrations.Apply(ctx, conn)
	if err != nil || len(res.Indexes) != 0 || res.From != res.To {
		t.Fatalf("second Apply: %+v, %v; want a no-op", res, err)
	}
	if after := indexSnapshot(t, conn); !equalStrings(before, after) {
		t.Errorf("second Apply changed the indexes:\n%v\n%v", before, after)
	}
}
