package torture

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/big"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"pgregory.net/rapid"

	"github.com/mockupaws/archiver/activities"
)

// A downsample entry aggregates its table's samples per group and UTC
// bucket (hour, day, or week from Monday) into the archive and deletes
// them. The table has group columns (text with the separators an encoding
// could confuse, an integer, NULLs), value columns (numeric with NaN,
// numeric with a typmod, integer, double precision with NaN and
// ±Infinity, NULLs) and a few other columns the aggregates drop; its
// samples lie on a grid of three days, so that buckets hold several and
// late samples fall into buckets an earlier run made.
//
// The oracle keeps every sample's groups, time and values (what the
// application's statements returned) and holds the archive, merged with
// the exported objects of dropped partitions, to its own GROUP BY over
// the samples that are no longer live: per group and bucket, the sample
// count, and per value column the count, the exact sum (math/big), min
// and max.

// dsSpec is a downsample entry: its bucket, group columns and value
// columns with the functions kept for each (all columns of the table's
// cols, by name).
type dsSpec struct {
	// seed: the built-in metrics entry, with the seed's layout (daily
	// aggregates of value whose id hashes the group; sum, min and max in
	// extra_data, the count in sample_count, the rounded average in value).
	seed   bool
	bucket string
	groups []string
	values []dsValue
	// exports caches the aggregates read from exported objects
	// (immutable), by export id.
	exports map[int64][][]*string
}

// dsValue is a value column and its aggregates (sorted).
type dsValue struct {
	name, kind string // kind: numeric, integer or float
	funcs      []string
}

// dsGroups are the group columns a downsample table draws from. The text
// values hold the separators ('|', ',') and the look-alikes of a
// length-prefixed encoding ('1:a', 'N') that tell a sound encoding of a
// group from a naive one: ('a|b', 'c') and ('a', 'b|c') are two groups.
// A nullable one has NULLs of its own (dsGroupNulls) besides the insert's.
var dsGroups = []column{
	{name: "site", typ: "text", expr: `(ARRAY['a|b', 'a', 'b|c', 'b', 'a,b', '', 'N', '1:a'])[1 + (h / 3) % 8]`},
	{name: "host", typ: "varchar(20)", expr: `(ARRAY['b|c', 'c', 'b', ',', '1:a,N'])[1 + (h / 5) % 5]::varchar(20)`},
	{name: "shard", typ: "integer", expr: `((h / 7) % 3)::int`},
}

// dsGroupNulls are the rows whose nullable group column is NULL.
var dsGroupNulls = map[string]string{"site": "h % 7 = 1", "host": "h % 13 = 2", "shard": "h % 5 = 4"}

// metricsColumns are the seed's scenario_metrics columns besides the id
// and the time, NOT NULL as the seed has them. Three of the four groups a
// sample draws join alike under a naive separator, (s1, 'a|b', 'c', 'ms'),
// (s1, 'a', 'b|c', 'ms') and (s1, 'a', 'b', 'c|ms'), so that a day of a
// few samples holds two of them.
var metricsColumns = []column{
	{name: "scenario_id", typ: "uuid", notNull: true, expr: `(ARRAY['6c5f0c1e-0000-4000-8000-000000000001', '6c5f0c1e-0000-4000-8000-000000000001', '6c5f0c1e-0000-4000-8000-000000000002', '6c5f0c1e-0000-4000-8000-000000000001'])[1 + (h / 3) % 4]::uuid`},
	{name: "metric_type", typ: "varchar(50)", notNull: true, expr: `(ARRAY['a|b', 'a', 'cpu', 'a'])[1 + (h / 3) % 4]`},
	{name: "metric_name", typ: "varchar(100)", notNull: true, expr: `(ARRAY['c', 'b|c', 'N', 'b'])[1 + (h / 3) % 4]`},
	{name: "value", typ: "numeric(15,6)", notNull: true, expr: `(((h % 2000000000) - 1000000000) / 1000000.0)::numeric(15,6)`},
	{name: "unit", typ: "varchar(20)", notNull: true, expr: `(ARRAY['ms', 'ms', '|', 'c|ms'])[1 + (h / 3) % 4]`},
	{name: "extra_data", typ: "jsonb", expr: `jsonb_build_object('h', h % 5)`},
}

// drawMetrics makes the drawn table the application's scenario_metrics
// under the built-in metrics entry (its ages and batch size as drawn:
// scenario.builtinAges).
func drawMetrics(tb *table) {
	tb.schema, tb.name, tb.entry = "public", "scenario_metrics", "metrics"
	tb.kind, tb.key, tb.timeCol, tb.timeType = kindPlain, keyUUID, "timestamp", "timestamptz"
	tb.defaultPart, tb.subPart, tb.ownedByRole, tb.dupes = false, false, false, false
	tb.fk, tb.where, tb.export, tb.partition = "", nil, "", "month"
	tb.cols = slices.Clone(metricsColumns)
	tb.ds = &dsSpec{seed: true, bucket: "day", groups: []string{"scenario_id", "metric_type", "metric_name", "unit"},
		values: []dsValue{{name: "value", kind: "numeric", funcs: []string{"avg", "count", "max", "min", "sum"}}}}
}

// dsValues are the value columns a downsample table draws from.
var dsValues = []struct {
	col  column
	kind string
}{
	{column{name: "reading", typ: "numeric", expr: `CASE WHEN h % 41 = 0 THEN 'NaN'::numeric ELSE ((h % 200000) - 100000) / 7.0 END`}, "numeric"},
	{column{name: "qty", typ: "numeric(12,3)", expr: `((h % 10000000) / 1000.0)::numeric(12,3)`}, "numeric"},
	{column{name: "hits", typ: "integer", expr: `((h % 2001) - 1000)::int`}, "integer"},
	{column{name: "level", typ: "double precision", expr: `CASE h % 43 WHEN 0 THEN 'NaN'::float8 WHEN 1 THEN 'Infinity'::float8 WHEN 2 THEN '-Infinity'::float8 ELSE (h % 100000) / 3.0 + 0.1::float8 END`}, "float"},
}

var dsFuncs = []string{"avg", "count", "min", "max", "sum"}

// dsGrid is the samples' grid, in seconds: three days.
const dsGrid = 3 * 24 * 3600

// drawDownsample makes the drawn table a downsample entry's: its where
// condition's column and up to two others stay (the aggregates drop them),
// and group and value columns join them.
func drawDownsample(t *rapid.T, tb *table) {
	ds := &dsSpec{bucket: rapid.SampledFrom([]string{"hour", "day", "week"}).Draw(t, "bucket")}
	keep := rapid.IntRange(0, 2).Draw(t, "columns kept")
	var cols []column
	for _, c := range tb.cols {
		if tb.where != nil && c.name == tb.where.column {
			cols = append(cols, c)
		}
	}
	for _, c := range tb.cols {
		if len(cols) < keep && c.gen == "" && (tb.where == nil || c.name != tb.where.column) {
			cols = append(cols, c)
		}
	}
	ng := rapid.IntRange(0, 2).Draw(t, "groups")
	for _, i := range rapid.SliceOfNDistinct(rapid.IntRange(0, len(dsGroups)-1), ng, ng, rapid.ID).Draw(t, "group columns") {
		c := dsGroups[i]
		c.notNull = rapid.IntRange(0, 3).Draw(t, "not null "+c.name) == 0
		if !c.notNull {
			c.expr = "CASE WHEN " + dsGroupNulls[c.name] + " THEN NULL ELSE " + c.expr + " END"
		}
		cols = append(cols, c)
		ds.groups = append(ds.groups, c.name)
	}
	for _, i := range rapid.SliceOfNDistinct(rapid.IntRange(0, len(dsValues)-1), 1, 2, rapid.ID).Draw(t, "value columns") {
		v := dsValues[i]
		c := v.col
		c.notNull = rapid.IntRange(0, 3).Draw(t, "not null "+c.name) == 0
		cols = append(cols, c)
		funcs := rapid.SliceOfNDistinct(rapid.SampledFrom(dsFuncs), 1, len(dsFuncs), rapid.ID).Draw(t, "aggregates of "+c.name)
		slices.Sort(funcs)
		ds.values = append(ds.values, dsValue{name: c.name, kind: v.kind, funcs: funcs})
	}
	tb.cols, tb.ds = cols, ds
}

// yaml is the entry's mode and downsample section of the policy file.
func (d *dsSpec) yaml() string {
	var b strings.Builder
	fmt.Fprintf(&b, "    mode: downsample\n    downsample:\n      group_by: [%s]\n      bucket: %s\n      aggregates:\n", strings.Join(d.groups, ", "), d.bucket)
	for _, v := range d.values {
		fmt.Fprintf(&b, "        %s: [%s]\n", v.name, strings.Join(v.funcs, ", "))
	}
	return b.String()
}

// timeExpr is a sample's time over h: from ts ($3, on the hour), a point
// of the grid within the $4 seconds, plus up to four minutes.
func (d *dsSpec) timeExpr(ts string) string {
	return fmt.Sprintf("%s + ((h %% $4) / %d * %d + (h / 13) %% 5 * 60) * interval '1 second'", ts, dsGrid, dsGrid)
}

// vals is what table.returning adds of a row: the groups' and values'
// texts, in that order (NULL for a move entry).
func (d *dsSpec) vals(alias string) string {
	if d == nil {
		return "NULL::text[]"
	}
	var out []string
	for _, c := range d.columns() {
		out = append(out, alias+q(c)+"::text")
	}
	return "ARRAY[" + strings.Join(out, ", ") + "]"
}

func (d *dsSpec) columns() []string {
	out := slices.Clone(d.groups)
	for _, v := range d.values {
		out = append(out, v.name)
	}
	return out
}

const (
	usHour = int64(time.Hour / time.Microsecond)
	usDay  = 24 * usHour
)

// bucketStart is the start of the UTC bucket holding ts, computed on the
// epoch: a week starts on a Monday, 1969-12-29 being one.
func (d *dsSpec) bucketStart(ts time.Time) time.Time {
	us := ts.UnixMicro()
	var start int64
	switch d.bucket {
	case "hour":
		start = floorDiv(us, usHour) * usHour
	case "day":
		start = floorDiv(us, usDay) * usDay
	case "week":
		monday := -3 * usDay
		start = floorDiv(us-monday, 7*usDay)*7*usDay + monday
	default:
		panic("torture: bucket " + d.bucket)
	}
	return time.UnixMicro(start).UTC()
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// aggColumns are the archive columns that keep v's functions, in the
// oracle's order: the sum (sum, avg), the count (count, avg), min, max.
// The average is a generated column of the sum and count: not read.
func (v dsValue) aggColumns() (sum, count, lo, hi bool) {
	has := func(f string) bool { return slices.Contains(v.funcs, f) }
	return has("sum") || has("avg"), has("count") || has("avg"), has("min"), has("max")
}

// archiveColumns are the archive columns the oracle reads, in order: the
// groups, the bucket (the time column), sample_count, then each value's.
func (d *dsSpec) archiveColumns(timeCol string) []string {
	out := append(slices.Clone(d.groups), timeCol, "sample_count")
	for _, v := range d.values {
		sum, count, lo, hi := v.aggColumns()
		for _, c := range []struct {
			on     bool
			suffix string
		}{{sum, "_sum"}, {count, "_count"}, {lo, "_min"}, {hi, "_max"}} {
			if c.on {
				out = append(out, v.name+c.suffix)
			}
		}
	}
	return out
}

// archiveExprs are the texts of archiveColumns' values in the archive row
// x; the built-in metrics entry's are where the seed's layout keeps them,
// and its rounded average comes last.
func (d *dsSpec) archiveExprs(x, timeCol string) []string {
	var out []string
	if !d.seed {
		for _, n := range d.archiveColumns(timeCol) {
			out = append(out, x+"."+q(n)+"::text")
		}
		return out
	}
	for _, g := range d.groups {
		out = append(out, x+"."+q(g)+"::text")
	}
	return append(out, x+"."+q(timeCol)+"::text", x+".sample_count::text",
		x+".extra_data->>'sum'", x+".sample_count::text", x+".extra_data->>'min'", x+".extra_data->>'max'", x+".value::text")
}

// coverDownsample records the downsample branches t took.
func (h *harness) coverDownsample(t *table) {
	if t.ds == nil {
		h.cover("mode=move")
		return
	}
	d := t.ds
	if d.seed {
		h.cover("mode=downsample", "metrics entry")
		return
	}
	h.cover("mode=downsample", "bucket="+d.bucket, "downsample kind="+t.kind, fmt.Sprintf("groups=%d", len(d.groups)))
	for _, g := range d.groups {
		h.cover("group=" + g)
	}
	for _, v := range d.values {
		h.cover("value=" + v.name)
		for _, f := range v.funcs {
			h.cover("aggregate=" + f)
		}
	}
	if t.export != "" {
		h.cover("downsample export")
	}
	if t.where != nil {
		h.cover("downsample where")
	}
	switch t.key {
	case keyNone, keyComposite:
		h.cover("downsample without order key") // batches lock rows and delete them by address
	default:
		h.cover("downsample with order key") // batches delete a key range
	}
}

// downsampleBranches are the keys coverDownsample, the archive runs and
// the oracle record.
func downsampleBranches() []string {
	out := []string{"mode=move", "mode=downsample", "groups=0", "groups=1", "groups=2", "downsample export", "downsample where",
		"downsample without order key", "downsample with order key", "downsample merge", "downsample exported read", "op=restore refused", "metrics entry"}
	for _, b := range []string{"hour", "day", "week"} {
		out = append(out, "bucket="+b)
	}
	for _, k := range []string{kindPlain, kindPartitioned, kindInherited} {
		out = append(out, "downsample kind="+k)
	}
	for _, g := range dsGroups {
		out = append(out, "group="+g.name)
	}
	for _, v := range dsValues {
		out = append(out, "value="+v.col.name)
	}
	for _, f := range dsFuncs {
		out = append(out, "aggregate="+f)
	}
	return out
}

// downsampleRefused: the restore was refused because the entry aggregates.
func downsampleRefused(err error) bool {
	a, ok := appError(err)
	return ok && a.Type() == activities.ErrCannotRestore && strings.Contains(err.Error(), "cannot be restored: its samples were aggregated")
}

// pgNum is a numeric value as PostgreSQL orders and adds them: NaN above
// +Infinity above every number above -Infinity; NaN absorbs, and
// +Infinity + -Infinity is NaN. Numeric, integer and double precision
// values (converted exactly) all fit.
type pgNum struct {
	nan bool
	inf int // +1, -1, or 0 for a finite r
	r   *big.Rat
}

func parseNum(s string) (pgNum, error) {
	switch s {
	case "NaN":
		return pgNum{nan: true}, nil
	case "Infinity":
		return pgNum{inf: 1}, nil
	case "-Infinity":
		return pgNum{inf: -1}, nil
	}
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		return pgNum{}, fmt.Errorf("%q is not a number", s)
	}
	return pgNum{r: r}, nil
}

// sumTerm is what a value adds to a sum: the archiver sums value::numeric,
// and PostgreSQL turns a double precision into numeric through its 15
// significant digits (DBL_DIG).
func sumTerm(kind, s string) (pgNum, error) {
	if kind != "float" {
		return parseNum(s)
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return pgNum{}, err
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return parseNum(s)
	}
	return parseNum(strconv.FormatFloat(f, 'g', 15, 64))
}

func (a pgNum) rank() int {
	switch {
	case a.nan:
		return 3
	case a.inf != 0:
		return 1 + a.inf // -1 → 0, +1 → 2
	}
	return 1
}

func (a pgNum) cmp(b pgNum) int {
	ra, rb := a.rank(), b.rank()
	if ra != rb || ra != 1 {
		return ra - rb
	}
	return a.r.Cmp(b.r)
}

func (a pgNum) add(b pgNum) pgNum {
	switch {
	case a.nan || b.nan || a.inf*b.inf == -1:
		return pgNum{nan: true}
	case a.inf != 0:
		return a
	case b.inf != 0:
		return b
	}
	return pgNum{r: new(big.Rat).Add(a.r, b.r)}
}

// times is a added k times (k ≥ 1).
func (a pgNum) times(k int64) pgNum {
	if a.nan || a.inf != 0 {
		return a
	}
	return pgNum{r: new(big.Rat).Mul(a.r, new(big.Rat).SetInt64(k))}
}

func (a *pgNum) String() string {
	switch {
	case a == nil:
		return "NULL"
	case a.nan:
		return "NaN"
	case a.inf > 0:
		return "Infinity"
	case a.inf < 0:
		return "-Infinity"
	}
	return a.r.RatString()
}

// aggRow is one group and bucket's aggregates: the sample count, and per
// value column (dsSpec.values' order) its count, sum, min and max (nil
// for NULL; a function the entry does not keep stays zero).
type aggRow struct {
	groups []*string
	bucket time.Time
	n      int64
	vals   []aggVal
	avg    *pgNum // the metrics entry's average, as the archive rounds it
}

type aggVal struct {
	count         int64
	sum, min, max *pgNum
}

func addNull(a, b *pgNum) *pgNum {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	}
	s := a.add(*b)
	return &s
}

func pick(a, b *pgNum, less bool) *pgNum {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	case (a.cmp(*b) > 0) == less:
		return b
	}
	return a
}

// merge adds o into r, as the archiver's merge of a later batch does.
func (r *aggRow) merge(o *aggRow) {
	r.n += o.n
	for i := range r.vals {
		a, b := &r.vals[i], o.vals[i]
		a.count += b.count
		a.sum, a.min, a.max = addNull(a.sum, b.sum), pick(a.min, b.min, true), pick(a.max, b.max, false)
	}
}

// aggKey is a group and bucket as one map key: each group value quoted
// (NULL bare), so that no two groups share one.
func aggKey(groups []*string, bucket time.Time) string {
	var b strings.Builder
	for _, g := range groups {
		if g == nil {
			b.WriteString("NULL,")
		} else {
			b.WriteString(strconv.Quote(*g) + ",")
		}
	}
	b.WriteString(bucket.Format(time.RFC3339Nano))
	return b.String()
}

func (r *aggRow) describe(d *dsSpec) string {
	var parts []string
	for i, g := range d.groups {
		v := "NULL"
		if r.groups[i] != nil {
			v = strconv.Quote(*r.groups[i])
		}
		parts = append(parts, g+"="+v)
	}
	return fmt.Sprintf("(%s; %s bucket %s)", strings.Join(parts, ", "), d.bucket, r.bucket.Format(time.RFC3339))
}

// parseAggRow reads a row of archiveColumns' texts.
func (d *dsSpec) parseAggRow(texts []*string) (*aggRow, error) {
	want := len(d.archiveExprs("x", "t"))
	if len(texts) != want {
		return nil, fmt.Errorf("%d columns, want %d", len(texts), want)
	}
	r := &aggRow{groups: texts[:len(d.groups)], vals: make([]aggVal, len(d.values))}
	rest := texts[len(d.groups):]
	if rest[0] == nil || rest[1] == nil {
		return nil, errors.New("NULL bucket or sample_count")
	}
	var err error
	if r.bucket, err = time.Parse("2006-01-02 15:04:05.999999-07", *rest[0]); err != nil {
		return nil, fmt.Errorf("bucket %q: %w", *rest[0], err)
	}
	r.bucket = r.bucket.UTC()
	if r.n, err = strconv.ParseInt(*rest[1], 10, 64); err != nil {
		return nil, fmt.Errorf("sample_count %q: %w", *rest[1], err)
	}
	rest = rest[2:]
	num := func(what string) (*pgNum, error) {
		s := rest[0]
		rest = rest[1:]
		if s == nil {
			return nil, nil
		}
		n, err := parseNum(*s)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		return &n, nil
	}
	for i, v := range d.values {
		a := &r.vals[i]
		sum, count, lo, hi := v.aggColumns()
		if sum {
			if a.sum, err = num(v.name + "_sum"); err != nil {
				return nil, err
			}
		}
		if count {
			if rest[0] == nil {
				return nil, fmt.Errorf("%s_count is NULL", v.name)
			}
			if a.count, err = strconv.ParseInt(*rest[0], 10, 64); err != nil {
				return nil, fmt.Errorf("%s_count: %w", v.name, err)
			}
			rest = rest[1:]
		}
		if lo {
			if a.min, err = num(v.name + "_min"); err != nil {
				return nil, err
			}
		}
		if hi {
			if a.max, err = num(v.name + "_max"); err != nil {
				return nil, err
			}
		}
	}
	if d.seed {
		if r.avg, err = num("value"); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// dsPlace is what the database holds of a downsample table: its live
// samples by digest, and the aggregates of the archive and of the
// exported objects of dropped partitions, merged by group and bucket.
type dsPlace struct {
	live       map[string]int
	aggs       map[string]*aggRow
	strandedIn []string
	problems   []string // rows the oracle could not read as aggregates
}

// checkDownsample holds a downsample table to the model: samples the
// policy keeps are live and due ones are not; no sample appears that
// nobody wrote; and the aggregates equal the model's GROUP BY over every
// sample that left the live table.
func (h *harness) checkDownsample(t *rapid.T, m *model) {
	p := h.observeDownsample(t, m)
	m.mu.Lock()
	defer m.mu.Unlock()
	h.compareDownsample(t, m, p)
	h.s.stats.rowsChecked += len(m.rows)
}

func (h *harness) observeDownsample(t *rapid.T, m *model) dsPlace {
	ctx := context.Background()
	tb, d := m.t, m.t.ds
	p := dsPlace{live: map[string]int{}, aggs: map[string]*aggRow{}}
	entry := h.entry(tb)
	archiveName := strings.TrimPrefix(entry.Archive, tb.schema+".")
	archive := q(tb.schema) + "." + q(archiveName)
	names := d.archiveColumns(tb.timeCol)
	exprs := d.archiveExprs("x", tb.timeCol)
	add := func(texts []*string) {
		r, err := d.parseAggRow(texts)
		if err != nil {
			p.problems = append(p.problems, err.Error())
			return
		}
		k := aggKey(r.groups, r.bucket)
		if have, ok := p.aggs[k]; ok {
			have.merge(r)
			return
		}
		p.aggs[k] = r
	}
	err := pgx.BeginFunc(ctx, h.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, pinnedSettings); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT `+tb.digestOf("x")+` FROM `+tb.rel("")+` x`)
		if err != nil {
			return fmt.Errorf("read %s: %w", tb.qualified(), err)
		}
		var dg string
		if _, err := pgx.ForEachRow(rows, []any{&dg}, func() error { p.live[dg]++; return nil }); err != nil {
			return fmt.Errorf("read %s: %w", tb.qualified(), err)
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, archive).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			return nil
		}
		rows, err = tx.Query(ctx, `SELECT ARRAY[`+strings.Join(exprs, ", ")+`] FROM `+archive+` x`)
		if err != nil {
			return fmt.Errorf("read %s: %w", archive, err)
		}
		all, err := pgx.CollectRows(rows, pgx.RowTo[[]*string])
		if err != nil {
			return fmt.Errorf("read %s: %w", archive, err)
		}
		for _, r := range all {
			add(r)
		}
		// Archive partitions retention left detached.
		rows, err = tx.Query(ctx, `
			SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relkind = 'r' AND NOT c.relispartition AND c.relname ~ ('^' || $2 || '_y[0-9]{4}m')
			  AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)`, tb.schema, archiveName)
		if err != nil {
			return err
		}
		if p.strandedIn, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return err
		}
		list, err := droppedExports(ctx, tx, entry.Archive)
		if err != nil {
			return err
		}
		if d.exports == nil {
			d.exports = map[int64][][]*string{}
		}
		var cols []Column
		for _, e := range list {
			got, ok := d.exports[e.id]
			if !ok && cols == nil {
				if cols, err = archiveOracleColumns(ctx, tx, archive, names); err != nil {
					return err
				}
			}
			if !ok {
				b, err := h.download(ctx, e)
				if err != nil {
					return err
				}
				if got, err = objectRows(ctx, tx, b, e.format, cols); err != nil {
					return fmt.Errorf("read export %d (%s) with the oracle's reader: %w", e.id, e.key, err)
				}
				d.exports[e.id] = got
			}
			if len(got) > 0 {
				h.cover("downsample exported read")
			}
			for _, r := range got {
				add(r)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("oracle: %v", err)
	}
	return p
}

// archiveOracleColumns are the archive table's columns of names, with
// their types as the catalogue spells them: what objectRows reads an
// exported object as. A column the archive lacks is an error.
func archiveOracleColumns(ctx context.Context, tx pgx.Tx, archive string, names []string) ([]Column, error) {
	rows, err := tx.Query(ctx, `SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
		WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped`, archive)
	if err != nil {
		return nil, err
	}
	types := map[string]string{}
	var n, typ string
	if _, err := pgx.ForEachRow(rows, []any{&n, &typ}, func() error { types[n] = typ; return nil }); err != nil {
		return nil, err
	}
	out := make([]Column, len(names))
	for i, n := range names {
		typ, ok := types[n]
		if !ok {
			return nil, fmt.Errorf("%s has no column %q to keep the aggregates in", archive, n)
		}
		out[i] = Column{Name: n, Type: typ}
	}
	return out, nil
}

// expected is the model's GROUP BY over the samples that are not live
// (m.mu held): every copy written and not deleted that the live table
// does not hold was archived.
func (m *model) expected(live map[string]int) (map[string]*aggRow, error) {
	d := m.t.ds
	out := map[string]*aggRow{}
	for dg, want := range m.rows {
		k := int64(want - live[dg])
		if k <= 0 {
			continue
		}
		meta := m.meta[dg]
		if len(meta.vals) != len(d.groups)+len(d.values) {
			return nil, fmt.Errorf("sample %s: %d values returned, want %d", dg[:12], len(meta.vals), len(d.groups)+len(d.values))
		}
		r := &aggRow{groups: meta.vals[:len(d.groups)], bucket: d.bucketStart(meta.ts), n: k, vals: make([]aggVal, len(d.values))}
		for i, v := range d.values {
			s := meta.vals[len(d.groups)+i]
			if s == nil {
				continue
			}
			x, err := parseNum(*s)
			if err != nil {
				return nil, fmt.Errorf("sample %s: %s: %w", dg[:12], v.name, err)
			}
			term, err := sumTerm(v.kind, *s)
			if err != nil {
				return nil, fmt.Errorf("sample %s: %s: %w", dg[:12], v.name, err)
			}
			sum := term.times(k)
			r.vals[i] = aggVal{count: k, sum: &sum, min: &x, max: &x}
		}
		key := aggKey(r.groups, r.bucket)
		if have, ok := out[key]; ok {
			have.merge(r)
		} else {
			out[key] = r
		}
	}
	return out, nil
}

// compareDownsample holds the places to the model (m.mu held).
func (h *harness) compareDownsample(t *rapid.T, m *model, p dsPlace) {
	tb, d := m.t, m.t.ds
	var problems []string
	report := func(format string, args ...any) {
		if len(problems) < 12 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	for _, s := range p.problems {
		report("an aggregate the oracle cannot read: %s", s)
	}
	if len(p.strandedIn) > 0 {
		report("archive partitions left detached: %v", p.strandedIn)
	}
	for dg, n := range p.live {
		if n > m.rows[dg] {
			report("a sample nobody wrote (or changed on the way) is live: digest %s, %d copies live, %d written: %s", dg[:12], n, m.rows[dg], h.rowText(tb, dg))
		}
	}
	var digests []string
	for dg := range m.rows {
		digests = append(digests, dg)
	}
	sort.Strings(digests)
	for _, dg := range digests {
		want, meta := m.rows[dg], m.meta[dg]
		judged, due := m.judged(meta)
		if !judged {
			continue // written after the last run began: either place
		}
		switch {
		case !due && p.live[dg] != want:
			report("sample %s (time %s, where %v) is one the policy keeps (cut-off %s), but %d of %d copies are not live",
				dg[:12], meta.ts.Format(time.RFC3339), meta.whereOK, m.cutoff.Format(time.RFC3339), want-p.live[dg], want)
		case due && p.live[dg] != 0:
			report("sample %s (time %s) is due (cut-off %s) but still live", dg[:12], meta.ts.Format(time.RFC3339), m.cutoff.Format(time.RFC3339))
		}
	}
	exp, err := m.expected(p.live)
	if err != nil {
		t.Fatalf("oracle: %s: %v", tb.entry, err)
	}
	var keys []string
	for k := range exp {
		keys = append(keys, k)
	}
	for k := range p.aggs {
		if _, ok := exp[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		want, got := exp[k], p.aggs[k]
		if want == nil {
			report("an aggregate of samples nobody archived: %s, %d samples", got.describe(d), got.n)
			continue
		}
		// A partition retention dropped without an export took its
		// aggregates; a late sample's may have come after, in a partition
		// made again.
		if tb.export == "" && m.ran && !m.periodEnd(want.bucket).After(m.retention) {
			continue
		}
		if got == nil {
			report("the aggregate %s of %d archived samples is nowhere (not in the archive nor in an exported object)", want.describe(d), want.n)
			continue
		}
		if diff := diffAgg(d, want, got); diff != "" {
			report("the aggregate %s differs from the model's GROUP BY: %s", want.describe(d), diff)
		}
	}
	if len(problems) > 0 {
		t.Fatalf("oracle: %s (%s, downsample by %s): %d samples in the model, %d live, %d aggregates in the model, %d found:\n  %s",
			tb.entry, tb.qualified(), d.bucket, len(m.rows), total(p.live), len(exp), len(p.aggs), strings.Join(problems, "\n  "))
	}
}

// diffAgg says how got differs from want in the functions the entry keeps
// ("" when it does not).
func diffAgg(d *dsSpec, want, got *aggRow) string {
	var out []string
	if want.n != got.n {
		out = append(out, fmt.Sprintf("sample_count %d, model %d", got.n, want.n))
	}
	for i, v := range d.values {
		w, g := want.vals[i], got.vals[i]
		sum, count, lo, hi := v.aggColumns()
		if count && w.count != g.count {
			out = append(out, fmt.Sprintf("%s_count %d, model %d", v.name, g.count, w.count))
		}
		for _, c := range []struct {
			on     bool
			suffix string
			w, g   *pgNum
		}{{sum, "_sum", w.sum, g.sum}, {lo, "_min", w.min, g.min}, {hi, "_max", w.max, g.max}} {
			if c.on && !sameNum(c.w, c.g) {
				out = append(out, fmt.Sprintf("%s%s %s, model %s", v.name, c.suffix, c.g, c.w))
			}
		}
	}
	if d.seed && !roundedAverage(want.vals[0].sum, want.n, got.avg) {
		out = append(out, fmt.Sprintf("value (the average) %s, model %s / %d", got.avg, want.vals[0].sum, want.n))
	}
	return strings.Join(out, "; ")
}

// roundedAverage: avg is sum / n rounded to the archive's six decimals,
// within half a unit of the last (and a hair more: PostgreSQL divides to
// sixteen significant digits before it rounds, which may carry a tie).
func roundedAverage(sum *pgNum, n int64, avg *pgNum) bool {
	if sum == nil || avg == nil || n == 0 || sum.r == nil || avg.r == nil {
		return sum == nil && avg == nil || sum != nil && avg != nil && sum.rank() == avg.rank() && sum.r == nil
	}
	exact := new(big.Rat).Quo(sum.r, new(big.Rat).SetInt64(n))
	off := new(big.Rat).Abs(new(big.Rat).Sub(exact, avg.r))
	return off.Cmp(big.NewRat(5000001, 10000000000000)) <= 0 // 5e-7 + 1e-13
}

func sameNum(a, b *pgNum) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.cmp(*b) == 0
}
