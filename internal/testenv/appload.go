package testenv

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// AppLoad is an application's load on the test's PostgreSQL server:
// pgbench clients that each run a statement nearly all the time (SELECT
// pg_sleep(1)), so that pg_stat_activity counts them active, as the load
// controller reads the server.
type AppLoad struct {
	name   string // application_name of its sessions
	admin  *pgxpool.Pool
	cancel context.CancelFunc
	done   chan error
}

// StartAppLoad starts clients pgbench sessions on url and returns once
// pg_stat_activity shows most of them running a statement. Stop (or the
// test's end) ends them. The load controller reads the whole server, so
// tests that load it take turns, across test processes too: the first
// call in a test waits for a cluster-wide lock held until the test ends.
func StartAppLoad(t testing.TB, admin *pgxpool.Pool, url string, clients int) *AppLoad {
	t.Helper()
	exclusiveLoad(t)
	pgbench, err := exec.LookPath("pgbench")
	if err != nil {
		t.Fatalf("pgbench is not installed (Debian's postgresql-client or postgresql package ships it): %v", err)
	}
	script := filepath.Join(t.TempDir(), "sleep.sql")
	if err := os.WriteFile(script, []byte("SELECT pg_sleep(1);\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &AppLoad{name: "appload_" + RandomID(), admin: admin, cancel: cancel, done: make(chan error, 1)}
	cmd := exec.CommandContext(ctx, pgbench, "-n", "-f", script, "-c", strconv.Itoa(clients), "-T", "600", url)
	cmd.Env = append(os.Environ(), "PGAPPNAME="+l.name)
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start pgbench: %v", err)
	}
	go func() { l.done <- cmd.Wait() }()
	t.Cleanup(func() { l.Stop(t) })
	l.waitFor(t, func(active int64) bool { return active >= int64(clients)*3/4 }, "most of its sessions to run a statement")
	return l
}

// Stop ends the load and returns once none of its sessions is left.
func (l *AppLoad) Stop(t testing.TB) {
	t.Helper()
	if l.cancel == nil {
		return
	}
	l.cancel()
	l.cancel = nil
	<-l.done
	// The killed client's sessions would finish their sleep first.
	if _, err := l.admin.Exec(context.Background(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, l.name); err != nil {
		t.Fatal(err)
	}
	l.waitFor(t, func(active int64) bool { return active == 0 }, "its sessions to end")
}

func (l *AppLoad) waitFor(t testing.TB, ok func(active int64) bool, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int64
		if err := l.admin.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'`, l.name).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if ok(n) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgbench load %s: waited 30 s for %s (%d active)", l.name, what, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// appLoadLock is the advisory lock (in the admin URL's database) that tests
// loading the server take turns on.
const appLoadLock = 7243002

// exclusiveLoad holds appLoadLock on a connection of its own until the
// test ends.
func exclusiveLoad(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, Load(t).AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, appLoadLock); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
}
