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
	url, drop, err := CreateEmptyDatabase(ctx, env, t.Name())
	if err != nil {
		t.Fatalf("create empty test database: %v", err)
	}
	t.Cleanup(func() {
		if err := drop(); err != nil {
			t.Errorf("drop test database: %v", err)
		}
	})
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatalf("connect to test database: %v", err)
	}
	t.Cleanup(pool.Close) // before the drop: cleanups run last-in first-out
	return pool, url
}

// CreateEmptyDatabase is EmptyDB for a caller that drops the database
// itself (a test making many, one per case): the superuser URL of a new
// empty database, and the function that drops it. label names it (with a
// random suffix).
func CreateEmptyDatabase(ctx context.Context, env Env, label string) (url string, drop func() error, err error) {
	admin, err := pgx.Connect(ctx, env.AdminURL)
	if err != nil {
		return "", nil, fmt.Errorf("connect to the dev stack's PostgreSQL: %w", err)
	}
	defer admin.Close(ctx)
	name := dbName(label)
	// Not cloned from the template, but made after it: the application's
	// DDL may grant to archiver_worker before the test migrates, and that
	// role is the cluster's, made by the first migration on it.
	if err := withTemplate(ctx, admin, env.AdminURL, func(string) error { return nil }); err != nil {
		return "", nil, err
	}
	if _, err := admin.Exec(ctx, fmt.Sprintf(`CREATE DATABASE %s TEMPLATE template0`, pgx.Identifier{name}.Sanitize())); err != nil {
		return "", nil, err
	}
	drop = func() error {
		c, err := pgx.Connect(context.Background(), env.AdminURL)
		if err != nil {
			return err
		}
		defer c.Close(context.Background())
		_, err = c.Exec(context.Background(), fmt.Sprintf(`DROP DATABASE IF EXISTS %s WITH (FORCE)`, pgx.Identifier{name}.Sanitize()))
		return err
	}
	return replaceDatabase(env.AdminURL, name), drop, nil
}
