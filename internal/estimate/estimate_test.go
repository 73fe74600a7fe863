package estimate_test

import (
	"context"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mockupaws/archiver/internal/estimate"
	"github.com/mockupaws/archiver/internal/policy"
	"github.com/mockupaws/archiver/internal/testenv"
)

// now is the estimate's instant: an afternoon, so that the rate window
// [now-30d, now) and the aggregates' whole-day window differ.
var now = time.Date(2026, 11, 20, 15, 30, 0, 0, time.UTC)

// prices are binary fractions, so that the expected costs below are the
// same float operations as the package's.
var prices = estimate.Prices{
	PG:               estimate.Price{Env: estimate.EnvPricePG, USDPerGBMonth: 0.5},
	Local:            estimate.Price{Env: estimate.EnvPriceLocal, USDPerGBMonth: 0.25},
	S3:               estimate.Price{Env: estimate.EnvPriceS3, USDPerGBMonth: 0.125},
	Glacier:          estimate.Price{Env: estimate.EnvPriceGlacier, USDPerGBMonth: 0.0625},
	GlacierAfterDays: 90,
	ExpireAfterDays:  1095,
}

const (
	logsPerDay     = 1000
	metricGroups   = 8 // scenarios × types × names, one unit
	samplesPerDay  = 8 // per group: one every 3 hours
	reportsPerDay  = 2
	reportBytes    = 4096
	objectBytes    = 1024 // the fixture's "compressed" objects: ratio 0.25
	tolerance      = 0.05
	archivedStd    = 5 // objects uploaded 10 days ago: S3 Standard
	archivedGlac   = 7 // uploaded 200 days ago: Glacier
	archivedGone   = 3 // uploaded 2000 days ago: expired
	archivedNoInfo = 2 // uploaded 20 days ago, no object record: file size
)

// fixture fills a fresh database with rows of known rates.
func fixture(t *testing.T) *pgxpool.Pool {
	t.Helper()
	db, _ := testenv.NewDB(t)

	// Logs: exactly 1,000 a day over the window, plus older rows and rows
	// at or after now that must not count.
	var logTimes []time.Time
	step := 24 * time.Hour / logsPerDay
	for d := 0; d < estimate.WindowDays; d++ {
		for i := 0; i < logsPerDay; i++ {
			logTimes = append(logTimes, now.Add(-time.Duration(d)*24*time.Hour-time.Duration(i+1)*step))
		}
	}
	for i := 0; i < 3000; i++ {
		logTimes = append(logTimes, now.Add(-31*24*time.Hour-time.Duration(i)*time.Hour))
	}
	for i := 0; i < 50; i++ {
		logTimes = append(logTimes, now.Add(time.Duration(i)*time.Minute))
	}
	testenv.InsertLogs(t, db, logTimes)

	// Metrics: 8 groups, a sample each every 3 hours for 60 days; and a
	// ninth group that stopped 100 days ago and must not count.
	var samples []testenv.Sample
	scen := []uuid.UUID{uuid.NewSHA1(uuid.Nil, []byte("s1")), uuid.NewSHA1(uuid.Nil, []byte("s2"))}
	for k := 1; k <= 60*samplesPerDay; k++ {
		at := now.Add(-time.Duration(k) * 3 * time.Hour)
		for g := 0; g < metricGroups; g++ {
			samples = append(samples, testenv.Sample{Scenario: scen[g%2], At: at,
				Type: []string{"latency", "throughput"}[(g/2)%2], Name: []string{"p50", "p99"}[(g/4)%2], Value: float64(k*g) / 3, Unit: "ms"})
		}
	}
	for k := 0; k < 400; k++ {
		samples = append(samples, testenv.Sample{Scenario: uuid.NewSHA1(uuid.Nil, []byte("s3")), At: now.Add(-100*24*time.Hour - time.Duration(k)*6*time.Hour),
			Type: "old", Name: "gone", Value: 1, Unit: "ms"})
	}
	testenv.InsertMetrics(t, db, samples)

	// Reports: two a day over the window, 4 KiB each.
	var reports []testenv.Report
	for d := 0; d < estimate.WindowDays; d++ {
		for _, h := range []time.Duration{1, 13} {
			id := uuid.New()
			reports = append(reports, testenv.Report{ID: id, Format: "csv", File: id.String() + ".csv",
				Created: now.Add(-time.Duration(d)*24*time.Hour - h*time.Hour), Content: testenv.CSV(d, reportBytes)})
		}
	}
	testenv.InsertReports(t, db, t.TempDir(), reports)
	// Offloaded reports, with object records as the archiver writes them.
	exec(t, db, `CREATE TABLE reports_archive_default PARTITION OF reports_archive DEFAULT`)
	for _, a := range []struct {
		n        int
		ageDays  int
		recorded bool
	}{{archivedStd, 10, true}, {archivedGlac, 200, true}, {archivedGone, 2000, true}, {archivedNoInfo, 20, false}} {
		info := `'{}'::jsonb`
		if a.recorded {
			info = `jsonb_build_object('archive', jsonb_build_object('object_bytes', 1024, 'original_bytes', 4096, 'compression', 'gzip'))`
		}
		exec(t, db, `INSERT INTO reports_archive (id, scenario_id, format, file_path, file_size_bytes, created_at, archived_at,
			s3_location, deleted_locally, archive_batch_id, extra_data)
			SELECT gen_random_uuid(), gen_random_uuid(), 'csv', 'r.csv', 4096, $1::timestamptz - interval '180 days', $1::timestamptz,
			       's3://bucket/archived-reports/r.csv.gz', true, gen_random_uuid(), `+info+`
			FROM generate_series(1, $2::int)`, now.Add(-time.Duration(a.ageDays)*24*time.Hour), a.n)
	}
	// An archive row whose upload never happened counts for nothing.
	exec(t, db, `INSERT INTO reports_archive (id, scenario_id, format, file_path, file_size_bytes, created_at, archive_batch_id)
		VALUES (gen_random_uuid(), gen_random_uuid(), 'csv', 'r.csv', 999999, $1, gen_random_uuid())`, now.Add(-200*24*time.Hour))
	exec(t, db, `VACUUM ANALYZE scenario_logs`)
	exec(t, db, `VACUUM ANALYZE scenario_metrics`)
	return db
}

func exec(t *testing.T, db *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	if _, err := db.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func within(t *testing.T, what string, got, want float64) {
	t.Helper()
	if want == 0 && got != 0 || want != 0 && math.Abs(got-want)/want > tolerance {
		t.Errorf("%s = %.2f, want %.2f within %.0f %%", what, got, want, tolerance*100)
	}
}

func table(t *testing.T, r estimate.Report, name string) estimate.Table {
	t.Helper()
	for _, e := range r.Tables {
		if e.Name == name {
			return e
		}
	}
	t.Fatalf("no %s in the report", name)
	return estimate.Table{}
}

func TestCompute(t *testing.T) {
	db := fixture(t)
	ctx := context.Background()
	r, err := estimate.Compute(ctx, db, policy.Tables, now, prices)
	if err != nil {
		t.Fatal(err)
	}
	day := func(d time.Duration) float64 { return d.Hours() / 24 }

	t.Run("logs", func(t *testing.T) {
		e := table(t, r, "logs")
		within(t, "rows/day", e.RowsPerDay, logsPerDay)
		within(t, "hot rows at steady state", e.HotRowsSteady, logsPerDay*365)
		within(t, "archive rows at steady state", e.ArchiveRowsSteady, logsPerDay*(7*365-365))
		if e.NoRecentRows {
			t.Error("marked as without recent rows")
		}
		// The sampled heap bytes a row against what the heap really takes
		// per row (freshly loaded and vacuumed: no dead space).
		var heap, rows int64
		if err := db.QueryRow(ctx, `SELECT pg_table_size('scenario_logs'), count(*) FROM scenario_logs`).Scan(&heap, &rows); err != nil {
			t.Fatal(err)
		}
		within(t, "heap bytes/row", e.RowBytes, float64(heap)/float64(rows))
		var total int64
		if err := db.QueryRow(ctx, `SELECT pg_total_relation_size('scenario_logs')`).Scan(&total); err != nil {
			t.Fatal(err)
		}
		if e.HotBytesNow != total {
			t.Errorf("hot now %d, pg_total_relation_size %d", e.HotBytesNow, total)
		}
		within(t, "bytes/row with indexes", e.BytesPerRow, float64(total)/float64(rows))
		if e.HotBytesSteady != int64(math.Round(e.HotRowsSteady*e.BytesPerRow)) {
			t.Errorf("hot steady %d is not rows × bytes/row (%.0f × %.1f)", e.HotBytesSteady, e.HotRowsSteady, e.BytesPerRow)
		}
		// 33,050 rows now, 365,000 at steady state: more, not less.
		if e.SavingsPercent == nil || *e.SavingsPercent >= 0 {
			t.Errorf("savings %v, want negative (the table has not reached its steady state)", e.SavingsPercent)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		e := table(t, r, "metrics")
		within(t, "samples/day", e.RowsPerDay, metricGroups*samplesPerDay)
		within(t, "hot samples at steady state", e.HotRowsSteady, metricGroups*samplesPerDay*730)
		within(t, "aggregates/day", e.ArchiveRowsPerDay, metricGroups)
		within(t, "aggregates at steady state", e.ArchiveRowsSteady, metricGroups*day(5*365*policy.Day-730*policy.Day))
		if e.ArchiveBytesNow != 0 {
			// An empty partitioned table and its partitioned indexes take
			// no storage.
			t.Errorf("archive now %d, want 0", e.ArchiveBytesNow)
		}
	})

	t.Run("reports", func(t *testing.T) {
		e := table(t, r, "reports")
		within(t, "reports/day", e.RowsPerDay, reportsPerDay)
		o := e.Offload
		if o == nil {
			t.Fatal("no offload figures")
		}
		if o.ObjectsNow != archivedStd+archivedGlac+archivedNoInfo {
			t.Errorf("objects now %d", o.ObjectsNow)
		}
		if want := int64(archivedStd*objectBytes + archivedNoInfo*reportBytes); o.S3StandardBytesNow != want {
			t.Errorf("S3 Standard now %d, want %d", o.S3StandardBytesNow, want)
		}
		if want := int64(archivedGlac * objectBytes); o.GlacierBytesNow != want {
			t.Errorf("Glacier now %d, want %d", o.GlacierBytesNow, want)
		}
		if o.OffloadedBytesNow != o.S3StandardBytesNow+o.GlacierBytesNow {
			t.Errorf("offloaded %d", o.OffloadedBytesNow)
		}
		if o.CompressionRatio != 0.25 || o.FileBytes != reportBytes {
			t.Errorf("ratio %v, file bytes %v", o.CompressionRatio, o.FileBytes)
		}
		if want := int64(reportsPerDay * estimate.WindowDays * reportBytes); o.LocalBytesNow != want {
			t.Errorf("local now %d, want %d", o.LocalBytesNow, want)
		}
		within(t, "local steady", float64(o.LocalBytesSteady), reportsPerDay*180*reportBytes)
		within(t, "S3 Standard steady", float64(o.S3StandardBytesSteady), reportsPerDay*90*objectBytes)
		within(t, "Glacier steady", float64(o.GlacierBytesSteady), reportsPerDay*(1095-90)*objectBytes)
		var archive int64
		if err := db.QueryRow(ctx, `SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('reports_archive')`).Scan(&archive); err != nil {
			t.Fatal(err)
		}
		if archive == 0 || e.ArchiveBytesNow != archive {
			t.Errorf("archive now %d, partition tree %d", e.ArchiveBytesNow, archive)
		}
		if !strings.Contains(strings.Join(e.Notes, "\n"), "2 offloaded objects without an object record") {
			t.Errorf("notes %q", e.Notes)
		}
	})

	t.Run("costs", func(t *testing.T) {
		var hot, hotS, arch, archS, local, localS, std, stdS, glac, glacS, exported int64
		for _, e := range r.Tables {
			hot, hotS, arch, archS, exported = hot+e.HotBytesNow, hotS+e.HotBytesSteady, arch+e.ArchiveBytesNow, archS+e.ArchiveBytesSteady, exported+e.ExportedBytes
			if o := e.Offload; o != nil {
				local, localS, std, stdS, glac, glacS = local+o.LocalBytesNow, localS+o.LocalBytesSteady, std+o.S3StandardBytesNow, stdS+o.S3StandardBytesSteady, glac+o.GlacierBytesNow, glacS+o.GlacierBytesSteady
			}
		}
		want := map[string][3]float64{
			estimate.TierPGHot:      {float64(hot), float64(hotS), 0.5},
			estimate.TierPGArchive:  {float64(arch), float64(archS), 0.5},
			estimate.TierLocalFiles: {float64(local), float64(localS), 0.25},
			estimate.TierS3Standard: {float64(std + exported), float64(stdS + exported), 0.125},
			estimate.TierS3Glacier:  {float64(glac), float64(glacS), 0.0625},
		}
		if len(r.Costs) != len(want) {
			t.Fatalf("%d tiers", len(r.Costs))
		}
		var sumNow, sumSteady float64
		for _, c := range r.Costs {
			w, ok := want[c.Tier]
			if !ok {
				t.Fatalf("tier %q", c.Tier)
			}
			if float64(c.BytesNow) != w[0] || float64(c.BytesSteady) != w[1] || c.USDPerGBMonth != w[2] {
				t.Errorf("%s: %d / %d bytes at %v, want %v", c.Tier, c.BytesNow, c.BytesSteady, c.USDPerGBMonth, w)
			}
			if c.MonthlyNow != w[0]/(1<<30)*w[2] || c.MonthlySteady != w[1]/(1<<30)*w[2] {
				t.Errorf("%s: $%v / $%v a month, want %v × %v / 2^30", c.Tier, c.MonthlyNow, c.MonthlySteady, w[:2], w[2])
			}
			sumNow += c.MonthlyNow
			sumSteady += c.MonthlySteady
		}
		if r.Totals.MonthlyNow != sumNow || r.Totals.MonthlySteady != sumSteady {
			t.Errorf("totals $%v / $%v, tiers sum to $%v / $%v", r.Totals.MonthlyNow, r.Totals.MonthlySteady, sumNow, sumSteady)
		}
		if got := estimate.MonthlyCost(3<<30, 0.023); got != 3*0.023 {
			t.Errorf("3 GiB at $0.023: $%v", got)
		}
		if got := estimate.MonthlyCost(1<<29, 0.115); got != 0.5*0.115 {
			t.Errorf("0.5 GiB at $0.115: $%v", got)
		}
	})

	t.Run("json", func(t *testing.T) {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			AsOf       time.Time `json:"as_of"`
			WindowDays int       `json:"window_days"`
			Tables     []map[string]any
			Totals     map[string]any
			Costs      []map[string]any `json:"monthly_cost"`
			Prices     struct {
				PG      map[string]any `json:"postgresql"`
				Glacier map[string]any `json:"s3_glacier"`
				Expire  int            `json:"expire_after_days"`
			}
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatal(err)
		}
		if !doc.AsOf.Equal(now) || doc.WindowDays != 30 || len(doc.Tables) != 3 || len(doc.Costs) != 5 {
			t.Fatalf("document %s", b)
		}
		for _, tb := range doc.Tables {
			for _, k := range []string{"name", "mode", "rows_per_day", "no_recent_rows", "bytes_per_row", "hot_bytes_now", "hot_bytes_steady",
				"archive_rows_per_day", "archive_bytes_now", "archive_bytes_steady", "exported_bytes", "savings_percent"} {
				if _, ok := tb[k]; !ok {
					t.Errorf("table %v has no %q", tb["name"], k)
				}
			}
		}
		if off, ok := doc.Tables[2]["offload"].(map[string]any); !ok || off["glacier_bytes_now"] != float64(archivedGlac*objectBytes) {
			t.Errorf("reports offload %v", doc.Tables[2]["offload"])
		}
		if doc.Tables[0]["rows_per_day"] != float64(logsPerDay) {
			t.Errorf("logs rows_per_day %v", doc.Tables[0]["rows_per_day"])
		}
		for _, k := range []string{"hot_bytes_now", "hot_bytes_steady", "savings_percent", "monthly_usd_now", "monthly_usd_steady"} {
			if _, ok := doc.Totals[k]; !ok {
				t.Errorf("totals have no %q", k)
			}
		}
		if doc.Costs[0]["tier"] != estimate.TierPGHot || doc.Costs[0]["usd_per_gb_month"] != 0.5 {
			t.Errorf("first tier %v", doc.Costs[0])
		}
		if doc.Prices.PG["env"] != estimate.EnvPricePG || doc.Prices.PG["assumed"] != false || doc.Prices.Glacier["usd_per_gb_month"] != 0.0625 || doc.Prices.Expire != 1095 {
			t.Errorf("prices %v", doc.Prices)
		}
	})
}

// TestComputeEmpty: no rows anywhere is "no recent rows" and nothing at
// steady state, not an error.
func TestComputeEmpty(t *testing.T) {
	db, _ := testenv.NewDB(t)
	r, err := estimate.Compute(context.Background(), db, policy.Tables, now, estimate.DefaultPrices())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range r.Tables {
		if !e.NoRecentRows || e.RowsPerDay != 0 || e.HotBytesSteady != 0 || e.ArchiveBytesSteady != 0 {
			t.Errorf("%s: %+v", e.Name, e)
		}
		if !strings.Contains(strings.Join(e.Notes, "\n"), "no recent rows") {
			t.Errorf("%s: notes %q", e.Name, e.Notes)
		}
	}
	if r.Totals.MonthlySteady != 0 {
		t.Errorf("steady cost $%v", r.Totals.MonthlySteady)
	}
}

// TestComputeDeclared: a declared downsample entry on a partitioned live
// table with hourly buckets, and the cold archive's manifest
// (archive_exports) counted per entry, or 0 without it.
func TestComputeDeclared(t *testing.T) {
	db, _ := testenv.NewDB(t)
	ctx := context.Background()
	exec(t, db, `CREATE TABLE "SensorReadings" (sensor_id int, kind text, read_at timestamptz NOT NULL, temperature float8) PARTITION BY RANGE (read_at)`)
	exec(t, db, `CREATE TABLE sensor_p1 PARTITION OF "SensorReadings" FOR VALUES FROM (MINVALUE) TO ('2026-11-01')`)
	exec(t, db, `CREATE TABLE sensor_p2 PARTITION OF "SensorReadings" FOR VALUES FROM ('2026-11-01') TO (MAXVALUE)`)
	// 3 sensors × 2 kinds, a reading every 10 minutes for 40 days: 36 rows
	// an hour, 6 aggregates an hour (144 a day).
	exec(t, db, `INSERT INTO "SensorReadings"
		SELECT s, k, $1::timestamptz - g * interval '10 minutes', random()
		FROM generate_series(1, 3) s, unnest(ARRAY['t', 'h']) k, generate_series(1, 40 * 144) g`, now)
	exec(t, db, `ANALYZE "SensorReadings"`)
	entry := policy.Table{Name: "sensor_hourly", Live: "SensorReadings", Archive: "SensorReadings_archive", TimeColumn: "read_at",
		Mode: policy.ModeDownsample, GroupBy: []string{"sensor_id", "kind"}, Bucket: "hour",
		Aggregates:   []policy.Aggregate{{Column: "temperature", Funcs: []string{"avg"}}},
		ArchiveAfter: 14 * policy.Day, Retention: 730 * policy.Day, BatchSize: 1000, Export: &policy.Export{Bucket: "cold"}}

	// The cold archive's manifest (migrations/006): verified, dropped and
	// restored exports have their object in S3; one still uploading has
	// none yet; another table's are not this entry's.
	exec(t, db, `INSERT INTO archive_exports (table_name, partition_name, lower_bound, upper_bound, format, bucket, object_key,
		rows, bytes, sha256, content_checksum, columns, state)
		SELECT x.t, 'p' || x.n, '2024-01-01', '2024-02-01', 'parquet', 'b', 'k' || x.n, x.rows, x.bytes, '', '', '[]', x.state
		FROM (VALUES ('SensorReadings_archive', 1, 10, 1000, 'verified'), ('SensorReadings_archive', 2, 5, 500, 'dropped'),
		             ('SensorReadings_archive', 3, 1, 250, 'restored'), ('SensorReadings_archive', 4, 99, 99999, 'uploading'),
		             ('scenario_logs_archive', 5, 1, 7, 'dropped')) x(t, n, rows, bytes, state)`)

	r, err := estimate.Compute(ctx, db, []policy.Table{entry}, now, prices)
	if err != nil {
		t.Fatal(err)
	}
	e := r.Tables[0]
	within(t, "rows/day", e.RowsPerDay, 6*144)
	within(t, "hourly aggregates/day", e.ArchiveRowsPerDay, 6*24)
	within(t, "hot rows at steady state", e.HotRowsSteady, 6*144*14)
	var total int64
	if err := db.QueryRow(ctx, `SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('"SensorReadings"')`).Scan(&total); err != nil {
		t.Fatal(err)
	}
	if total == 0 || e.HotBytesNow != total {
		t.Errorf("hot now %d, partition tree %d", e.HotBytesNow, total)
	}
	if e.ExportedBytes != 1750 || e.ExportedRows != 16 {
		t.Errorf("exported %d bytes, %d rows; want the entry's stored 1750 and 16", e.ExportedBytes, e.ExportedRows)
	}
	if c := r.Costs[3]; c.Tier != estimate.TierS3Standard || c.BytesNow != 1750 || c.BytesSteady != 1750 {
		t.Errorf("exports not in S3 Standard: %+v", c)
	}
	// 1750 bytes for 16 rows: 109 B a row; 144 aggregates a day.
	if !strings.Contains(strings.Join(e.Notes, "\n"), "exports grow by about 15750 bytes a day (144.0 rows at 109 B each)") {
		t.Errorf("notes %q", e.Notes)
	}
	if !strings.Contains(strings.Join(e.Notes, "\n"), "archive table SensorReadings_archive does not exist yet") {
		t.Errorf("notes %q", e.Notes)
	}

	// A database migrated before the cold archive has no manifest: 0.
	exec(t, db, `DROP TABLE archive_exports CASCADE`)
	if r, err = estimate.Compute(ctx, db, []policy.Table{entry}, now, prices); err != nil {
		t.Fatal(err)
	}
	if r.Tables[0].ExportedBytes != 0 {
		t.Errorf("exported %d without archive_exports", r.Tables[0].ExportedBytes)
	}
}

func TestPricesFrom(t *testing.T) {
	env := map[string]string{}
	get := func(k string) string { return env[k] }
	p, err := estimate.PricesFrom(get)
	if err != nil || p != estimate.DefaultPrices() || !p.PG.Assumed || p.S3.USDPerGBMonth != 0.023 {
		t.Fatalf("defaults: %+v, %v", p, err)
	}
	env[estimate.EnvPriceGlacier] = " 0.004 "
	env[estimate.EnvPricePG] = "0"
	if p, err = estimate.PricesFrom(get); err != nil || p.Glacier.USDPerGBMonth != 0.004 || p.Glacier.Assumed || p.PG.USDPerGBMonth != 0 || p.PG.Assumed || !p.S3.Assumed {
		t.Fatalf("set: %+v, %v", p, err)
	}
	for _, bad := range []string{"cheap", "-0.01", "NaN", "Inf", "1e400", "$0.02"} {
		env[estimate.EnvPriceS3] = bad
		if _, err := estimate.PricesFrom(get); err == nil || !strings.Contains(err.Error(), estimate.EnvPriceS3) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
