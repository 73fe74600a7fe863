package main

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mockupaws/archiver/internal/testenv"
)

// TestHealthEndpoints: the worker process's /healthz and /readyz against
// the real stack. Ready: 200 with the database and Temporal ok. The
// worker's database refusing connections (ALTER DATABASE ...
// ALLOW_CONNECTIONS false and its sessions ended: unreachable for this
// worker alone, the shared server stays up): 503 naming the database and
// PostgreSQL's reason, /healthz still 200; allowed again: 200. (Draining:
// TestDrainCommitsTheBatchInFlight.)
func TestHealthEndpoints(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, dbURL := testenv.NewDB(t)
	dbName := dbURL[strings.LastIndex(dbURL, "/")+1 : strings.Index(dbURL, "?")]
	admin, err := pgx.Connect(ctx, testenv.Load(t).AdminURL) // the "postgres" database
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close(ctx) })
	allow := func(on bool) {
		t.Helper()
		if _, err := admin.Exec(ctx, fmt.Sprintf(`ALTER DATABASE %s ALLOW_CONNECTIONS %t`, pgx.Identifier{dbName}.Sanitize(), on)); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { allow(true) })

	w := startWorker(t, testenv.WorkerURL(t, dbURL), "health-"+testenv.RandomID())
	base := w.healthURL()
	var code int
	var body string
	waitFor(t, 20*time.Second, "/readyz ready", func() bool {
		code, body = get(base + "/readyz")
		return code == 200
	})
	for _, want := range []string{"ready\n", "worker: running\n", "database: ok (", "temporal: ok ("} {
		if !strings.Contains(body, want) {
			t.Fatalf("/readyz 200 without %q:\n%s", want, body)
		}
	}
	t.Logf("HEALTH ready: %d\n%s", code, body)
	if code, body := get(base + "/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}

	allow(false)
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, dbName); err != nil {
		t.Fatal(err)
	}
	// The first probe may find its connection ended; the next one cannot
	// open another.
	waitFor(t, 20*time.Second, "/readyz not ready: database not accepting connections", func() bool {
		code, body = get(base + "/readyz")
		return code == 503 && strings.Contains(body, "is not currently accepting connections")
	})
	for _, want := range []string{"not ready: database\n", "worker: running\n", "database: failed after", "temporal: ok ("} {
		if !strings.Contains(body, want) {
			t.Fatalf("/readyz 503 without %q:\n%s", want, body)
		}
	}
	t.Logf("HEALTH database refusing connections: %d\n%s", code, body)
	if code, _ := get(base + "/healthz"); code != 200 {
		t.Fatalf("/healthz with the database away: %d", code)
	}

	allow(true)
	waitFor(t, 20*time.Second, "/readyz ready again", func() bool {
		code, body = get(base + "/readyz")
		return code == 200
	})
	w.signal(syscall.SIGTERM)
	if err := w.wait(30 * time.Second); exitCode(err) != 0 {
		t.Fatalf("the idle worker exited with %v:\n%s", err, w.out.String())
	}
}
