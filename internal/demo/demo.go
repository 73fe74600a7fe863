// Package demo fills empty live tables with generated rows, so that `make
// run` has something to archive. Rows are made on the server with
// generate_series; their timestamps spread evenly over a span ending at AsOf.
package demo

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Options says how much to make.
type Options struct {
	Logs  int           // log rows
	Span  time.Duration // how far back the timestamps reach
	AsOf  time.Time     // the newest timestamp
	Chunk int           // rows per INSERT (progress is printed after each)
}

// Result says what was made.
type Result struct {
	Logs    int64
	Skipped bool // the table already had rows
}

// SeedLogs inserts o.Logs rows into scenario_logs when it is empty. The
// content is deterministic for a given (Logs, Span, AsOf).
func SeedLogs(ctx context.Context, db *pgxpool.Pool, o Options, progress io.Writer) (Result, error) {
	var n int64
	if err := db.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM scenario_logs LIMIT 1) s`).Scan(&n); err != nil {
		return Result{}, fmt.Errorf("check scenario_logs: %w", err)
	}
	if n > 0 {
		return Result{Skipped: true}, nil
	}
	if o.Chunk <= 0 {
		o.Chunk = 100000
	}
	spanSeconds := int64(o.Span / time.Second)
	var made int64
	for start := 1; start <= o.Logs; start += o.Chunk {
		end := min(start+o.Chunk-1, o.Logs)
		tag, err := db.Exec(ctx, seedLogsSQL, o.AsOf.UTC(), spanSeconds, start, end)
		if err != nil {
			return Result{Logs: made}, fmt.Errorf("insert demo log rows %d-%d: %w", start, end, err)
		}
		made += tag.RowsAffected()
		if progress != nil {
			fmt.Fprintf(progress, "demo: %d/%d log rows\n", made, o.Logs)
		}
	}
	if _, err := db.Exec(ctx, `ANALYZE scenario_logs`); err != nil {
		return Result{Logs: made}, fmt.Errorf("analyze scenario_logs: %w", err)
	}
	return Result{Logs: made}, nil
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
