// Package database opens the archiver's connections to PostgreSQL with the
// session settings its SQL depends on pinned, whatever the database, role or
// server defaults say (docs/design.md): a database set to DateStyle 'SQL, DMY'
// or a New York time zone must not change a bound, a day or a month.
package database

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Settings are pinned on every connection as startup parameters, which take
// precedence over ALTER DATABASE / ALTER ROLE ... SET. extra_float_digits
// 3 makes a float's text form exact: exports carry floats inside arrays
// and other text-formed values that way, and content checksums hash text
// (at 0, PostgreSQL rounds to 15 digits, and two floats could pass as one).
var Settings = map[string]string{
	"DateStyle":          "ISO, MDY",
	"TimeZone":           "UTC",
	"IntervalStyle":      "postgres",
	"extra_float_digits": "3",
}

// PoolConfig parses url and pins Settings and application_name (unless the
// URL names one).
func PoolConfig(url, application string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	pin(cfg.ConnConfig, application)
	return cfg, nil
}

// Open opens a pool on url with the settings pinned.
func Open(ctx context.Context, url, application string) (*pgxpool.Pool, error) {
	cfg, err := PoolConfig(url, application)
	if err != nil {
		return nil, err
	}
	return pgxpool.NewWithConfig(ctx, cfg)
}

// Connect opens one connection on url with the settings pinned.
func Connect(ctx context.Context, url, application string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	pin(cfg, application)
	return pgx.ConnectConfig(ctx, cfg)
}

func pin(cfg *pgx.ConnConfig, application string) {
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	for k, v := range Settings {
		cfg.RuntimeParams[k] = v
	}
	if cfg.RuntimeParams["application_name"] == "" && application != "" {
		cfg.RuntimeParams["application_name"] = application
	}
}

// Check reads the pinned settings back from a live session and reports any
// that did not take (a pooler that drops startup parameters, say).
func Check(ctx context.Context, q interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}) error {
	names := make([]string, 0, len(Settings))
	for k := range Settings {
		names = append(names, k)
	}
	sort.Strings(names)
	var got []string
	if err := q.QueryRow(ctx, `SELECT array_agg(current_setting(n) ORDER BY o) FROM unnest($1::text[]) WITH ORDINALITY u(n, o)`, names).Scan(&got); err != nil {
		return fmt.Errorf("read session settings: %w", err)
	}
	var wrong []string
	for i, n := range names {
		if got[i] != Settings[n] {
			wrong = append(wrong, fmt.Sprintf("%s %q, want %q", n, got[i], Settings[n]))
		}
	}
	if len(wrong) > 0 {
		return fmt.Errorf("session settings did not take (%s): a connection pooler may drop startup parameters; connect directly or configure it to pass them", strings.Join(wrong, "; "))
	}
	return nil
}
