package testenv

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// InsertLogs adds one scenario_logs row per timestamp, with content that
// differs row to row (so checksums see any change), and returns their ids.
func InsertLogs(t testing.TB, db *pgxpool.Pool, times []time.Time) []uuid.UUID {
	t.Helper()
	ids := make([]uuid.UUID, len(times))
	rows := make([][]any, len(times))
	for i, ts := range times {
		ids[i] = uuid.New()
		var preview any = fmt.Sprintf("message %d of the fixture", i)
		if i%7 == 3 {
			preview = nil // the column is nullable; NULLs must survive the move
		}
		rows[i] = []any{ids[i], uuid.NewSHA1(uuid.Nil, []byte{byte(i % 5)}), ts,
			fmt.Sprintf("%064x", i), preview, []string{"api", "sqs", "batch"}[i%3], 100 + i, i%11 == 0, 10 + i%50, 1 + i%3}
	}
	_, err := db.CopyFrom(context.Background(), pgx.Identifier{"scenario_logs"},
		[]string{"id", "scenario_id", "received_at", "message_hash", "message_preview", "source", "size_bytes", "has_pii", "token_count", "sqs_blocks"},
		pgx.CopyFromRows(rows))
	if err != nil {
		t.Fatalf("insert fixture logs: %v", err)
	}
	return ids
}

// SpreadTimes returns n timestamps spread evenly (one every step) ending
// just before end.
func SpreadTimes(n int, end time.Time, step time.Duration) []time.Time {
	out := make([]time.Time, n)
	for i := range out {
		out[i] = end.Add(-time.Duration(n-i) * step)
	}
	return out
}

// logColumns are the seed's columns of a log row: what must survive a move.
const logColumns = `id, scenario_id, received_at, message_hash, message_preview, source, size_bytes, has_pii, token_count, sqs_blocks`

// LogsChecksum is a digest of the content of the rows of relation (a table
// or view with the log columns), optionally filtered, independent of order
// and of where the rows live. Content, not counts.
func LogsChecksum(t testing.TB, db *pgxpool.Pool, relation, where string) (count int64, sum string) {
	t.Helper()
	if where == "" {
		where = "true"
	}
	q := fmt.Sprintf(`SELECT count(*), COALESCE(md5(string_agg(md5(row(%s)::text), '' ORDER BY id)), '')
		FROM %s WHERE %s`, logColumns, pgx.Identifier{relation}.Sanitize(), where)
	if err := db.QueryRow(context.Background(), q).Scan(&count, &sum); err != nil {
		t.Fatalf("checksum %s: %v", relation, err)
	}
	return count, sum
}

// Count runs a SELECT count(*) style query and returns the number.
func Count(t testing.TB, db *pgxpool.Pool, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := db.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}
