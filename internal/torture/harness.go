package torture

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"pgregory.net/rapid"

	"github.com/mockupaws/archiver/internal/database"
	"github.com/mockupaws/archiver/internal/objectstore"
	"github.com/mockupaws/archiver/internal/policy"
	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/migrations"
	"github.com/mockupaws/archiver/workflows"
)

// opDeadline bounds every operation: a run, a restore or a verification
// that has not ended by then has hung (or retries what no retry heals).
const opDeadline = 2 * time.Minute

// suite is what the scenarios of one test share: the stack, a Temporal
// client, a bucket, and the tally the summary prints.
type suite struct {
	t     *testing.T
	env   testenv.Env
	c     client.Client
	store *objectstore.Store
	stats *stats
}

// stats is the campaign's tally.
type stats struct {
	seeds, scenarios, ops, faults, rowsChecked int
	failed                                     []string
	// covered is what the scenarios took of the generator's branches
	// (coverage.go); newBy, the branches each seed took first.
	covered map[string]bool
	newBy   map[string][]string
}

// harness is one scenario's database, worker and model.
type harness struct {
	s       *suite
	sc      *scenario
	id      string
	url     string
	db      *pgxpool.Pool // superuser: the application and the oracle
	w       *testenv.WorkerProcess
	queue   string
	pol     []policy.Table
	models  []*model
	asOf    time.Time
	op      int // operations so far
	covered map[string]bool
	// running is the workflow id execute waits on; serverErr, a server
	// fault that could not be made (servers.go).
	running   atomic.Pointer[string]
	serverErr error
	cleanup   []func()
}

// newHarness makes the scenario's database as its application would have
// (schema, rows, settings, grants), installs the archiver (`starter
// migrate`), and starts a worker process for it.
func newHarness(t *rapid.T, s *suite, sc *scenario, id string) *harness {
	ctx := context.Background()
	h := &harness{s: s, sc: sc, id: id, asOf: t0, queue: "torture-" + id, covered: map[string]bool{}}
	h.coverScenario()
	t.Cleanup(h.close)
	url, drop, err := testenv.CreateEmptyDatabase(ctx, s.env, "torture_"+id)
	if err != nil {
		t.Fatalf("create the scenario's database: %v", err)
	}
	h.cleanup = append(h.cleanup, func() { _ = drop() })
	h.url = url
	h.db, err = pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	h.cleanup = append(h.cleanup, h.db.Close)
	t.Logf("schema:\n%s;", strings.Join(sc.ddl(), ";\n"))
	h.exec(t, sc.ddl()...)
	h.fileRoots(t)
	for _, tb := range sc.tables {
		h.models = append(h.models, newModel(tb))
	}
	for i, tb := range sc.tables {
		h.seed(t, tb, h.models[i])
	}
	if len(sc.settings) > 0 {
		var set []string
		for k, v := range sc.settings {
			set = append(set, fmt.Sprintf(`ALTER DATABASE %s SET %s = %s`, q(dbName(url)), k, quoteLit(v)))
		}
		t.Logf("settings: %v", sc.settings)
		h.exec(t, set...)
	}
	conn, err := database.Connect(ctx, url, "archiver-starter")
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = migrations.Up(ctx, conn)
	conn.Close(ctx)
	if err != nil {
		t.Fatalf("migrate: %v", err)
	}
	h.exec(t, sc.grants()...)
	for _, tb := range sc.tables {
		if tb.ownedByRole {
			h.ownerRole(t, tb)
		}
	}
	// The database's settings apply to sessions that start later.
	h.db.Reset()
	yaml := sc.policyYAML(s.store.Bucket(), id)
	t.Logf("policy:\n%s", yaml)
	if h.pol, err = policy.Parse("torture.yaml", []byte(yaml)); err != nil {
		t.Fatalf("the generated policy does not parse: %v", err)
	}
	sc.builtinAges(h.pol)
	h.w = testenv.StartWorkerProcess(s.t, testenv.WorkerURL(s.t, url), h.queue, "REPORTS_ARCHIVE_BUCKET="+s.store.Bucket())
	h.cleanup = append(h.cleanup, h.w.Stop)
	return h
}

func (h *harness) close() {
	for i := len(h.cleanup) - 1; i >= 0; i-- {
		h.cleanup[i]()
	}
}

func (h *harness) exec(t *rapid.T, sqls ...string) {
	for _, s := range sqls {
		if _, err := h.db.Exec(context.Background(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

func dbName(url string) string {
	s := url[strings.LastIndex(url, "/")+1:]
	if i := strings.IndexByte(s, '?'); i >= 0 {
		s = s[:i]
	}
	return s
}

func quoteLit(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// ownerRole gives the partitioned table to a role of the scenario's own,
// which the worker is a member of: what partition exchange needs. Roles
// are the cluster's, so it is dropped after the database.
func (h *harness) ownerRole(t *rapid.T, tb *table) {
	ctx := context.Background()
	role := "torture_owner_" + h.id
	admin, err := pgx.Connect(ctx, h.s.env.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, `CREATE ROLE `+q(role)+` NOLOGIN`); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	h.cleanup = append([]func(){func() {
		c, err := pgx.Connect(context.Background(), h.s.env.AdminURL)
		if err == nil {
			_, _ = c.Exec(context.Background(), `DROP ROLE IF EXISTS `+q(role))
			c.Close(context.Background())
		}
	}}, h.cleanup...) // runs last: after the database is dropped
	h.exec(t, fmt.Sprintf(`DO $$ DECLARE r regclass; BEGIN
		FOR r IN SELECT %[1]s::regclass UNION ALL
		         SELECT c.oid::regclass FROM pg_partition_tree(%[1]s) p JOIN pg_class c ON c.oid = p.relid WHERE p.level > 0 LOOP
			EXECUTE format('ALTER TABLE %%s OWNER TO %[2]s', r);
		END LOOP; END $$`, quoteLit(tb.rel("")), q(role)),
		fmt.Sprintf(`GRANT %s TO archiver_worker`, q(role)),
		// What the application's owner role has: its schemas (a cascade
		// from a parent row runs as the owner of the rows it deletes).
		fmt.Sprintf(`GRANT USAGE ON SCHEMA app, public TO %s`, q(role)))
	if tb.fk != "" {
		h.exec(t, fmt.Sprintf(`GRANT SELECT, UPDATE ON %s TO %s`, tb.rel("_parent"), q(role)))
	}
}

// seed writes the table's first rows, as the application did before the
// archiver came: three years back to a year ahead.
func (h *harness) seed(t *rapid.T, tb *table, m *model) {
	targets := []string{tb.rel("")}
	if tb.kind == kindInherited {
		targets = []string{tb.rel(""), tb.rel("_old"), tb.rel("_older")}
	}
	lo := t0.AddDate(-3, 0, 0)
	span := int64(t0.AddDate(1, 0, 0).Sub(lo) / time.Second)
	for i, target := range targets {
		n := tb.rows / len(targets)
		rows, err := h.insert(tb, m, target, fmt.Sprintf("%s-seed-%d", h.id, i), n, lo, span)
		if err != nil {
			t.Fatal(err)
		}
		if tb.dupes && rows > 0 {
			names, _ := tb.insertable()
			cols := strings.Join(names, ", ")
			if _, err := h.write(tb, m, fmt.Sprintf(`INSERT INTO %s (%s) SELECT %s FROM ONLY %s ORDER BY %s LIMIT 5 RETURNING %s`,
				target, cols, cols, target, q(tb.timeCol), tb.returning(""))); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// write runs one statement of the application's that returns what the
// model learns of each row it wrote (table.returning), under the pinned
// settings, and adds those rows to the model. It returns how many.
func (h *harness) write(tb *table, m *model, sql string, args ...any) (int, error) {
	ctx := context.Background()
	var n int
	err := pgx.BeginFunc(ctx, h.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, pinnedSettings); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		got, err := scanRows(rows)
		if err != nil {
			return err
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, r := range got {
			m.add(r, h.op)
		}
		n = len(got)
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("application write to %s: %w\n%s", tb.qualified(), err, sql)
	}
	return n, nil
}

// rowSeen is what table.returning gives of a row.
type rowSeen struct {
	digest string
	micros int64
	where  *string
	vals   []*string // a downsample's groups and values
}

func scanRows(rows pgx.Rows) ([]rowSeen, error) {
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (rowSeen, error) {
		var s rowSeen
		return s, r.Scan(&s.digest, &s.micros, &s.where, &s.vals)
	})
}

// outcome is how a workflow the scenario started ended.
type outcome struct {
	err   error
	kills int
}

// failpoints are the worker's places to die at, and the fault it injects
// without dying (worker/failpoints_faults.go).
var failpoints = []string{
	"ARCHIVER_FAULT_KILL_AFTER_BATCH",
	"ARCHIVER_FAULT_KILL_AFTER_EXCHANGE_STEP",
	"ARCHIVER_FAULT_KILL_AFTER_EXPORT_STEP",
	"ARCHIVER_FAULT_KILL_AFTER_RESTORE_BATCH",
	corruptUpload,
}

// corruptUpload changes a byte of an export's object on S3 right after its
// upload (size and recorded SHA-256 kept): only the read-back can tell.
const corruptUpload = "ARCHIVER_FAULT_CORRUPT_UPLOAD"

// execute starts a workflow (id, or one of the scenario's own when "") on
// the scenario's worker and waits for it,
// through the fault drawn: the worker restarted with a failpoint armed;
// each time it dies there, its lost attempts are failed on the server
// (what their timeouts would do, early) and it starts again, disarmed.
func (h *harness) execute(t *rapid.T, workflow, id string, in any, result any, fault string, n int, during func(ctx context.Context)) outcome {
	start := func(ctx context.Context, opts client.StartWorkflowOptions) (client.WorkflowRun, error) {
		return h.s.c.ExecuteWorkflow(ctx, opts, workflow, in)
	}
	return h.executeWith(t, workflow, id, start, result, fault, n, during)
}

// executeWith is execute with the workflow started by start (a
// signal-with-start, say) under the options given.
func (h *harness) executeWith(t *rapid.T, workflow, id string, start func(context.Context, client.StartWorkflowOptions) (client.WorkflowRun, error),
	result any, fault string, n int, during func(ctx context.Context)) outcome {
	ctx := context.Background()
	var out outcome
	began := time.Now()
	defer func() {
		t.Logf("  %s took %s (worker killed %d times)", workflow, time.Since(began).Round(time.Millisecond), out.kills)
	}()
	if fault != "" {
		h.w.Stop()
		h.w.Env = testenv.SetEnv(h.w.Env, fault, fmt.Sprint(n))
		h.w.Start()
		defer func() { h.w.Env = testenv.SetEnv(h.w.Env, fault, "") }()
	}
	if id == "" {
		id = fmt.Sprintf("torture-%s-%d", h.id, h.op)
	}
	h.running.Store(&id)
	defer h.running.Store(nil)
	run, err := start(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: h.queue, WorkflowTaskTimeout: workflows.TaskTimeout})
	if err != nil {
		t.Fatalf("start %s: %v", workflow, err)
	}
	outputBefore := len(h.w.Output())
	defer func() {
		if strings.Contains(h.w.Output()[outputBefore:], "failpoint: corrupted upload") {
			h.s.stats.faults++
			h.cover("fault=" + corruptUpload)
		}
	}()
	wctx, cancel := context.WithTimeout(ctx, opDeadline)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run.Get(wctx, result) }()
	stopWrites := func() {}
	if during != nil {
		dctx, stop := context.WithCancel(ctx)
		finished := make(chan struct{})
		go func() { defer close(finished); during(dctx) }()
		stopWrites = func() { stop(); <-finished }
	}
	defer stopWrites()
	for {
		select {
		case err := <-done:
			stopWrites()
			// The client may return the server's own deadline error, which
			// is not context's: the deadline is ours either way.
			if err != nil && (errors.Is(err, context.DeadlineExceeded) || wctx.Err() != nil) {
				t.Fatalf("%s did not end within %v (hung, or retrying what no retry heals): %s", workflow, opDeadline, pending(h.s.c, run.GetID()))
			}
			out.err = err
			return out
		case <-h.w.Exited():
			line := lastLine(h.w.Output())
			point := failpointOf(line)
			if point == "" {
				t.Fatalf("the worker exited with no failpoint armed to kill it (it crashed):\n%s", tail(h.w.Output(), 30))
			}
			out.kills++
			h.s.stats.faults++
			t.Logf("worker died at %s", line)
			h.cover("fault=" + point)
			testenv.FailLostActivities(h.s.t, h.s.c, run.GetID())
			if d, err := h.s.c.DescribeWorkflowExecution(ctx, run.GetID(), ""); err == nil {
				for _, c := range d.GetPendingChildren() { // a backfill's run
					testenv.FailLostActivities(h.s.t, h.s.c, c.GetWorkflowId())
				}
			}
			if fault != "" {
				h.w.Env = testenv.SetEnv(h.w.Env, fault, "")
			}
			h.w.Start()
		}
	}
}

// pending says what a hung workflow waits on.
func pending(c client.Client, id string) string {
	d, err := c.DescribeWorkflowExecution(context.Background(), id, "")
	if err != nil {
		return err.Error()
	}
	var parts []string
	for _, a := range d.GetPendingActivities() {
		parts = append(parts, fmt.Sprintf("%s attempt %d: %s", a.GetActivityType().GetName(), a.GetAttempt(), a.GetLastFailure().GetMessage()))
	}
	for _, ch := range d.GetPendingChildren() { // a backfill's run
		parts = append(parts, ch.GetWorkflowId()+": "+pending(c, ch.GetWorkflowId()))
	}
	if len(parts) == 0 {
		return "no pending activity (a local activity retrying inside the workflow task, or a timer)"
	}
	return strings.Join(parts, "; ")
}

// failpointOf names the failpoint a "failpoint: killed after …" line
// reports ("" for none).
func failpointOf(line string) string {
	for what, point := range map[string]string{
		"killed after archive batch": "ARCHIVER_FAULT_KILL_AFTER_BATCH",
		"killed after exchange step": "ARCHIVER_FAULT_KILL_AFTER_EXCHANGE_STEP",
		"killed after export step":   "ARCHIVER_FAULT_KILL_AFTER_EXPORT_STEP",
		"killed after restore batch": "ARCHIVER_FAULT_KILL_AFTER_RESTORE_BATCH",
	} {
		if strings.Contains(line, what) {
			return point
		}
	}
	return ""
}

func tail(out string, n int) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func lastLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], "failpoint:") {
			return lines[i]
		}
	}
	return "(no failpoint line)"
}

// appError is the application error a failed workflow carries.
func appError(err error) (*temporal.ApplicationError, bool) {
	var a *temporal.ApplicationError
	return a, errors.As(err, &a)
}
