package activities

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/policy"
)

// A declared entry's archive table is made by the archiver from the live
// table's catalogue definition (the built-in tables' are made by
// migrations/). The same column list gives the CREATE TABLE and, before the
// table exists (a dry run, `starter policy check`), the definition the
// checks compare against.

// archiveColumn is one column of an archive table to create.
type archiveColumn struct {
	name, typ string
	notNull   bool
	extra     string // DEFAULT ..., GENERATED ...
}

// archiveColumnsFor lists the archive table's columns for entry t over
// the live table.
func archiveColumnsFor(t policy.Table, live catalog.Table) ([]archiveColumn, error) {
	var cols []archiveColumn
	switch t.ModeOf() {
	case policy.ModeDownsample:
		for _, g := range t.GroupBy {
			c, ok := live.Column(g)
			if !ok {
				return nil, invalid("policy", fmt.Errorf("%s: downsample.group_by: %s has no column %q", t.Name, t.Live, g))
			}
			cols = append(cols, archiveColumn{name: g, typ: c.Type})
		}
		cols = append(cols, archiveColumn{name: t.TimeColumn, typ: "timestamp with time zone", notNull: true},
			archiveColumn{name: "sample_count", typ: "bigint", notNull: true})
		for _, a := range t.Aggregates {
			c, ok := live.Column(a.Column)
			if !ok {
				return nil, invalid("policy", fmt.Errorf("%s: downsample.aggregates: %s has no column %q", t.Name, t.Live, a.Column))
			}
			cols = append(cols, aggregateColumns(a, c)...)
		}
	default:
		// Plain columns, generated and identity ones included: the archive
		// keeps the values the live rows had, it computes none.
		for _, c := range live.Columns {
			cols = append(cols, archiveColumn{name: c.Name, typ: c.Type, notNull: c.NotNull || c.Name == t.TimeColumn})
		}
		if t.ModeOf() == policy.ModeOffload {
			cols = append(cols, archiveColumn{name: "s3_location", typ: "text"},
				archiveColumn{name: "deleted_locally", typ: "boolean", notNull: true, extra: "DEFAULT false"},
				archiveColumn{name: "archive_info", typ: "jsonb"})
		}
	}
	cols = append(cols, archiveColumn{name: "archived_at", typ: "timestamp with time zone", notNull: true, extra: "DEFAULT now()"},
		archiveColumn{name: "archive_batch_id", typ: "uuid", notNull: true})
	seen := map[string]bool{}
	for _, c := range cols {
		if seen[c.name] {
			return nil, invalid("policy", fmt.Errorf("%s: the archive table would have column %q twice (a live column of that name clashes with one the archiver adds): rename it or declare the archive table yourself", t.Name, c.name))
		}
		if len(c.name) > 63 {
			return nil, invalid("policy", fmt.Errorf("%s: archive column %q is longer than PostgreSQL's 63 characters", t.Name, c.name))
		}
		seen[c.name] = true
	}
	return cols, nil
}

// aggregateColumns are the columns one value column's aggregates keep.
// Every function merges exactly across batches: sums and counts add, min
// and max widen, and the average is sum / count, a generated column.
func aggregateColumns(a policy.Aggregate, c catalog.Column) []archiveColumn {
	var out []archiveColumn
	has := func(f string) bool { return slices.Contains(a.Funcs, f) }
	if has("sum") || has("avg") {
		out = append(out, archiveColumn{name: a.Column + "_sum", typ: "numeric"})
	}
	if has("count") || has("avg") {
		out = append(out, archiveColumn{name: a.Column + "_count", typ: "bigint", notNull: true})
	}
	if has("min") {
		out = append(out, archiveColumn{name: a.Column + "_min", typ: c.Type})
	}
	if has("max") {
		out = append(out, archiveColumn{name: a.Column + "_max", typ: c.Type})
	}
	if has("avg") {
		out = append(out, archiveColumn{name: a.Column + "_avg", typ: "numeric",
			extra: fmt.Sprintf("GENERATED ALWAYS AS (%s / NULLIF(%s, 0)) STORED", catalog.Quote(a.Column+"_sum"), catalog.Quote(a.Column+"_count"))})
	}
	return out
}

// archiveKey is the archive table's unique key: the live primary key with
// the time column (PostgreSQL requires the partition key in it); for
// downsampling, the group and the bucket. Nil for a live table without a
// primary key.
func archiveKey(t policy.Table, live catalog.Table) []string {
	if t.ModeOf() == policy.ModeDownsample {
		return append(append([]string(nil), t.GroupBy...), t.TimeColumn)
	}
	if len(live.PrimaryKey) == 0 {
		return nil
	}
	key := append([]string(nil), live.PrimaryKey...)
	if !slices.Contains(key, t.TimeColumn) {
		key = append(key, t.TimeColumn)
	}
	return key
}

// createArchiveSQL is the archive table's DDL: partitioned by RANGE on the
// time column, with its key. A downsample's key treats NULL group values as
// equal, so that a NULL group merges like any other.
func createArchiveSQL(t policy.Table, live catalog.Table) ([]string, error) {
	cols, err := archiveColumnsFor(t, live)
	if err != nil {
		return nil, err
	}
	var defs []string
	for _, c := range cols {
		d := catalog.Quote(c.name) + " " + c.typ
		if c.notNull {
			d += " NOT NULL"
		}
		if c.extra != "" {
			d += " " + c.extra
		}
		defs = append(defs, d)
	}
	if key := archiveKey(t, live); key != nil {
		if t.ModeOf() == policy.ModeDownsample {
			defs = append(defs, fmt.Sprintf("UNIQUE NULLS NOT DISTINCT (%s)", catalog.QuoteAll("", key)))
		} else {
			defs = append(defs, fmt.Sprintf("PRIMARY KEY (%s)", catalog.QuoteAll("", key)))
		}
	}
	stmts := []string{fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (\n    %s\n) PARTITION BY RANGE (%s)",
		catalog.QuoteName(t.Archive), strings.Join(defs, ",\n    "), catalog.Quote(t.TimeColumn))}
	stmts = append(stmts, fmt.Sprintf("COMMENT ON TABLE %s IS %s", catalog.QuoteName(t.Archive),
		quoteLiteral(fmt.Sprintf("archiver: archive of %s (policy entry %s, mode %s)", t.Live, t.Name, t.ModeOf()))))
	return stmts, nil
}

// plannedArchive is the definition the archive table will have once made,
// for the checks that run before it exists.
func plannedArchive(t policy.Table, live catalog.Table) (catalog.Table, error) {
	cols, err := archiveColumnsFor(t, live)
	if err != nil {
		return catalog.Table{}, err
	}
	out := catalog.Table{Name: t.Archive, Kind: catalog.Partitioned, PrimaryKey: archiveKey(t, live)}
	for _, c := range cols {
		lc, _ := live.Column(c.name)
		col := catalog.Column{Name: c.name, Type: c.typ, NotNull: c.notNull, HasDefault: c.extra != "", Generated: strings.HasPrefix(c.extra, "GENERATED")}
		if lc.Name != "" && lc.Type == c.typ {
			col.TypeOID, col.Typmod = lc.TypeOID, lc.Typmod
		}
		out.Columns = append(out.Columns, col)
	}
	return out, nil
}

// ensureArchiveTable makes a declared entry's archive table when it does
// not exist, as the worker role (which then owns it and its partitions).
// It reports whether it made it.
func ensureArchiveTable(ctx context.Context, db querier, t policy.Table) (bool, error) {
	if t.Seed() {
		return false, nil // migrations/ makes the built-in ones
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '5s'; SET LOCAL ROLE `+WorkerRole); err != nil {
		return false, fmt.Errorf("create the archive table of %s: %w", t.Name, err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('archiver.archive-table.' || $1))`, t.Archive); err != nil {
		return false, err
	}
	archive, err := catalog.Describe(ctx, tx, t.Archive)
	if err != nil || archive.Exists() {
		return false, err
	}
	live, err := catalog.Describe(ctx, tx, t.Live)
	if err != nil {
		return false, err
	}
	if !live.Exists() {
		return false, invalid("policy", fmt.Errorf("%s: table %s does not exist", t.Name, t.Live))
	}
	stmts, err := createArchiveSQL(t, live)
	if err != nil {
		return false, err
	}
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, s); err != nil {
			return false, fmt.Errorf("create the archive table %s: %w", t.Archive, err)
		}
	}
	return true, tx.Commit(ctx)
}
