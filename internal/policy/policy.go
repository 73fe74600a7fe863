// Package policy is the one place that says what the archiver moves, when and
// where: the tables, their archive-after ages, retention and batch sizes, with
// the seed's values as defaults, overridable by configuration (Override).
// SQL identifiers come only from here.
package policy

import (
	"fmt"
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
}

// Tables is the default policy (the seed's values).
var Tables = []Table{
	{Name: "logs", Live: "scenario_logs", Archive: "scenario_logs_archive", TimeColumn: "received_at",
		ArchiveAfter: 365 * Day, Retention: 7 * 365 * Day, BatchSize: 10000, Built: true, Mode: ModeMove},
	{Name: "metrics", Live: "scenario_metrics", Archive: "scenario_metrics_archive", TimeColumn: "timestamp",
		ArchiveAfter: 730 * Day, Retention: 5 * 365 * Day, BatchSize: 50000, DayAligned: true, Built: true,
		Mode: ModeDownsample, GroupBy: []string{"scenario_id", "metric_type", "metric_name", "unit"}, Value: "value"},
	{Name: "reports", Live: "reports", Archive: "reports_archive", TimeColumn: "created_at",
		ArchiveAfter: 180 * Day, Retention: 5 * 365 * Day, BatchSize: 50, Built: true,
		Mode: ModeOffload, PathColumn: "file_path"},
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
	return Table{}, fmt.Errorf("unknown table %q (known: %s)", name, strings.Join(Names(), ", "))
}

// Names lists the tables the policy knows, in policy order.
func Names() []string {
	out := make([]string, 0, len(Tables))
	for _, t := range Tables {
		out = append(out, t.Name)
	}
	return out
}

// BuiltNames lists the tables this version can archive.
func BuiltNames() []string {
	var out []string
	for _, t := range Tables {
		if t.Built {
			out = append(out, t.Name)
		}
	}
	return out
}

// Select validates a list of table names: known, built, no duplicates. It
// returns them in policy order so that runs are described the same way
// whatever order the operator typed.
func Select(names []string) ([]string, error) {
	if len(names) == 0 {
		return nil, fmt.Errorf("no table selected (known: %s)", strings.Join(Names(), ", "))
	}
	seen := map[string]bool{}
	for _, n := range names {
		t, err := Lookup(n)
		if err != nil {
			return nil, err
		}
		if !t.Built {
			return nil, fmt.Errorf("archiving %s is not built yet in this version (built: %s)", n, strings.Join(BuiltNames(), ", "))
		}
		if seen[n] {
			return nil, fmt.Errorf("table %q selected twice", n)
		}
		seen[n] = true
	}
	out := make([]string, 0, len(names))
	for _, t := range Tables {
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
	return c
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
