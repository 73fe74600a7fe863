package realdb

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mockupaws/archiver/workflows"
)

// metricsDDL is the seed's scenario_metrics, with replacements applied to
// its column definitions ("old=>new;...").
func metricsDDL(replace string) string {
	ddl := `CREATE TABLE scenario_metrics (
    id          UUID PRIMARY KEY,
    scenario_id UUID NOT NULL,
    timestamp   TIMESTAMPTZ NOT NULL,
    metric_type VARCHAR(50) NOT NULL,
    metric_name VARCHAR(100) NOT NULL,
    value       DECIMAL(15,6) NOT NULL,
    unit        VARCHAR(20) NOT NULL,
    extra_data  JSONB DEFAULT '{}'
)`
	for _, r := range strings.Split(replace, ";") {
		if old, repl, ok := strings.Cut(r, "=>"); ok {
			ddl = strings.Replace(ddl, old, repl, 1)
		}
	}
	return ddl
}

// insertMetrics adds perDay samples a day for days days before end, over
// three scenarios and four metrics, with values that vary; names get
// suffix.
func (d *realDB) insertMetrics(end time.Time, days, perDay int, suffix string) {
	d.t.Helper()
	_, err := d.db.Exec(context.Background(), `
		INSERT INTO scenario_metrics (id, scenario_id, timestamp, metric_type, metric_name, value, unit)
		SELECT gen_random_uuid(), md5((i % 3)::text)::uuid,
		       $1::timestamptz - (d * interval '1 day') + (i * interval '1 day' / $3),
		       (ARRAY['latency', 'errors'])[1 + i % 2], (ARRAY['p50', 'p99'])[1 + (i / 2) % 2] || $4, (d * 1000 + i * 37 % 1000) / 7.0, 'ms'
		FROM generate_series(1, $2::int) d, generate_series(0, $3::int - 1) i`, end, days, perDay, suffix)
	if err != nil {
		d.t.Fatalf("insert metrics: %v", err)
	}
}

// groupBy is the reference: SQL's GROUP BY over the raw samples older than
// cutoff, one text line per aggregate.
func (d *realDB) groupBy(table string, cutoff time.Time) []string {
	d.t.Helper()
	return d.lines(fmt.Sprintf(`
		SELECT concat_ws(' ', scenario_id, quote_literal(metric_type), quote_literal(metric_name), quote_literal(unit),
		       to_char(date_trunc('day', timestamp, 'UTC') AT TIME ZONE 'UTC', 'YYYY-MM-DD'), round(avg(value), 6), count(*), min(value), max(value))
		FROM %s WHERE timestamp < $1 GROUP BY scenario_id, metric_type, metric_name, unit, date_trunc('day', timestamp, 'UTC') ORDER BY 1`, table), cutoff)
}

// aggregatesEqual checks the archived daily aggregates against want (from
// groupBy before the run).
func (d *realDB) aggregatesEqual(want []string) {
	d.t.Helper()
	got := d.lines(`
		SELECT concat_ws(' ', scenario_id, quote_literal(metric_type), quote_literal(metric_name), quote_literal(unit),
		       to_char(timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD'), value, sample_count, (extra_data->>'min')::numeric, (extra_data->>'max')::numeric)
		FROM scenario_metrics_archive WHERE is_aggregated ORDER BY 1`)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		d.t.Fatalf("archived aggregates differ from SQL's GROUP BY:\n%d archived, %d expected\nfirst archived: %q\nfirst expected: %q", len(got), len(want), first(got), first(want))
	}
	if k := d.count(`SELECT count(*) FROM archive_batches b WHERE b.table_name = 'scenario_metrics'
		AND rows_moved <> (SELECT count(*) FROM scenario_metrics_archive a WHERE a.archive_batch_id = b.batch_id)`); k != 0 {
		d.t.Fatalf("%d ledger rows disagree with the rows carrying their batch id", k)
	}
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

func (d *realDB) lines(sql string, args ...any) []string {
	d.t.Helper()
	rows, err := d.db.Query(context.Background(), sql, args...)
	if err != nil {
		d.t.Fatalf("%s: %v", firstLine(sql), err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			d.t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

var metricsRun = workflows.ArchiveInput{Tables: []string{"metrics"}}

func TestMetricsShapes(t *testing.T) {
	t.Run("group keys holding the old separator and other punctuation never collide", func(t *testing.T) {
		d := newRealDB(t, metricsDDL(""))
		// ("a|b", "c") and ("a", "b|c") joined with '|' were one id.
		d.exec(fmt.Sprintf(`INSERT INTO scenario_metrics (id, scenario_id, timestamp, metric_type, metric_name, value, unit)
			SELECT gen_random_uuid(), '00000000-0000-0000-0000-000000000001', '%s'::timestamptz - i * interval '1 hour', t, n, i, u
			FROM generate_series(1, 30) i,
			     (VALUES ('a|b', 'c', 'ms'), ('a', 'b|c', 'ms'), ('a', 'b', 'c|ms'), ('x,1', 'y', ''), ('x', '1,y', ''), ('q"', '''', ':'), ('2:ab', '', 'x')) g(t, n, u)`,
			metricsCutoff.Format(time.RFC3339)))
		d.migrate()
		want := d.groupBy("scenario_metrics", metricsCutoff)
		d.mustRun(metricsRun)
		d.aggregatesEqual(want)
		if k := d.count(`SELECT count(DISTINCT id) FROM scenario_metrics_archive`); k != int64(len(want)) {
			t.Fatalf("%d distinct aggregate ids for %d groups", k, len(want))
		}
	})

	t.Run("a day with more samples than any batch is archived in parts, merged exactly", func(t *testing.T) {
		d := newRealDB(t, metricsDDL(""))
		d.insertMetrics(metricsCutoff, 1, 30000, "")
		d.insertMetrics(metricsCutoff.AddDate(0, 0, -5), 2, 500, "")
		d.migrate()
		want := d.groupBy("scenario_metrics", metricsCutoff)
		res := d.mustRun(workflows.ArchiveInput{Tables: []string{"metrics"}, BatchSize: 2000, MinBatch: 2000, MaxBatch: 2000})
		d.aggregatesEqual(want)
		if b := res.Tables[0].Batches; b < 15 {
			t.Fatalf("%d batches: a 30,000-sample day in batches of 2,000 takes at least 15", b)
		}
		if k := d.count(`SELECT count(*) FROM scenario_metrics WHERE timestamp < $1`, metricsCutoff); k != 0 {
			t.Fatalf("%d eligible samples left", k)
		}
		if k := d.count(`SELECT sum(sample_count) FROM scenario_metrics_archive`); k != 31000 {
			t.Fatalf("the aggregates count %d samples, want 31000", k)
		}
	})

	t.Run("a nullable group key is refused, naming the column and the fix", func(t *testing.T) {
		d := newRealDB(t, metricsDDL("metric_name VARCHAR(100) NOT NULL=>metric_name VARCHAR(100)"))
		d.insertMetrics(metricsCutoff, 3, 10, "")
		d.exec(`UPDATE scenario_metrics SET metric_name = NULL WHERE value < 200`)
		d.migrate()
		d.refused(metricsRun, "scenario_metrics.metric_name is nullable: a NULL metric_name cannot be merged exactly into a daily aggregate; make it NOT NULL")
	})

	t.Run("a nullable value is refused", func(t *testing.T) {
		d := newRealDB(t, metricsDDL("value       DECIMAL(15,6) NOT NULL=>value DECIMAL(15,6)"))
		d.insertMetrics(metricsCutoff, 3, 10, "")
		d.exec(`UPDATE scenario_metrics SET value = NULL WHERE value < 200`)
		d.migrate()
		d.refused(metricsRun, "scenario_metrics.value is nullable")
	})

	t.Run("a live column the aggregates would drop is refused", func(t *testing.T) {
		d := newRealDB(t, metricsDDL("unit        VARCHAR(20) NOT NULL,=>unit VARCHAR(20) NOT NULL, host TEXT NOT NULL DEFAULT 'h1',"))
		d.insertMetrics(metricsCutoff, 3, 10, "")
		d.migrate()
		d.refused(metricsRun, `scenario_metrics has column "host" that the daily aggregates do not keep`)
	})

	t.Run("a partitioned metrics table", func(t *testing.T) {
		d := newRealDB(t,
			strings.Replace(metricsDDL(""), "id          UUID PRIMARY KEY,", "id UUID NOT NULL,", 1)+` PARTITION BY RANGE (timestamp)`,
			`ALTER TABLE scenario_metrics ADD PRIMARY KEY (id, timestamp)`,
			`CREATE TABLE scenario_metrics_old PARTITION OF scenario_metrics FOR VALUES FROM (MINVALUE) TO ('2024-03-01Z')`,
			`CREATE TABLE scenario_metrics_new PARTITION OF scenario_metrics FOR VALUES FROM ('2024-03-01Z') TO (MAXVALUE)`)
		d.insertMetrics(metricsCutoff.AddDate(0, 0, 10), 40, 50, "")
		d.migrate()
		want := d.groupBy("scenario_metrics", metricsCutoff)
		d.mustRun(workflows.ArchiveInput{Tables: []string{"metrics"}, BatchSize: 300, MinBatch: 300, MaxBatch: 300})
		d.aggregatesEqual(want)
		if k := d.count(`SELECT count(*) FROM scenario_metrics WHERE timestamp >= $1`, metricsCutoff); k != 10*50 {
			t.Fatalf("%d young samples left, want the 500", k)
		}
	})
}
