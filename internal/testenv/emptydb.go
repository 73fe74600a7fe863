package testenv

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// EmptyDB creates an empty database of the test's own (from template0: no
// schema of ours, not migrated) and drops it when the test ends. It returns
// a superuser pool and URL, for tests that build an application's tables by
// hand before migrating.
func EmptyDB(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	env := Load(t)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, env.AdminURL)
	if err != nil {
		t.Fatalf("connect to the dev stack's PostgreSQL: %v", err)
	}
	defer admin.Close(ctx)
	name := "t_" + randomHex(6)
	// Not cloned from the template, but made after it: the application's
	// DDL may grant to archiver_worker before the test migrates, and that
	// role is the cluster's, made by the first migration on it.
	if err := withTemplate(ctx, admin, env.AdminURL, func(string) error { return nil }); err != nil {
		t.Fatalf("create empty test database: %v", err)
	}
	if _, err := admin.Exec(ctx, fmt.Sprintf(`CREATE DATABASE %s TEMPLATE template0`, pgx.Identifier{name}.Sanitize())); err != nil {
		t.Fatalf("create empty test database: %v", err)
	}
	dropAtCleanup(t, env, name)
	url := withDatabase(t, env.AdminURL, name)
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatalf("connect to test database: %v", err)
	}
	t.Cleanup(pool.Close) // before the drop: cleanups run last-in first-out
	return pool, url
}
