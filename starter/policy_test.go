package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mockupaws/archiver/internal/testenv"
)

// TestPolicySharedRelations: a policy in which two entries name one table
// (however they spell it) is refused by `policy check`, which says which
// entries and why, and no run, schedule, backfill or restore starts on it.
// The file's own check takes an unqualified name to be in public; the
// database check resolves names through the search path in force.
func TestPolicySharedRelations(t *testing.T) {
	env := testenv.Load(t)
	db, dbURL := testenv.NewDB(t)
	ctx := context.Background()
	for _, sql := range []string{
		`CREATE SCHEMA app`,
		`CREATE TABLE app.orders (id bigint PRIMARY KEY, placed_at timestamptz NOT NULL)`,
		`CREATE TABLE public.orders (id bigint PRIMARY KEY, placed_at timestamptz NOT NULL)`,
		`CREATE TABLE public.items (id bigint PRIMARY KEY, placed_at timestamptz NOT NULL)`,
		// Each entry alone could be archived: the sharing is the only refusal.
		`GRANT USAGE, CREATE ON SCHEMA app TO archiver_worker`,
		`GRANT SELECT, DELETE, UPDATE (id) ON app.orders, public.orders, public.items TO archiver_worker`,
		`DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET search_path = app, public', current_database()); END $$`,
	} {
		if _, err := db.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	entry := func(name, table, archive string) string {
		s := "  - {name: " + name + ", table: " + table + ", time_column: placed_at, archive_after_days: 30, retention_days: 400"
		if archive != "" {
			s += ", archive_table: " + archive
		}
		return s + "}\n"
	}
	write := func(t *testing.T, doc string) {
		path := filepath.Join(t.TempDir(), "policy.yaml")
		if err := os.WriteFile(path, []byte("tables:\n"+doc), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Setenv("ARCHIVE_POLICY_FILE", path)
		t.Setenv("DATABASE_URL", dbURL)
		t.Setenv("TEMPORAL_ADDRESS", env.TemporalAddress)
		t.Setenv("ARCHIVE_TASK_QUEUE", "shared-"+testenv.RandomID())
	}
	command := func(t *testing.T, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var stdout, stderr bytes.Buffer
		err := dispatch(ctx, args, &stdout, &stderr)
		return stdout.String(), err
	}
	refused := func(t *testing.T, want string, args ...string) string {
		t.Helper()
		out, err := command(t, args...)
		if err == nil {
			t.Fatalf("%s accepted the policy; output:\n%s", strings.Join(args, " "), out)
		}
		if !strings.Contains(err.Error()+"\n"+out, want) {
			t.Fatalf("%s: %v\noutput:\n%s\nwant it to say %q", strings.Join(args, " "), err, out, want)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Fatalf("an error of more than one line: %q", err)
		}
		return out
	}

	t.Run("the file names one table twice: orders and public.orders", func(t *testing.T) {
		write(t, entry("a", "orders", "")+entry("b", "public.orders", "b_archive"))
		want := `table: public.orders is already archived by entry "a" (as orders: both name public.orders`
		refused(t, want, "policy", "check")
		refused(t, want, "run", "--table", "b", "--dry-run")
	})

	t.Run("the file names one archive_table twice", func(t *testing.T) {
		write(t, entry("a", "app.orders", "orders_archive")+entry("b", "public.orders", "orders_archive"))
		refused(t, `archive_table: orders_archive is already the archive table of entry "a"`, "policy", "check")
	})

	t.Run("the search path makes orders app.orders", func(t *testing.T) {
		write(t, entry("a", "orders", "")+entry("b", "app.orders", "orders_old")+entry("c", "public.items", ""))
		want := `entries "a" and "b" both archive app.orders (named orders and app.orders): one entry a table`
		out := refused(t, "REFUSED: "+want, "policy", "check")
		for _, line := range []string{"a: REFUSED: it names a table that entry b names too", "b: REFUSED: it names a table that entry a names too"} {
			if !strings.Contains(out, line) {
				t.Fatalf("policy check output lacks %q:\n%s", line, out)
			}
		}
		if strings.Contains(out, "c: REFUSED: it names a table") {
			t.Fatalf("entry c shares nothing:\n%s", out)
		}
		refused(t, "refused: "+want, "run", "--table", "a", "--dry-run")
		refused(t, "refused: "+want, "run", "--all", "--dry-run")
		refused(t, "refused: "+want, "schedule", "apply", "--id", "shared-"+testenv.RandomID())
		refused(t, "refused: "+want, "restore", "--table", "b", "--after", "2024-01-01", "--before", "2024-02-01", "--dry-run")
		refused(t, "refused: "+want, "backfill", "--table", "a", "--before", "2024-01-01")
	})

	t.Run("an archive table not made yet resolves where CREATE TABLE puts it", func(t *testing.T) {
		write(t, entry("a", "app.orders", "")+entry("b", "public.orders", "orders_archive"))
		refused(t, `REFUSED: entries "a" and "b" share the archive table app.orders_archive (named app.orders_archive and orders_archive)`, "policy", "check")
	})
}
