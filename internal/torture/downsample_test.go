package torture

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mockupaws/archiver/internal/policy"
	"github.com/mockupaws/archiver/internal/testenv"
)

// TestDownsampleOracleArithmetic holds the oracle's own bucket starts and
// sums to PostgreSQL's: its buckets to date_trunc in UTC (a week from
// Monday, as ISO weeks are), its float sum terms to float8::numeric, its
// additions and orderings (NaN, ±Infinity) to sum, min and max over
// numeric.
func TestDownsampleOracleArithmetic(t *testing.T) {
	ctx := context.Background()
	db, _ := testenv.NewDB(t)
	rng := rand.New(rand.NewPCG(1, 2))
	var stamps []time.Time
	lo, hi := time.Date(1969, 12, 1, 0, 0, 0, 0, time.UTC), time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	for range 2000 {
		ts := lo.Add(time.Duration(rng.Int64N(int64(hi.Sub(lo)/time.Microsecond))) * time.Microsecond)
		stamps = append(stamps, ts, ts.Truncate(time.Hour), ts.Truncate(24*time.Hour), ts.Truncate(time.Hour).Add(-time.Microsecond))
	}
	for _, bucket := range []string{"hour", "day", "week"} {
		d := &dsSpec{bucket: bucket}
		rows, err := db.Query(ctx, `SELECT ts, date_trunc($2, ts, 'UTC') FROM unnest($1::timestamptz[]) ts`, stamps, bucket)
		if err != nil {
			t.Fatal(err)
		}
		pairs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]time.Time, error) {
			var p [2]time.Time
			return p, r.Scan(&p[0], &p[1])
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pairs {
			if got := d.bucketStart(p[0]); !got.Equal(p[1]) {
				t.Fatalf("%s bucket of %s: oracle %s, PostgreSQL %s", bucket, p[0].UTC().Format(time.RFC3339Nano), got.Format(time.RFC3339Nano), p[1].UTC().Format(time.RFC3339Nano))
			}
		}
	}

	floats := []string{"0.1", "0.30000000000000004", "3333.4333333333334", "1e+300", "-2.5e-07", "123456789.12345679", "NaN", "Infinity", "-Infinity", "5e-324"}
	for _, f := range floats {
		var want string
		if err := db.QueryRow(ctx, `SELECT $1::float8::numeric::text`, f).Scan(&want); err != nil {
			t.Fatal(err)
		}
		got, err := sumTerm("float", f)
		if err != nil {
			t.Fatal(err)
		}
		w, _ := parseNum(want)
		if got.cmp(w) != 0 {
			t.Errorf("float %s as a sum term: oracle %s, PostgreSQL %s", f, got.String(), want)
		}
	}

	sets := [][]string{
		{"1.5", "-2", "NaN"},
		{"Infinity", "-Infinity"},
		{"Infinity", "7"},
		{"-Infinity", "7", "-3"},
		{"1e-20", "100000000000000000000.5", "-3"},
		{"NaN", "Infinity"},
	}
	for _, set := range sets {
		var sum, lo, hi string
		if err := db.QueryRow(ctx, `SELECT sum(x)::text, min(x)::text, max(x)::text FROM unnest($1::numeric[]) x`, set).Scan(&sum, &lo, &hi); err != nil {
			t.Fatal(err)
		}
		var s, mn, mx *pgNum
		for _, v := range set {
			n, err := parseNum(v)
			if err != nil {
				t.Fatal(err)
			}
			s, mn, mx = addNull(s, &n), pick(mn, &n, true), pick(mx, &n, false)
		}
		for _, c := range []struct {
			what string
			got  *pgNum
			want string
		}{{"sum", s, sum}, {"min", mn, lo}, {"max", mx, hi}} {
			w, _ := parseNum(c.want)
			if !sameNum(c.got, &w) {
				t.Errorf("%s of %v: oracle %s, PostgreSQL %s", c.what, set, c.got, c.want)
			}
		}
	}
}

// TestMetricsEntryPolicy: a scenario with the application's
// scenario_metrics puts the built-in entry in its policy file, with the
// seed's layout and the drawn ages, beside the declared entries.
func TestMetricsEntryPolicy(t *testing.T) {
	m := &table{rows: 50, afterDays: 30, retentionDays: 60, batch: 50}
	drawMetrics(m)
	other := &table{schema: "app", name: "t2_x", entry: "t2_x", timeCol: "at", afterDays: 90, retentionDays: 120, batch: 200, partition: "day"}
	for _, sc := range []*scenario{{tables: []*table{m}}, {tables: []*table{m, other}}} {
		pol, err := policy.Parse("torture.yaml", []byte(sc.policyYAML("bucket", "x")))
		if err != nil {
			t.Fatal(err)
		}
		sc.builtinAges(pol)
		if len(pol) != len(sc.tables) {
			t.Fatalf("%d entries, want %d", len(pol), len(sc.tables))
		}
		e, err := policy.Find(pol, "metrics")
		if err != nil {
			t.Fatal(err)
		}
		if !e.Seed() || e.Live != m.name || e.ArchiveAfter != 30*policy.Day || e.Retention != 60*policy.Day || e.BatchSize != 50 {
			t.Errorf("metrics entry %+v: want the seed's layout on %s, 30 and 60 days, batches of 50", e, m.name)
		}
	}
}
