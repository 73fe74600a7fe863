package torture

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"pgregory.net/rapid"

	"github.com/mockupaws/archiver/internal/policy"
)

// t0 is the first archive run's instant; rows reach from three years before
// it to a year after (young rows that age as the runs' as-of moves on).
var t0 = time.Date(2026, 3, 15, 3, 0, 0, 0, time.UTC)

// The shapes a live table is drawn from.
const (
	kindPlain       = "plain"
	kindPartitioned = "partitioned" // RANGE by month, pg_partman's naming
	kindInherited   = "inherited"   // legacy inheritance children

	keyNone      = "none" // exact duplicate rows too
	keyBigint    = "bigint"
	keyIdentity  = "identity" // GENERATED ALWAYS AS IDENTITY
	keyUUID      = "uuid"
	keyText      = "text"
	keyComposite = "composite" // (tenant, id)
)

// column is one column besides the key and the time column: its type and
// the SQL expression of its values over h, a row's hash.
type column struct {
	name, typ string
	notNull   bool
	// expr is the value over h; gen, for a stored generated column, the
	// expression PostgreSQL computes (expr is then unused).
	expr, gen string
}

// palette holds the columns a table draws from: the types real tables
// have, with the values that trip code up (NaN, ±infinity, NULLs inside
// arrays and JSON, commas, quotes and newlines in text, truncating
// typmods).
var palette = []column{
	{name: "amount", typ: "numeric", expr: "CASE WHEN h % 29 = 0 THEN 'NaN'::numeric ELSE (h % 100000) / 7.0 END"},
	{name: "price", typ: "numeric(10,2)", expr: "((h % 1000000) / 1000.0)::numeric(10,2)"},
	{name: "status", typ: "varchar(10)", expr: "(ARRAY['delivered','cancelled','open','pending','delivered_late'])[1 + h % 5]::varchar(10)"},
	{name: "code", typ: "varchar(12)", expr: "left(md5(h::text), (1 + h % 12)::int)"},
	{name: "doc", typ: "jsonb", expr: `jsonb_build_object('h', h, 's', 'a,"b' || (h % 7), 'n', CASE WHEN h % 5 = 0 THEN NULL ELSE h % 3 END)`},
	{name: "blob", typ: "bytea", expr: "decode(md5(h::text), 'hex')"},
	{name: "tags", typ: "integer[]", expr: "ARRAY[(h % 10)::int, (h % 7)::int, NULL]"},
	{name: "took", typ: "interval", expr: "make_interval(days => (h % 40)::int, secs => (h % 100000) / 1000.0)"},
	{name: "feel", typ: "torture_mood", expr: "(ARRAY['sad','ok','happy'])[1 + h % 3]::torture_mood"},
	{name: "short", typ: "torture_code", expr: "left(md5(h::text), 8)::torture_code"},
	{name: "ratio", typ: "double precision", expr: "CASE h % 31 WHEN 0 THEN 'NaN'::float8 WHEN 1 THEN 'Infinity'::float8 WHEN 2 THEN '-Infinity'::float8 ELSE (h % 10000) / 3.0 END"},
	{name: "samples", typ: "double precision[]", expr: "ARRAY[(h % 1000) / 3.0, 0.1::float8 + 0.2::float8, NULL]::float8[]"},
	{name: "seen", typ: "timestamp", expr: "CASE h % 37 WHEN 0 THEN 'infinity'::timestamp WHEN 1 THEN '-infinity'::timestamp ELSE timestamp '2020-01-01' + (h % 100000) * interval '1 minute' END"},
	{name: "note", typ: "text", expr: `'note ' || (h % 1000) || E'\n,"'`},
}

// derived is the stored generated column a table with price may have.
var derived = column{name: "price2", typ: "numeric", gen: "price * 2"}

// cond is an entry's where condition, as the policy file spells it.
type cond struct {
	column, op string
	values     []string
}

// table is one live table and its policy entry.
type table struct {
	schema, name string
	kind         string
	defaultPart  bool // partitioned: with a DEFAULT partition
	subPart      bool // partitioned: one partition sub-partitioned by hash
	ownedByRole  bool // partitioned: owned by a role the worker is a member of (exchange allowed)
	timeCol      string
	timeType     string // timestamptz or timestamp (read as UTC)
	key          string
	cols         []column
	fk           string // "", CASCADE, SET NULL or RESTRICT: rows reference a parent table
	trigger      bool   // a DELETE trigger writing an audit row
	rows         int    // rows written before the first run
	dupes        bool   // keyless: some rows written twice

	entry                    string
	afterDays, retentionDays int
	batch                    int
	lockBudget               string // "" (the default) or a small one
	partition                string // month or day (the archive's)
	where                    *cond
	export                   string // "", parquet or csv
	// ds, for a downsample entry (mode: downsample), its groups, bucket
	// and aggregates (downsample.go); nil for a move entry.
	ds *dsSpec
	// off, for an offload entry (offload.go); nil: move or downsample.
	off *offloadSpec
}

func (t *table) qualified() string { return t.schema + "." + t.name }

// live columns in the table's order, as the oracle digests them.
func (t *table) columnNames() []string {
	var out []string
	switch t.key {
	case keyNone:
	case keyComposite:
		out = append(out, "tenant", "id")
	default:
		out = append(out, "id")
	}
	out = append(out, t.timeCol)
	if t.fk != "" {
		out = append(out, "parent_id")
	}
	if t.off != nil {
		out = append(out, t.off.pathCol)
	}
	for _, c := range t.cols {
		out = append(out, c.name)
	}
	return out
}

func (t *table) column(name string) (column, bool) {
	for _, c := range t.cols {
		if c.name == name {
			return c, true
		}
	}
	return column{}, false
}

// scenario is one database: its session settings and its tables.
type scenario struct {
	settings map[string]string // ALTER DATABASE … SET, as applications leave them
	tables   []*table
}

// drawScenario draws a scenario: rapid shrinks it as data (fewer tables,
// columns and rows, plainer shapes).
func drawScenario(t *rapid.T, id string) *scenario {
	s := &scenario{settings: map[string]string{}}
	if rapid.Bool().Draw(t, "odd settings") {
		s.settings["DateStyle"] = rapid.SampledFrom([]string{"ISO, MDY", "SQL, DMY", "German", "Postgres, YMD"}).Draw(t, "DateStyle")
		s.settings["TimeZone"] = rapid.SampledFrom([]string{"UTC", "Pacific/Chatham", "America/St_Johns", "Asia/Kathmandu"}).Draw(t, "TimeZone")
		s.settings["IntervalStyle"] = rapid.SampledFrom([]string{"postgres", "sql_standard", "iso_8601", "postgres_verbose"}).Draw(t, "IntervalStyle")
		s.settings["extra_float_digits"] = rapid.SampledFrom([]string{"0", "1", "3", "-5"}).Draw(t, "extra_float_digits")
	}
	n := rapid.IntRange(1, 2).Draw(t, "tables")
	for i := range n {
		s.tables = append(s.tables, drawTable(t, fmt.Sprintf("t%d_%s", i+1, id), i))
	}
	return s
}

func drawTable(t *rapid.T, name string, i int) *table {
	tb := &table{
		schema:  rapid.SampledFrom([]string{"public", "app"}).Draw(t, "schema"),
		name:    name,
		kind:    rapid.SampledFrom([]string{kindPlain, kindPartitioned, kindInherited}).Draw(t, "kind"),
		timeCol: rapid.SampledFrom([]string{"at", "created_at", "EventTime"}).Draw(t, "time column"),
		entry:   name,
	}
	tb.timeType = rapid.SampledFrom([]string{"timestamptz", "timestamp"}).Draw(t, "time type")
	keys := []string{keyNone, keyBigint, keyUUID, keyText, keyComposite}
	if tb.kind == kindPlain {
		// An identity column on a partitioned table needs PostgreSQL 17,
		// and inheritance children do not inherit its default.
		keys = append(keys, keyIdentity)
	}
	tb.key = rapid.SampledFrom(keys).Draw(t, "key")
	if tb.kind == kindPartitioned {
		tb.defaultPart = rapid.Bool().Draw(t, "DEFAULT partition")
		tb.subPart = tb.key != keyNone && rapid.Bool().Draw(t, "sub-partitioned")
		tb.ownedByRole = rapid.Bool().Draw(t, "exchange granted")
	}
	// Columns: a subset of the palette, in palette order.
	picked := rapid.SliceOfNDistinct(rapid.IntRange(0, len(palette)-1), 1, 6, rapid.ID).Draw(t, "columns")
	slices.Sort(picked)
	for _, p := range picked {
		c := palette[p]
		c.notNull = rapid.IntRange(0, 3).Draw(t, "not null "+c.name) == 0
		tb.cols = append(tb.cols, c)
	}
	if _, ok := tb.column("price"); ok && rapid.Bool().Draw(t, "generated column") {
		tb.cols = append(tb.cols, derived)
	}
	tb.fk = rapid.SampledFrom([]string{"", "", "CASCADE", "SET NULL", "RESTRICT"}).Draw(t, "foreign key")
	if tb.fk == "SET NULL" && tb.key == keyNone {
		tb.fk = "CASCADE" // a keyless row set to NULL cannot be found again by the model
	}
	tb.trigger = rapid.Bool().Draw(t, "delete trigger")
	tb.rows = rapid.IntRange(50, 1500).Draw(t, "rows")
	tb.dupes = tb.key == keyNone && rapid.Bool().Draw(t, "exact duplicates")

	tb.afterDays = rapid.SampledFrom([]int{30, 90, 365}).Draw(t, "archive after days")
	tb.retentionDays = tb.afterDays + rapid.SampledFrom([]int{30, 200, 700, 3000}).Draw(t, "retention beyond")
	tb.batch = rapid.SampledFrom([]int{50, 200, 1000}).Draw(t, "batch size")
	tb.lockBudget = rapid.SampledFrom([]string{"", "", "10ms", "50ms"}).Draw(t, "lock budget")
	partitions := []string{"month", "day"}
	if tb.ownedByRole {
		// Exchange takes a live month to an archive month only: mostly
		// those, so that exchanges happen.
		partitions = []string{"month", "month", "month", "day"}
	}
	tb.partition = rapid.SampledFrom(partitions).Draw(t, "archive partition")
	if rapid.Bool().Draw(t, "where?") {
		if _, ok := tb.column("status"); !ok && rapid.Bool().Draw(t, "a status column to filter on") {
			tb.cols = append(tb.cols, palette[slices.IndexFunc(palette, func(c column) bool { return c.name == "status" })])
		}
		tb.where = drawCond(t, tb)
	}
	tb.export = rapid.SampledFrom([]string{"", "parquet", "csv"}).Draw(t, "export")
	if rapid.IntRange(0, 2).Draw(t, "downsample?") == 0 {
		if i == 0 && rapid.Bool().Draw(t, "the built-in metrics entry") {
			drawMetrics(tb)
		} else {
			drawDownsample(t, tb)
		}
	} else {
		tb.off = drawOffload(t, tb)
	}
	return tb
}

// drawCond draws a where condition on a column the table has.
func drawCond(t *rapid.T, tb *table) *cond {
	var options []cond
	if _, ok := tb.column("status"); ok {
		options = append(options,
			cond{column: "status", op: "in", values: []string{"delivered", "cancelled"}},
			cond{column: "status", op: "=", values: []string{"delivered_late"}}, // longer than varchar(10)
			cond{column: "status", op: "<>", values: []string{"open"}})
	}
	if _, ok := tb.column("price"); ok {
		options = append(options, cond{column: "price", op: "<=", values: []string{"500.005"}})
	}
	if c, ok := tb.column("code"); ok && !c.notNull {
		options = append(options, cond{column: "code", op: "is not null"})
	}
	if len(options) == 0 {
		return nil
	}
	c := rapid.SampledFrom(options).Draw(t, "where")
	return &c
}

// policyYAML is the scenario's ARCHIVE_POLICY_FILE; exports go to bucket
// under a prefix of the scenario's own.
func (s *scenario) policyYAML(bucket, id string) string {
	var b strings.Builder
	declared := 0
	for _, t := range s.tables {
		if t.ds != nil && t.ds.seed {
			fmt.Fprintf(&b, "builtin: [%s]\n", t.entry)
			continue
		}
		declared++
	}
	if declared == 0 {
		b.WriteString("tables: []\n")
	} else {
		b.WriteString("tables:\n")
	}
	for _, t := range s.tables {
		if t.ds != nil && t.ds.seed {
			continue
		}
		fmt.Fprintf(&b, "  - name: %s\n    table: %s\n    time_column: %q\n", t.entry, t.qualified(), t.timeCol)
		fmt.Fprintf(&b, "    archive_after_days: %d\n    retention_days: %d\n    batch_size: %d\n    partition: %s\n",
			t.afterDays, t.retentionDays, t.batch, t.partition)
		if t.lockBudget != "" {
			fmt.Fprintf(&b, "    lock_budget: %s\n", t.lockBudget)
		}
		if t.where != nil {
			fmt.Fprintf(&b, "    where:\n      - {column: %s, op: %q", t.where.column, t.where.op)
			switch len(t.where.values) {
			case 0:
			case 1:
				fmt.Fprintf(&b, ", value: %q", t.where.values[0])
			default:
				fmt.Fprintf(&b, ", value: [%s]", strings.Join(t.where.values, ", "))
			}
			b.WriteString("}\n")
		}
		if t.export != "" {
			fmt.Fprintf(&b, "    export: {bucket: %s, prefix: torture/%s/, format: %s}\n", bucket, id, t.export)
		}
		if t.ds != nil {
			b.WriteString(t.ds.yaml())
		}
		if t.off != nil {
			b.WriteString(t.off.yaml())
		}
	}
	return b.String()
}

// builtinAges gives the built-in entries the drawn ages and batch size
// (a policy file keeps a built-in's own, two years and more).
func (s *scenario) builtinAges(pol []policy.Table) {
	for _, t := range s.tables {
		if t.ds == nil || !t.ds.seed {
			continue
		}
		for i := range pol {
			if pol[i].Name == t.entry {
				pol[i].ArchiveAfter = time.Duration(t.afterDays) * policy.Day
				pol[i].Retention = time.Duration(t.retentionDays) * policy.Day
				pol[i].BatchSize = t.batch
			}
		}
	}
}
