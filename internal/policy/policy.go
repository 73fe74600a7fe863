// Package policy is the one place that says what the archiver moves, when and
// where: the tables, their archive-after ages, retention and batch sizes, with
// the seed's values as defaults, overridable by configuration (Override).
// SQL identifiers come only from here.
package policy

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Day is a calendar day in UTC, the unit of every age in the policy.
const Day = 24 * time.Hour

// Modes: how a table's rows leave it.
const (
	// ModeMove: rows go to the archive table as they are.
	ModeMove = "move"
	// ModeDownsample: rows are aggregated per group and day into the
	// archive table and deleted.
	ModeDownsample = "downsample"
	// ModeOffload: each row's file goes to S3, the row to the archive table.
	ModeOffload = "offload"
)

// Table is the policy for one live table.
type Table struct {
	// Name is what operators type: logs, metrics, reports.
	Name string
	// Live and Archive are the table names; TimeColumn is the column the
	// age is measured on and the archive is partitioned by.
	Live, Archive, TimeColumn string
	// ArchiveAfter is the age past which a row leaves the live table.
	ArchiveAfter time.Duration
	// Retention is how long the archive keeps it; monthly archive
	// partitions wholly older than that are dropped (or detached).
	Retention time.Duration
	// BatchSize is the rows (metrics: samples, reports: reports) one batch
	// takes.
	BatchSize int
	// DayAligned truncates the cut-off to a UTC day boundary, so that a day
	// is never half archived (metrics are aggregated per day).
	DayAligned bool
	// Built says whether this version of the archiver can archive the table.
	Built bool
	// Mode is how rows leave the table (ModeMove when empty).
	Mode string `json:",omitempty"`
	// GroupBy and Value (downsample): the columns an aggregate is kept per
	// (with the UTC day of TimeColumn) and the column aggregated.
	GroupBy []string `json:",omitempty"`
	Value   string   `json:",omitempty"`
	// PathColumn (offload): the column holding the file's path.
	PathColumn string `json:",omitempty"`

	// Declared entries (ARCHIVE_POLICY_FILE) add the fields below; the
	// built-in entries leave them empty and keep their seed layouts.

	// Layout is LayoutSeed for the built-in tables, whose archive tables
	// migrations/ creates with the seed's columns, and "" for a declared
	// entry, whose archive table the archiver creates from the live table.
	Layout string `json:",omitempty"`
	// Partition is the archive partitions' span: PartitionMonth (default)
	// or PartitionDay.
	Partition string `json:",omitempty"`
	// LockBudget, when set, is this table's per-batch lock-time budget.
	LockBudget time.Duration `json:",omitempty"`
	// MaxLoad and CriticalLoad, when set, replace the run's --max-load and
	// --critical-load for this table (ParseLoad's form).
	MaxLoad      string `json:",omitempty"`
	CriticalLoad string `json:",omitempty"`
	// Where limits the rows that age out to those matching every condition.
	Where []Condition `json:",omitempty"`
	// Bucket (downsample) is the aggregates' time bucket: hour, day, week.
	Bucket string `json:",omitempty"`
	// Aggregates (downsample) are the functions kept per value column.
	Aggregates []Aggregate `json:",omitempty"`
	// Root (offload) is the directory relative paths resolve under, and
	// the only one files are read from or removed in; ObjectBucket and
	// ObjectPrefix say where the objects go ("" bucket: the worker's
	// REPORTS_ARCHIVE_BUCKET).
	Root         string `json:",omitempty"`
	ObjectBucket string `json:",omitempty"`
	ObjectPrefix string `json:",omitempty"`
	// Export, when set, streams each archive partition past retention to
	// S3 (Parquet or gzip CSV) and verifies it before retention drops or
	// detaches the partition.
	Export *Export `json:",omitempty"`
}

// Export says where and how archive partitions are exported before they
// are dropped: s3://Bucket/Prefix<table>/year=YYYY/month=MM/... ("" bucket:
// the worker's REPORTS_ARCHIVE_BUCKET).
type Export struct {
	Bucket string `json:",omitempty"`
	Prefix string `json:",omitempty"`
	// Format is ExportParquet (default) or ExportCSV.
	Format string `json:",omitempty"`
}

// Export formats.
const (
	ExportParquet = "parquet"
	ExportCSV     = "csv"
)

// FormatOf is the export's format (Parquet when empty).
func (e Export) FormatOf() string {
	if e.Format == "" {
		return ExportParquet
	}
	return e.Format
}

// Validate checks an export's bucket, prefix and format.
func (e Export) Validate() error {
	if e.Bucket != "" && !bucketName.MatchString(e.Bucket) {
		return fmt.Errorf("export bucket %q is not an S3 bucket name", e.Bucket)
	}
	if strings.HasPrefix(e.Prefix, "/") || strings.Contains(e.Prefix, "..") {
		return fmt.Errorf("export prefix %q: a key prefix such as cold/ (no leading /, no ..)", e.Prefix)
	}
	if !slices.Contains([]string{"", ExportParquet, ExportCSV}, e.Format) {
		return fmt.Errorf("export format %q: want parquet or csv", e.Format)
	}
	return nil
}

// LayoutSeed marks the built-in tables' archive layouts.
const LayoutSeed = "seed"

// Partition spans.
const (
	PartitionMonth = "month"
	PartitionDay   = "day"
)

// Condition is one structured filter condition: Column Op Value(s). Values
// are text, cast by PostgreSQL to the column's type; they are always
// parameters, never SQL.
type Condition struct {
	Column string
	Op     string
	Values []string `json:",omitempty"`
}

// Operators a condition may use.
var Operators = []string{"=", "<>", "<", "<=", ">", ">=", "in", "not in", "is null", "is not null"}

// Aggregate is a value column and the functions kept for it.
type Aggregate struct {
	Column string
	Funcs  []string
}

// AggregateFuncs are the functions a downsample may keep; each merges
// exactly (avg through its sum and count).
var AggregateFuncs = []string{"avg", "count", "min", "max", "sum"}

// Buckets are the downsample time buckets.
var Buckets = []string{"hour", "day", "week"}

// PartitionSpan is the entry's archive partition span.
func (t Table) PartitionSpan() string {
	if t.Partition == "" {
		return PartitionMonth
	}
	return t.Partition
}

// ModeOf is the entry's mode (ModeMove when empty).
func (t Table) ModeOf() string {
	if t.Mode == "" {
		return ModeMove
	}
	return t.Mode
}

// Seed reports whether the entry is one of the built-in tables with the
// seed's archive layout.
func (t Table) Seed() bool { return t.Layout == LayoutSeed }

// Tables is the default policy (the seed's values).
var Tables = []Table{
	{Name: "logs", Live: "scenario_logs", Archive: "scenario_logs_archive", TimeColumn: "received_at",
		ArchiveAfter: 365 * Day, Retention: 7 * 365 * Day, BatchSize: 10000, Built: true, Mode: ModeMove, Layout: LayoutSeed},
	{Name: "metrics", Live: "scenario_metrics", Archive: "scenario_metrics_archive", TimeColumn: "timestamp",
		ArchiveAfter: 730 * Day, Retention: 5 * 365 * Day, BatchSize: 20000, DayAligned: true, Built: true,
		Mode: ModeDownsample, GroupBy: []string{"scenario_id", "metric_type", "metric_name", "unit"}, Value: "value", Bucket: "day", Layout: LayoutSeed},
	{Name: "reports", Live: "reports", Archive: "reports_archive", TimeColumn: "created_at",
		ArchiveAfter: 180 * Day, Retention: 5 * 365 * Day, BatchSize: 50, Built: true,
		Mode: ModeOffload, PathColumn: "file_path", Layout: LayoutSeed},
}

// MaxBatchSize bounds a batch so that one transaction stays short.
const MaxBatchSize = 100000

// Lookup returns the default policy of the table operators call name.
func Lookup(name string) (Table, error) {
	return Find(Tables, name)
}

// Find returns the policy of name in tables.
func Find(tables []Table, name string) (Table, error) {
	for _, t := range tables {
		if t.Name == name {
			return t, nil
		}
	}
	return Table{}, fmt.Errorf("unknown table %q (known: %s)", name, strings.Join(NamesOf(tables), ", "))
}

// Names lists the tables the default policy knows, in policy order.
func Names() []string { return NamesOf(Tables) }

// NamesOf lists the entries of a policy, in policy order.
func NamesOf(tables []Table) []string {
	out := make([]string, 0, len(tables))
	for _, t := range tables {
		out = append(out, t.Name)
	}
	return out
}

// BuiltNames lists the tables this version can archive.
func BuiltNames() []string { return BuiltNamesOf(Tables) }

// BuiltNamesOf lists the entries of a policy this version can archive.
func BuiltNamesOf(tables []Table) []string {
	var out []string
	for _, t := range tables {
		if t.Built {
			out = append(out, t.Name)
		}
	}
	return out
}

// Select validates a list of table names against the default policy.
func Select(names []string) ([]string, error) { return SelectFrom(Tables, names) }

// SelectFrom validates a list of entry names against a policy: known,
// built, no duplicates. It returns them in policy order so that runs are
// described the same way whatever order the operator typed.
func SelectFrom(tables []Table, names []string) ([]string, error) {
	if len(names) == 0 {
		return nil, fmt.Errorf("no table selected (known: %s)", strings.Join(NamesOf(tables), ", "))
	}
	seen := map[string]bool{}
	for _, n := range names {
		t, err := Find(tables, n)
		if err != nil {
			return nil, err
		}
		if !t.Built {
			return nil, fmt.Errorf("archiving %s is not built yet in this version (built: %s)", n, strings.Join(BuiltNamesOf(tables), ", "))
		}
		if seen[n] {
			return nil, fmt.Errorf("table %q selected twice", n)
		}
		seen[n] = true
	}
	out := make([]string, 0, len(names))
	for _, t := range tables {
		if seen[t.Name] {
			out = append(out, t.Name)
		}
	}
	return out, nil
}

// Cutoff is the instant below which rows of t are eligible at asOf: rows with
// a timestamp strictly earlier than it move; a row exactly at it stays. For a
// day-aligned table it is the start of the UTC day holding asOf − ArchiveAfter.
func (t Table) Cutoff(asOf time.Time) time.Time {
	c := asOf.UTC().Add(-t.ArchiveAfter)
	if t.DayAligned {
		c = time.Date(c.Year(), c.Month(), c.Day(), 0, 0, 0, 0, time.UTC)
	}
	if t.ModeOf() == ModeDownsample {
		c = BucketStart(t.Bucket, c) // no bucket is left half aggregated
	}
	return c
}

// BucketStart is the start of the UTC bucket (hour, day, week from Monday)
// that holds ts; "" is day.
func BucketStart(bucket string, ts time.Time) time.Time {
	ts = ts.UTC()
	switch bucket {
	case "hour":
		return ts.Truncate(time.Hour)
	case "week":
		d := time.Date(ts.Year(), ts.Month(), ts.Day(), 0, 0, 0, 0, time.UTC)
		return d.AddDate(0, 0, -((int(d.Weekday()) + 6) % 7))
	default:
		return time.Date(ts.Year(), ts.Month(), ts.Day(), 0, 0, 0, 0, time.UTC)
	}
}

// RetentionLimit is the instant before which archived data of t is past
// retention at asOf: a monthly partition whose upper bound is at or before
// it is dropped.
func (t Table) RetentionLimit(asOf time.Time) time.Time {
	return asOf.UTC().Add(-t.Retention)
}

// Validate checks one table's numbers.
func (t Table) Validate() error {
	if t.ArchiveAfter <= 0 {
		return fmt.Errorf("%s: archive-after must be positive, got %v", t.Name, t.ArchiveAfter)
	}
	if t.Retention <= t.ArchiveAfter {
		return fmt.Errorf("%s: retention (%d days) must be longer than archive-after (%d days), or rows would be dropped as they are archived",
			t.Name, t.Retention/Day, t.ArchiveAfter/Day)
	}
	if err := ValidateBatchSize(t.BatchSize); err != nil {
		return fmt.Errorf("%s: %w", t.Name, err)
	}
	if t.Export != nil {
		if err := t.Export.Validate(); err != nil {
			return fmt.Errorf("%s: %w", t.Name, err)
		}
	}
	return nil
}

// ValidateBatchSize refuses sizes a transaction cannot sensibly take.
func ValidateBatchSize(n int) error {
	if n <= 0 {
		return fmt.Errorf("batch size %d: must be at least 1", n)
	}
	if n > MaxBatchSize {
		return fmt.Errorf("batch size %d: must be at most %d so one transaction stays short", n, MaxBatchSize)
	}
	return nil
}

// Normalize completes an entry recorded by an older version, which knew
// only the built-in tables by name: an entry with a built-in name and live
// table gets the built-in's mode and layout fields (its ages and batch size
// stay as recorded).
func Normalize(t Table) Table {
	b, err := Lookup(t.Name)
	if err != nil || b.Live != t.Live || t.Layout != "" {
		return t
	}
	t.Mode, t.Layout, t.GroupBy, t.Value, t.Bucket, t.PathColumn, t.DayAligned = b.Mode, b.Layout, b.GroupBy, b.Value, b.Bucket, b.PathColumn, b.DayAligned
	return t
}

// CheckNames validates every identifier an entry holds, and where an
// offload reads, deletes and writes, as LoadFile does, so that an entry
// that did not come through LoadFile (an activity's input) can neither put
// SQL into a statement nor point offload's read-and-delete at another
// directory.
func (t Table) CheckNames() error {
	if !ValidName(t.Live) || !ValidName(t.Archive) {
		return fmt.Errorf("%s: %q or %q is not a table name", t.Name, t.Live, t.Archive)
	}
	if t.Export != nil {
		if err := t.Export.Validate(); err != nil {
			return fmt.Errorf("%s: %w", t.Name, err)
		}
	}
	cols := append([]string{t.TimeColumn}, t.GroupBy...)
	if t.Value != "" {
		cols = append(cols, t.Value)
	}
	if t.PathColumn != "" {
		cols = append(cols, t.PathColumn)
	}
	for _, c := range t.Where {
		cols = append(cols, c.Column)
		if !slices.Contains(Operators, c.Op) {
			return fmt.Errorf("%s: %q is not an operator", t.Name, c.Op)
		}
	}
	for _, a := range t.Aggregates {
		cols = append(cols, a.Column)
		for _, f := range a.Funcs {
			if !slices.Contains(AggregateFuncs, f) {
				return fmt.Errorf("%s: %q is not an aggregate", t.Name, f)
			}
		}
	}
	for _, c := range cols {
		if !identifier.MatchString(c) {
			return fmt.Errorf("%s: %q is not a column name", t.Name, c)
		}
	}
	if t.Bucket != "" && !slices.Contains(Buckets, t.Bucket) {
		return fmt.Errorf("%s: %q is not a bucket", t.Name, t.Bucket)
	}
	if t.Partition != "" && t.Partition != PartitionMonth && t.Partition != PartitionDay {
		return fmt.Errorf("%s: %q is not a partition span", t.Name, t.Partition)
	}
	// The seed's layout makes offload read under the worker's REPORTS_DIR
	// and the batches assume the seed's columns: only the built-in entries
	// have it, on their own tables.
	switch t.Layout {
	case "":
	case LayoutSeed:
		if b, err := Lookup(t.Name); err != nil || b.Live != t.Live || b.Archive != t.Archive || b.ModeOf() != t.ModeOf() {
			return fmt.Errorf("%s: layout %q is the built-in tables' (%s), on their own live and archive tables", t.Name, t.Layout, strings.Join(Names(), ", "))
		}
	default:
		return fmt.Errorf("%s: %q is not a layout", t.Name, t.Layout)
	}
	// The built-in reports entry reads under the worker's REPORTS_DIR and
	// writes to its bucket: it has none of these fields.
	if t.ModeOf() == ModeOffload && !t.Seed() || t.Root != "" || t.ObjectBucket != "" || t.ObjectPrefix != "" {
		if err := checkOffload(t.Root, t.ObjectBucket, t.ObjectPrefix); err != nil {
			return fmt.Errorf("%s: %w", t.Name, err)
		}
	}
	return nil
}
