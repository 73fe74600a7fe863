// Package database opens the archiver's connections to PostgreSQL with the
// session settings its SQL depends on pinned, whatever the database, role or
// server defaults say (DESIGN.md §9): a database set to DateStyle 'SQL, DMY'
// or a New York time zone must not change a bound, a day or a month.
package database

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Settings are pinned on every connection as startup parameters, which take
// precedence over ALTER DATABASE / ALTER ROLE ... SET.
var Settings = map[string]string{
	"DateStyle":     "ISO, MDY",
	"TimeZone":      "UTC",
	"IntervalStyle": "postgres",
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
	var dateStyle, tz, intervalStyle string
	if err := q.QueryRow(ctx, `SELECT current_setting('DateStyle'), current_setting('TimeZone'), current_setting('IntervalStyle')`).
		Scan(&dateStyle, &tz, &intervalStyle); err != nil {
		return fmt.Errorf("read session settings: %w", err)
	}
	if dateStyle != Settings["DateStyle"] || tz != Settings["TimeZone"] || intervalStyle != Settings["IntervalStyle"] {
		return fmt.Errorf("session settings did not take (DateStyle %q, TimeZone %q, IntervalStyle %q; want %q, %q, %q): a connection pooler may drop startup parameters; connect directly or configure it to pass them",
			dateStyle, tz, intervalStyle, Settings["DateStyle"], Settings["TimeZone"], Settings["IntervalStyle"])
	}
	return nil
}
