// Package realdb runs the real workflow, worker and activities over
// databases the archiver's migrations did not create (docs/design.md): the
// application's tables are made first, in the shapes production databases
// have (partitioned, inherited, extra or mistyped columns, foreign keys,
// other session settings, shared files...), then `starter migrate`'s
// migrations run on top, as they would for a new user.
//
// After every run: live ∪ archive equals the original rows by content
// checksum, no row younger than the cut-off is archived, no file still
// referenced or changed is removed; every refusal names its cause and
// changes nothing.
package realdb

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/database"
	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/migrations"
	"github.com/mockupaws/archiver/workflows"
)

// asOf is every run's instant; the cut-offs follow from the policy.
var (
	asOf          = time.Date(2026, 3, 15, 3, 0, 0, 0, time.UTC)
	logsCutoff    = asOf.Add(-365 * 24 * time.Hour)                                // 2025-03-15 03:00
	metricsCutoff = time.Date(2024, 3, 15, 0, 0, 0, 0, time.UTC)                   // day of asOf − 730 days
	reportsCutoff = asOf.Add(-180 * 24 * time.Hour)                                // 2025-09-16 03:00
	retentionEnd  = asOf.Add(-7 * 365 * 24 * time.Hour).Truncate(time.Microsecond) // logs: 2019-03-17 03:00
)

// realDB is one database made for a test, before and after migrating.
type realDB struct {
	t     *testing.T
	url   string
	db    *pgxpool.Pool // superuser, settings pinned: fixtures and checks
	c     client.Client
	acts  *activities.Activities
	queue string
}

// newRealDB makes an empty database and runs the application's DDL in it,
// as the application would have, before the archiver is installed.
func newRealDB(t *testing.T, ddl ...string) *realDB {
	t.Helper()
	t.Parallel()
	_, url := testenv.EmptyDB(t)
	d := &realDB{t: t, url: url, db: testenv.Pool(t, url)}
	d.exec(ddl...)
	return d
}

func (d *realDB) exec(sqls ...string) {
	d.t.Helper()
	for _, s := range sqls {
		if _, err := d.db.Exec(context.Background(), s); err != nil {
			d.t.Fatalf("%s: %v", firstLine(s), err)
		}
	}
}

// migrate runs `starter migrate`'s migrations, on a connection with the
// settings pinned as the starter's is.
func (d *realDB) migrate() {
	d.t.Helper()
	conn, err := database.Connect(context.Background(), d.url, "archiver-starter")
	if err != nil {
		d.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, _, err := migrations.Up(context.Background(), conn); err != nil {
		d.t.Fatalf("migrate: %v", err)
	}
	// A database-level setting applies to sessions that start later: the
	// checking pool reconnects so that it sees the migrated schema anew.
	d.db.Reset()
}

// worker starts the real worker for this database, as the least-privilege
// login, on a task queue of the test's own.
func (d *realDB) worker(configure func(*activities.Activities)) {
	d.t.Helper()
	d.c = testenv.Temporal(d.t)
	d.acts = &activities.Activities{DB: testenv.WorkerPool(d.t, d.url)}
	if configure != nil {
		configure(d.acts)
	}
	d.queue = testenv.StartWorker(d.t, d.c, d.acts)
}

// run archives tables as of asOf through Temporal and returns the summary
// and the run's error.
func (d *realDB) run(in workflows.ArchiveInput) (workflows.ArchiveResult, error) {
	d.t.Helper()
	if d.c == nil {
		d.worker(nil)
	}
	if in.AsOf.IsZero() {
		in.AsOf = asOf
	}
	run, err := d.c.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{
		ID: "realdb-" + testenv.RandomID(), TaskQueue: d.queue,
	}, workflows.ArchiveWorkflowName, in)
	if err != nil {
		d.t.Fatalf("start: %v", err)
	}
	var res workflows.ArchiveResult
	err = testenv.Wait(d.t, d.c, run, testenv.DefaultWait, &res)
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) && appErr.HasDetails() {
		_ = appErr.Details(&res)
	}
	return res, err
}

// mustRun runs and fails the test unless every table completed.
func (d *realDB) mustRun(in workflows.ArchiveInput) workflows.ArchiveResult {
	d.t.Helper()
	res, err := d.run(in)
	if err != nil {
		d.t.Fatalf("run failed: %v (summary %+v)", err, res.Tables)
	}
	return res
}

// refused runs and checks that it failed with an error naming cause, and
// that nothing changed: the live tables' rows, no archived row, no ledger
// row.
func (d *realDB) refused(in workflows.ArchiveInput, cause string) {
	d.t.Helper()
	before := d.fingerprint()
	res, err := d.run(in)
	if err == nil {
		d.t.Fatalf("the run completed; want a refusal naming %q", cause)
	}
	if !strings.Contains(err.Error(), cause) {
		d.t.Fatalf("the run failed with %q\nwant it to name %q", err, cause)
	}
	for _, tr := range res.Tables {
		if tr.Status != workflows.StatusFailed || !strings.Contains(tr.Error, cause) {
			d.t.Fatalf("table %s: %s %q, want failed naming %q", tr.Table, tr.Status, tr.Error, cause)
		}
	}
	if after := d.fingerprint(); after != before {
		d.t.Fatalf("a refused run changed the database:\nbefore %s\nafter  %s", before, after)
	}
	var jobs, failed int64
	if err := d.db.QueryRow(context.Background(), `SELECT count(*), count(*) FILTER (WHERE status = 'failed' AND error_message LIKE '%' || $1 || '%') FROM archive_jobs`, cause).Scan(&jobs, &failed); err != nil {
		d.t.Fatal(err)
	}
	if jobs != failed || jobs == 0 {
		d.t.Fatalf("%d archive_jobs rows, %d failed naming the cause: want every one", jobs, failed)
	}
}

// fingerprint digests what a refused run must not change: every live
// table's rows, and the archive and ledger row counts.
func (d *realDB) fingerprint() string {
	d.t.Helper()
	var parts []string
	for _, tbl := range []string{"scenario_logs", "scenario_metrics", "reports"} {
		n, sum := d.rows(tbl, "")
		parts = append(parts, fmt.Sprintf("%s:%d:%s", tbl, n, sum))
	}
	for _, q := range []string{
		`SELECT count(*) FROM scenario_logs_archive`, `SELECT count(*) FROM scenario_metrics_archive`,
		`SELECT count(*) FROM reports_archive`, `SELECT count(*) FROM archive_batches WHERE rows_deleted > 0`,
	} {
		parts = append(parts, fmt.Sprint(testenv.Count(d.t, d.db, q)))
	}
	return strings.Join(parts, " ")
}

// rows digests the whole rows of a table (every column it has now), in
// no particular order, optionally filtered ("" for all).
func (d *realDB) rows(table, where string) (int64, string) {
	d.t.Helper()
	return d.columns(table+" t", "t.*", where)
}

// columns digests the given columns of the rows of a table or view, in no
// particular order.
func (d *realDB) columns(relation, cols, where string) (int64, string) {
	d.t.Helper()
	if where == "" {
		where = "true"
	}
	var n int64
	var sum string
	q := fmt.Sprintf(`SELECT count(*), COALESCE(md5(string_agg(h, '' ORDER BY h)), '')
		FROM (SELECT md5(row(%s)::text) AS h FROM %s WHERE %s) x`, cols, relation, where)
	if err := d.db.QueryRow(context.Background(), q).Scan(&n, &sum); err != nil {
		d.t.Fatalf("digest %s: %v", relation, err)
	}
	return n, sum
}

// count runs a counting query.
func (d *realDB) count(sql string, args ...any) int64 {
	d.t.Helper()
	return testenv.Count(d.t, d.db, sql, args...)
}

// logsMoved checks the logs invariants after a run: live ∪ archive holds
// exactly the original rows (cols, digested before the run as want), no
// archived row is younger than the cut-off, none eligible is left live.
func (d *realDB) logsMoved(cols string, wantN int64, want string) {
	d.t.Helper()
	n, sum := d.columns(fmt.Sprintf(`(SELECT %[1]s FROM scenario_logs UNION ALL SELECT %[1]s FROM scenario_logs_archive) u`, cols), cols, "")
	if n != wantN || sum != want {
		d.t.Fatalf("live ∪ archive holds %d rows (%s), want the original %d (%s)", n, sum, wantN, want)
	}
	if k := d.count(`SELECT count(*) FROM scenario_logs_archive WHERE received_at >= $1`, logsCutoff); k != 0 {
		d.t.Fatalf("%d archived rows are younger than the cut-off", k)
	}
	if k := d.count(`SELECT count(*) FROM scenario_logs WHERE received_at < $1`, logsCutoff); k != 0 {
		d.t.Fatalf("%d eligible rows are still live", k)
	}
	if k := d.count(`SELECT count(*) FROM scenario_logs l JOIN scenario_logs_archive a USING (id)`); k != 0 {
		d.t.Fatalf("%d rows are in both tables", k)
	}
	if k := d.count(`SELECT count(*) FROM archive_batches b WHERE b.table_name = 'scenario_logs'
		AND rows_moved <> (SELECT count(*) FROM scenario_logs_archive a WHERE a.archive_batch_id = b.batch_id)`); k != 0 {
		d.t.Fatalf("%d ledger rows disagree with the rows carrying their batch id", k)
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i > 0 {
		return s[:i] + " ..."
	}
	return s
}

// logsDDL is the seed's scenario_logs with a clause in place of the table
// options (partitioning), and extra column definitions.
func logsDDL(extra, options string) string {
	return fmt.Sprintf(`CREATE TABLE scenario_logs (
    id              UUID NOT NULL,
    scenario_id     UUID NOT NULL,
    received_at     TIMESTAMPTZ NOT NULL,
    message_hash    VARCHAR(64) NOT NULL,
    message_preview VARCHAR(500),
    source          VARCHAR(100) NOT NULL,
    size_bytes      INTEGER NOT NULL,
    has_pii         BOOLEAN NOT NULL,
    token_count     INTEGER NOT NULL,
    sqs_blocks      INTEGER NOT NULL%s
) %s`, extra, options)
}

// logColumns are the seed's log columns.
const logColumns = `id, scenario_id, received_at, message_hash, message_preview, source, size_bytes, has_pii, token_count, sqs_blocks`

// insertLogs adds n log rows into table (the parent or a child), one every
// step back from end, with content that differs row to row.
func (d *realDB) insertLogs(table string, n int, end time.Time, step time.Duration) {
	d.t.Helper()
	_, err := d.db.Exec(context.Background(), fmt.Sprintf(`
		INSERT INTO %s (%s)
		SELECT gen_random_uuid(), md5((i %% 7)::text)::uuid, $1::timestamptz - i * $2::float8 * interval '1 second',
		       md5(i::text || $3), CASE WHEN i %% 5 = 0 THEN NULL ELSE 'preview ' || i END,
		       (ARRAY['api', 'sqs', 'batch'])[1 + i %% 3], 100 + i, i %% 11 = 0, 10 + i %% 50, 1 + i %% 3
		FROM generate_series(1, $4::int) i`, table, logColumns), end, step.Seconds(), table, n)
	if err != nil {
		d.t.Fatalf("insert logs into %s: %v", table, err)
	}
}
