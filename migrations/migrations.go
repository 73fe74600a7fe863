// Package migrations holds the archiver's schema as plain SQL files, embedded
// in the binaries and applied forward-only by tern, each in a transaction,
// and the indexes it needs on the live tables, built concurrently outside a
// transaction by EnsureLiveIndexes (live_indexes.go).
package migrations

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/tern/v2/migrate"
)

//go:embed *.sql
var files embed.FS

// VersionTable records which migrations have run.
const VersionTable = "public.archiver_schema_version"

// Up applies every migration not applied yet, then builds the indexes the
// archiver needs on the live tables (EnsureLiveIndexes: CREATE INDEX
// CONCURRENTLY, outside any transaction, reusing an equivalent index
// whatever its name). Running it again is a no-op. tern holds an advisory
// lock while it migrates, so concurrent callers wait. conn must not be in a
// transaction.
func Up(ctx context.Context, conn *pgx.Conn) (from, to int32, err error) {
	r, err := Apply(ctx, conn)
	return r.From, r.To, err
}

// Result is what Apply did.
type Result struct {
	From, To int32    // schema versions before and after
	Indexes  []string // indexes built on live tables (none when all existed)
}

// Apply is Up, also reporting the live-table indexes it built.
func Apply(ctx context.Context, conn *pgx.Conn) (Result, error) {
	var r Result
	m, err := migrate.NewMigrator(ctx, conn, VersionTable)
	if err != nil {
		return r, fmt.Errorf("prepare migrations: %w", err)
	}
	if err := m.LoadMigrations(files); err != nil {
		return r, fmt.Errorf("load migrations: %w", err)
	}
	if r.From, err = m.GetCurrentVersion(ctx); err != nil {
		return r, fmt.Errorf("read schema version: %w", err)
	}
	if err := m.Migrate(ctx); err != nil {
		return r, fmt.Errorf("apply migrations: %w", err)
	}
	if r.To, err = m.GetCurrentVersion(ctx); err != nil {
		return r, fmt.Errorf("read schema version: %w", err)
	}
	// After tern, whose migrations each run in a transaction: concurrent
	// index builds must run outside one.
	if r.Indexes, err = EnsureLiveIndexes(ctx, conn); err != nil {
		return r, err
	}
	return r, nil
}

// Fingerprint identifies the migration set by content, so that a test
// template database made from an older schema is never reused.
func Fingerprint() (string, error) {
	names, err := migrate.FindMigrations(files)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, n := range names {
		b, err := files.ReadFile(n)
		if err != nil {
			return "", err
		}
		h.Write([]byte(n))
		h.Write(b)
	}
	// The live-table indexes are part of the schema a template carries.
	fmt.Fprintf(h, "%v", liveIndexes)
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}
