package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mockupaws/archiver/migrations"
)

// LogicalDB is a migrated database on a throwaway cluster of its own with
// wal_level=logical (initdb and pg_ctl, as the postgres user when root),
// with an admin pool and a pool of a login in the worker role. Not the dev
// server: a slot there would see the WAL of every test running beside it,
// so advancing it never brings it under a test's limit for long (CI saw a
// batch wait for 3 minutes), and it would hold WAL back for all of them.
func LogicalDB(t testing.TB) (admin, worker *pgxpool.Pool, workerURL string) {
	t.Helper()
	ctx := context.Background()
	url := throwawayCluster(t)
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, _, err := migrations.Up(ctx, c); err != nil {
		t.Fatalf("migrate the throwaway cluster: %v", err)
	}
	if _, err := c.Exec(ctx, `CREATE ROLE slot_test_worker LOGIN IN ROLE archiver_worker`); err != nil {
		t.Fatal(err)
	}
	wurl := strings.Replace(url, "archiver@", "slot_test_worker@", 1)
	return Pool(t, url), Pool(t, wurl), wurl
}

// throwawayCluster starts a PostgreSQL cluster with wal_level=logical on a
// free loopback port (trust auth, loopback only) and removes it at cleanup.
func throwawayCluster(t testing.TB) string {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		t.Skip("no wal_level=logical server: the dev server has another level and no initdb is installed for a throwaway cluster")
	}
	bin := filepath.Dir(bins[len(bins)-1])
	dir, err := os.MkdirTemp("", "archiver-slots-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	asPG := func(name string, args ...string) *exec.Cmd {
		if os.Getuid() == 0 {
			return exec.Command("runuser", append([]string{"-u", "postgres", "--", filepath.Join(bin, name)}, args...)...)
		}
		return exec.Command(filepath.Join(bin, name), args...)
	}
	if os.Getuid() == 0 {
		if out, err := exec.Command("chown", "postgres", dir).CombinedOutput(); err != nil {
			t.Fatalf("chown: %v: %s", err, out)
		}
	}
	data := filepath.Join(dir, "data")
	if out, err := asPG("initdb", "-D", data, "-U", "archiver", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v: %s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -c unix_socket_directories='' -c wal_level=logical -c max_replication_slots=4 -c fsync=off -c timezone=UTC", port)
	if out, err := asPG("pg_ctl", "-D", data, "-l", filepath.Join(dir, "log"), "-w", "-t", "60", "-o", opts, "start").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		t.Fatalf("pg_ctl start: %v: %s\n%s", err, out, log)
	}
	t.Cleanup(func() { _ = asPG("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop").Run() })
	return fmt.Sprintf("postgres://archiver@127.0.0.1:%d/postgres?sslmode=disable", port)
}
