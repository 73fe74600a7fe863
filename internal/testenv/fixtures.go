package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pgUUID is u as pgx encodes it directly. A uuid.UUID goes to CopyFrom
// through driver.Valuer, after encode plans that fail and build errors: most
// of the 15% of the e2e test binary's CPU (under -race) spent in CopyFrom.
func pgUUID(u uuid.UUID) pgtype.UUID { return pgtype.UUID{Bytes: u, Valid: true} }

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
		rows[i] = []any{pgUUID(ids[i]), pgUUID(uuid.NewSHA1(uuid.Nil, []byte{byte(i % 5)})), ts,
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

// Sample is one scenario_metrics row for a fixture.
type Sample struct {
	Scenario   uuid.UUID
	At         time.Time
	Type, Name string
	Value      float64
	Unit       string
}

// InsertMetrics adds the samples to scenario_metrics.
func InsertMetrics(t testing.TB, db *pgxpool.Pool, samples []Sample) {
	t.Helper()
	rows := make([][]any, len(samples))
	for i, s := range samples {
		rows[i] = []any{pgUUID(uuid.New()), pgUUID(s.Scenario), s.At, s.Type, s.Name, fmt.Sprintf("%.6f", s.Value), s.Unit}
	}
	_, err := db.CopyFrom(context.Background(), pgx.Identifier{"scenario_metrics"},
		[]string{"id", "scenario_id", "timestamp", "metric_type", "metric_name", "value", "unit"}, pgx.CopyFromRows(rows))
	if err != nil {
		t.Fatalf("insert fixture metrics: %v", err)
	}
}

// MetricSamples makes perDay samples a day for days days ending before end
// (a UTC day boundary), over two scenarios and two metrics, with values that
// vary within a day.
func MetricSamples(end time.Time, days, perDay int) []Sample {
	scen := []uuid.UUID{uuid.NewSHA1(uuid.Nil, []byte("s1")), uuid.NewSHA1(uuid.Nil, []byte("s2"))}
	var out []Sample
	for d := days; d >= 1; d-- {
		day := end.AddDate(0, 0, -d)
		for i := 0; i < perDay; i++ {
			out = append(out, Sample{
				Scenario: scen[i%2], At: day.Add(time.Duration(i) * (24 * time.Hour / time.Duration(perDay))),
				Type: "latency", Name: []string{"p50", "p99"}[(i/2)%2], Value: float64(d*1000+i*37%1000) / 7, Unit: "ms",
			})
		}
	}
	return out
}

// Report is one reports row for a fixture; File is relative to the
// reports directory and Content is written there unless Missing.
type Report struct {
	ID      uuid.UUID
	Created time.Time
	Format  string
	File    string
	Content []byte
	Missing bool
}

// InsertReports writes the files under dir and the rows into reports.
func InsertReports(t testing.TB, db *pgxpool.Pool, dir string, reports []Report) {
	t.Helper()
	rows := make([][]any, len(reports))
	for i, r := range reports {
		if !r.Missing && r.Content != nil {
			p := filepath.Join(dir, r.File)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, r.Content, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		rows[i] = []any{pgUUID(r.ID), pgUUID(uuid.NewSHA1(uuid.Nil, []byte("scenario"))), r.Format, r.File, len(r.Content), "fixture", r.Created}
	}
	_, err := db.CopyFrom(context.Background(), pgx.Identifier{"reports"},
		[]string{"id", "scenario_id", "format", "file_path", "file_size_bytes", "generated_by", "created_at"}, pgx.CopyFromRows(rows))
	if err != nil {
		t.Fatalf("insert fixture reports: %v", err)
	}
}

// CSV makes n bytes of compressible CSV-like text, different per seed.
func CSV(seed, n int) []byte {
	var b []byte
	for i := 0; len(b) < n; i++ {
		b = fmt.Appendf(b, "%d,%d,scenario-%d,%d.%03d,ok\n", seed, i, i%13, i*seed%9973, i%1000)
	}
	return b[:n]
}
