// Package demo fills empty live tables with generated data, so that `make
// run` has something to archive: log rows and metric samples made on the
// server with generate_series, and report files written under REPORTS_DIR.
// Timestamps spread over a span ending at AsOf.
package demo

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Options says how much to make.
type Options struct {
	Logs          int // log rows
	MetricsPerDay int // metric samples per day of the span
	Reports       int // report files
	ReportBytes   int // size of each report file
	ReportsDir    string
	Span          time.Duration // how far back the timestamps reach
	AsOf          time.Time     // the newest timestamp
	Chunk         int           // rows per INSERT (progress is printed after each)
}

// Result says what was made.
type Result struct {
	Logs, Metrics, Reports int64
	// Skipped names the tables that already had rows and were left alone.
	Skipped []string
}

// Seed fills each empty live table; tables with rows are left alone. The
// content is deterministic for given options.
func Seed(ctx context.Context, db *pgxpool.Pool, o Options, progress io.Writer) (Result, error) {
	var res Result
	if o.Chunk <= 0 {
		o.Chunk = 100000
	}
	spanSeconds := int64(o.Span / time.Second)
	days := int(o.Span / (24 * time.Hour))
	for _, step := range []struct {
		table, what string
		total       int
		sql         string
		into        *int64
	}{
		{"scenario_logs", "log rows", o.Logs, seedLogsSQL, &res.Logs},
		{"scenario_metrics", "metric samples", o.MetricsPerDay * days, seedMetricsSQL, &res.Metrics},
	} {
		empty, err := isEmpty(ctx, db, step.table)
		if err != nil {
			return res, err
		}
		if !empty {
			res.Skipped = append(res.Skipped, step.table)
			continue
		}
		for start := 1; start <= step.total; start += o.Chunk {
			end := min(start+o.Chunk-1, step.total)
			tag, err := db.Exec(ctx, step.sql, o.AsOf.UTC(), spanSeconds, start, end)
			if err != nil {
				return res, fmt.Errorf("insert demo %s %d-%d: %w", step.what, start, end, err)
			}
			*step.into += tag.RowsAffected()
			if progress != nil {
				fmt.Fprintf(progress, "demo: %d/%d %s\n", *step.into, step.total, step.what)
			}
		}
		if _, err := db.Exec(ctx, "ANALYZE "+step.table); err != nil {
			return res, fmt.Errorf("analyze %s: %w", step.table, err)
		}
	}
	empty, err := isEmpty(ctx, db, "reports")
	if err != nil {
		return res, err
	}
	if !empty {
		res.Skipped = append(res.Skipped, "reports")
		return res, nil
	}
	if o.Reports > 0 && o.ReportsDir == "" {
		return res, fmt.Errorf("REPORTS_DIR is not set: demo report files are written under it")
	}
	for i := 0; i < o.Reports; i++ {
		if err := seedReport(ctx, db, o, i); err != nil {
			return res, err
		}
		res.Reports++
	}
	if progress != nil && o.Reports > 0 {
		fmt.Fprintf(progress, "demo: %d report files of %d KiB under %s\n", o.Reports, o.ReportBytes>>10, o.ReportsDir)
	}
	return res, nil
}

func isEmpty(ctx context.Context, db *pgxpool.Pool, table string) (bool, error) {
	var n int64
	if err := db.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM `+pgx.Identifier{table}.Sanitize()+` LIMIT 1) s`).Scan(&n); err != nil {
		return false, fmt.Errorf("check %s: %w", table, err)
	}
	return n == 0, nil
}

// seedReport writes report i, CSV-like and compressible, created at an even
// spread over the span, and its row.
func seedReport(ctx context.Context, db *pgxpool.Pool, o Options, i int) error {
	id := uuid.NewSHA1(uuid.NameSpaceOID, fmt.Appendf(nil, "demo-report-%d", i))
	created := o.AsOf.UTC().Add(-time.Duration(i+1) * o.Span / time.Duration(o.Reports+1))
	rel := filepath.Join("demo", created.Format("2006"), id.String()+".csv")
	path := filepath.Join(o.ReportsDir, rel)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("demo report directory: %w", err)
	}
	if err := os.WriteFile(path, csv(i, o.ReportBytes), 0o644); err != nil {
		return fmt.Errorf("write demo report: %w", err)
	}
	_, err := db.Exec(ctx, `
		INSERT INTO reports (id, scenario_id, format, file_path, file_size_bytes, generated_by, created_at)
		VALUES ($1, $2, 'csv', $3, $4, 'demo', $5)`,
		id, uuid.NewSHA1(uuid.NameSpaceOID, fmt.Appendf(nil, "scenario-%d", i%20)), rel, o.ReportBytes, created)
	if err != nil {
		return fmt.Errorf("insert demo report: %w", err)
	}
	return nil
}

func csv(seed, n int) []byte {
	b := make([]byte, 0, n+64)
	b = append(b, "timestamp,scenario,metric,value,status\n"...)
	for i := 0; len(b) < n; i++ {
		b = fmt.Appendf(b, "2024-01-%02dT%02d:%02d:00Z,scenario-%d,latency_ms,%d.%03d,ok\n", i%28+1, i%24, i%60, seed%20, (i*seed+7)%997, i%1000)
	}
	return b[:n]
}

// seedLogsSQL: $1 as-of, $2 span in seconds, $3..$4 the row numbers. Row g
// lands at a pseudo-random but fixed second of the span (7919 is prime).
const seedLogsSQL = `
INSERT INTO scenario_logs (id, scenario_id, received_at, message_hash, message_preview,
                           source, size_bytes, has_pii, token_count, sqs_blocks)
SELECT gen_random_uuid(),
       ('00000000-0000-4000-8000-' || lpad((g % 20)::text, 12, '0'))::uuid,
       $1::timestamptz - ((g::bigint * 7919) % $2::bigint) * interval '1 second' - interval '1 second',
       encode(sha256(g::text::bytea), 'hex'),
       'demo log message ' || g,
       (ARRAY['api', 'sqs', 'lambda', 'batch'])[g % 4 + 1],
       200 + g % 1800,
       g % 17 = 0,
       50 + g % 400,
       1 + g % 4
FROM generate_series($3::int, $4::int) AS g`

// seedMetricsSQL: the same parameters; types and units go together.
const seedMetricsSQL = `
INSERT INTO scenario_metrics (id, scenario_id, timestamp, metric_type, metric_name, value, unit, extra_data)
SELECT gen_random_uuid(),
       ('00000000-0000-4000-8000-' || lpad((g % 20)::text, 12, '0'))::uuid,
       $1::timestamptz - ((g::bigint * 7919) % $2::bigint) * interval '1 second' - interval '1 second',
       (ARRAY['latency', 'cost', 'throughput'])[g % 3 + 1],
       (ARRAY['p50', 'p95', 'p99', 'avg'])[g % 4 + 1],
       round((100 + (g * 37 % 1000) / 7.0)::numeric, 6),
       (ARRAY['ms', 'usd', 'rps'])[g % 3 + 1],
       '{}'::jsonb
FROM generate_series($3::int, $4::int) AS g`
