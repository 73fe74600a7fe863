// Package testenv gives integration tests the real services of the dev stack
// (`make dev-up`): a PostgreSQL database of their own, migrated, dropped when
// the test ends; a Temporal client; a worker on a task queue of their own.
//
// Without the stack's environment the tests skip, unless
// ARCHIVER_REQUIRE_STACK is set (`make test` and CI set it), in which case
// they fail: CI must never pass by skipping.
package testenv

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/database"
	"github.com/mockupaws/archiver/internal/temporalclient"
	"github.com/mockupaws/archiver/migrations"
)

// Env is the dev stack as the tests see it.
type Env struct {
	AdminURL        string // a superuser URL whose database is "postgres"
	TemporalAddress string
	Namespace       string
}

// Load reads the stack's environment or skips (fails under
// ARCHIVER_REQUIRE_STACK) when it is absent.
func Load(t testing.TB) Env {
	t.Helper()
	e := Env{
		AdminURL:        os.Getenv("ARCHIVER_TEST_ADMIN_URL"),
		TemporalAddress: os.Getenv("TEMPORAL_ADDRESS"),
		Namespace:       os.Getenv("TEMPORAL_NAMESPACE"),
	}
	if e.Namespace == "" {
		e.Namespace = "default"
	}
	if e.AdminURL == "" || e.TemporalAddress == "" {
		msg := "dev stack environment missing (ARCHIVER_TEST_ADMIN_URL, TEMPORAL_ADDRESS): run `make test`, or `make dev-up` and `set -a; . .dev/env; set +a`"
		if os.Getenv("ARCHIVER_REQUIRE_STACK") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return e
}

// NewDB creates a database of the test's own, with the schema applied, and
// drops it when the test ends. Databases are cloned from a template migrated
// once per schema version, which keeps this to a few tens of milliseconds.
func NewDB(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	env := Load(t)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, env.AdminURL)
	if err != nil {
		t.Fatalf("connect to the dev stack's PostgreSQL: %v", err)
	}
	defer admin.Close(ctx)

	name := dbName(t.Name())
	err = withTemplate(ctx, admin, env.AdminURL, func(tmpl string) error {
		_, err := admin.Exec(ctx, fmt.Sprintf(`CREATE DATABASE %s TEMPLATE %s`,
			pgx.Identifier{name}.Sanitize(), pgx.Identifier{tmpl}.Sanitize()))
		return err
	})
	if err != nil {
		t.Fatalf("create test database: %v", err)
	}
	url := withDatabase(t, env.AdminURL, name)
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatalf("connect to test database: %v", err)
	}
	dropAtCleanup(t, env, name)
	t.Cleanup(pool.Close) // before the drop: cleanups run last-in first-out
	return pool, url
}

// dropAtCleanup drops the test database name when the test ends.
func dropAtCleanup(t testing.TB, env Env, name string) {
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), env.AdminURL)
		if err != nil {
			t.Errorf("drop test database %s: %v", name, err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(context.Background(), fmt.Sprintf(`DROP DATABASE IF EXISTS %s WITH (FORCE)`, pgx.Identifier{name}.Sanitize())); err != nil {
			t.Errorf("drop test database %s: %v", name, err)
		}
	})
}

// withTemplate makes sure the template of the current schema version
// exists (migrating it also makes the cluster's roles, archiver_worker
// among them), then runs f with its name. One lock for every test process:
// template creation and CREATE DATABASE ... TEMPLATE both need the template
// free of other sessions.
func withTemplate(ctx context.Context, admin *pgx.Conn, adminURL string, f func(tmpl string) error) error {
	fp, err := migrations.Fingerprint()
	if err != nil {
		return fmt.Errorf("fingerprint migrations: %w", err)
	}
	tmpl := "archiver_tmpl_" + fp
	if _, err := admin.Exec(ctx, `SELECT pg_advisory_lock(7243001)`); err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	defer admin.Exec(ctx, `SELECT pg_advisory_unlock(7243001)`) //nolint:errcheck
	if err := ensureTemplate(ctx, admin, adminURL, tmpl); err != nil {
		return err
	}
	return f(tmpl)
}

func ensureTemplate(ctx context.Context, admin *pgx.Conn, adminURL, tmpl string) error {
	var exists bool
	if err := admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, tmpl).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nil
	}
	// Templates of older schema versions are of no further use.
	old, err := admin.Query(ctx, `SELECT datname FROM pg_database WHERE datname LIKE 'archiver_tmpl_%'`)
	if err != nil {
		return err
	}
	names, err := pgx.CollectRows(old, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, n := range names {
		if _, err := admin.Exec(ctx, fmt.Sprintf(`DROP DATABASE IF EXISTS %s WITH (FORCE)`, pgx.Identifier{n}.Sanitize())); err != nil {
			return err
		}
	}
	if _, err := admin.Exec(ctx, fmt.Sprintf(`CREATE DATABASE %s`, pgx.Identifier{tmpl}.Sanitize())); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, replaceDatabase(adminURL, tmpl))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, _, err := migrations.Up(ctx, conn); err != nil {
		_, _ = admin.Exec(ctx, fmt.Sprintf(`DROP DATABASE IF EXISTS %s WITH (FORCE)`, pgx.Identifier{tmpl}.Sanitize()))
		return err
	}
	return nil
}

// WorkerLogin is the test login that runs activities: a member of the
// least-privilege role archiver_worker (migrations/003_worker_role.sql), so
// every test exercises the worker's real privileges.
const WorkerLogin = "archiver_test_worker"

// WorkerPool connects to a test database (a URL from NewDB) as WorkerLogin,
// creating that login once per cluster.
func WorkerPool(t testing.TB, dbURL string) *pgxpool.Pool {
	t.Helper()
	return Pool(t, WorkerURL(t, dbURL))
}

// WorkerURL is a test database's URL for WorkerLogin (created once per
// cluster), for a worker process.
func WorkerURL(t testing.TB, dbURL string) string {
	t.Helper()
	env := Load(t)
	ctx := context.Background()
	u, err := url.Parse(dbURL)
	if err != nil || u.User == nil {
		t.Fatalf("test database URL: %v", err)
	}
	adminPW, _ := u.User.Password()
	sum := sha256.Sum256([]byte("worker:" + adminPW))
	pw := hex.EncodeToString(sum[:16])
	admin, err := pgx.Connect(ctx, env.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, `SELECT pg_advisory_lock(7243001)`); err != nil {
		t.Fatal(err)
	}
	_, err = admin.Exec(ctx, fmt.Sprintf(`DO $$ BEGIN
		IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '%[1]s') THEN
			CREATE ROLE %[1]s LOGIN PASSWORD '%[2]s' IN ROLE archiver_worker;
		END IF; END $$`, WorkerLogin, pw))
	_, _ = admin.Exec(ctx, `SELECT pg_advisory_unlock(7243001)`)
	if err != nil {
		t.Fatalf("create %s: %v", WorkerLogin, err)
	}
	u.User = url.UserPassword(WorkerLogin, pw)
	return u.String()
}

func withDatabase(t testing.TB, adminURL, db string) string {
	u := replaceDatabase(adminURL, db)
	if u == adminURL {
		t.Fatalf("ARCHIVER_TEST_ADMIN_URL must be a postgres:// URL ending in /postgres")
	}
	return u
}

func replaceDatabase(adminURL, db string) string {
	return strings.Replace(adminURL, "/postgres?", "/"+db+"?", 1)
}

// Temporal dials the dev stack's Temporal server.
func Temporal(t testing.TB) client.Client {
	t.Helper()
	env := Load(t)
	c, err := client.Dial(client.Options{
		HostPort: env.TemporalAddress, Namespace: env.Namespace,
		Logger: tlog.NewStructuredLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))),
	})
	if err != nil {
		t.Fatalf("dial Temporal: %v", err)
	}
	t.Cleanup(c.Close)
	if err := temporalclient.EnsureSearchAttributes(context.Background(), c, env.Namespace); err != nil {
		t.Fatalf("search attributes: %v", err)
	}
	return c
}

// StartWorker runs the archiver's worker for acts on a task queue of the
// test's own and stops it when the test ends.
func StartWorker(t testing.TB, c client.Client, acts *activities.Activities) string {
	t.Helper()
	queue := "test-" + randomHex(6)
	StartWorkerOn(t, c, queue, acts)
	return queue
}

// StartWorkerOn runs another worker on queue (a second worker process).
func StartWorkerOn(t testing.TB, c client.Client, queue string, acts *activities.Activities) {
	t.Helper()
	w := temporalclient.NewWorker(c, queue, acts)
	if err := w.Start(); err != nil {
		t.Fatalf("start worker: %v", err)
	}
	t.Cleanup(w.Stop)
}

// Pool opens another connection pool to a test database, closed at the end.
func Pool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	p, err := database.Open(context.Background(), url, "archiver-test")
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// dbName is a new test database's name: the test's name, cut to fit, and
// a random suffix, so that pg_stat_activity and a leftover database say
// which test they belong to.
func dbName(label string) string {
	var b strings.Builder
	b.WriteString("t_")
	for _, r := range strings.ToLower(label) {
		if b.Len() >= 44 {
			break
		}
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String() + "_" + randomHex(4)
}

// RandomID is a short random hex string for workflow ids and names.
func RandomID() string { return randomHex(6) }

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
