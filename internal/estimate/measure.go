package estimate

import (
	"context"
	"fmt"
	"time"

	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/policy"
)

// relSize is a table's size summed over itself and its partitions (or
// inheritance children).
type relSize struct {
	heap, index, total int64
	// tuples is the planner's row count (reltuples) summed over the
	// members that store rows; negative when one was never analysed.
	tuples float64
}

// indexRatio is index bytes per heap byte (0 for an empty table).
func (s relSize) indexRatio() float64 {
	if s.heap <= 0 {
		return 0
	}
	return float64(s.index) / float64(s.heap)
}

// The members of a table whose sizes add up to it: a partitioned table's
// partition tree (pg_partition_tree: itself, sub-partitioned tables, leaves),
// an inheritance parent with its descendants, or the table alone.
const (
	membersPartitioned = `WITH members(relid) AS (SELECT relid FROM pg_partition_tree($1::oid::regclass))`
	membersInherited   = `WITH RECURSIVE members(relid) AS (
    SELECT $1::oid
    UNION
    SELECT i.inhrelid FROM pg_inherits i JOIN members m ON i.inhparent = m.relid)`
	membersPlain = `WITH members(relid) AS (SELECT $1::oid)`
)

// sizeOfSQL adds up the members' sizes. pg_total_relation_size is the heap,
// its TOAST table, free space and visibility maps and the indexes;
// pg_table_size all but the indexes. A partitioned parent stores nothing
// itself (0 bytes, no tuples).
const sizeOfSQL = `
SELECT COALESCE(sum(pg_table_size(c.oid)), 0)::int8,
       COALESCE(sum(pg_indexes_size(c.oid)), 0)::int8,
       COALESCE(sum(pg_total_relation_size(c.oid)), 0)::int8,
       CASE WHEN bool_or(c.relkind IN ('r', 'm') AND c.reltuples < 0) THEN -1
            ELSE COALESCE(sum(c.reltuples) FILTER (WHERE c.relkind IN ('r', 'm')), 0) END::float8
FROM members m JOIN pg_class c ON c.oid = m.relid`

func sizeOf(ctx context.Context, db catalog.Querier, t catalog.Table) (relSize, error) {
	members := membersPlain
	switch t.Kind {
	case catalog.Partitioned:
		members = membersPartitioned
	case catalog.Inherited:
		members = membersInherited
	}
	var s relSize
	if err := db.QueryRow(ctx, members+sizeOfSQL, t.OID).Scan(&s.heap, &s.index, &s.total, &s.tuples); err != nil {
		return s, fmt.Errorf("read the size of %s: %w", t.Name, err)
	}
	return s, nil
}

// rowBytesExpr is a row's bytes in its heap page: the tuple (header, null
// bitmap, data) rounded up to the 8-byte alignment tuples are placed at,
// plus its 4-byte line pointer.
const rowBytesExpr = `(pg_column_size(t.*) + 7) / 8 * 8 + 4`

// pageShare scales tuple bytes by the page header's share of an 8 kB page.
const pageShare = 8192.0 / (8192 - 24)

// sampleRowBytes averages the stored size of about SampleRows rows of
// table: a block sample (TABLESAMPLE SYSTEM, REPEATABLE, so a rerun reads
// the same blocks) when the planner counts many more rows than that,
// otherwise (or when the sample came back empty) the first SampleRows rows
// a scan meets. It returns the bytes per row and how many rows were read.
func sampleRowBytes(ctx context.Context, db catalog.Querier, table string, tuples float64) (float64, int64, error) {
	var avg float64
	var n int64
	rel := catalog.QuoteName(table)
	if tuples > 4*SampleRows {
		percent := 100 * 2 * SampleRows / tuples
		err := db.QueryRow(ctx, `SELECT count(*), COALESCE(avg(`+rowBytesExpr+`), 0)::float8 FROM `+rel+
			` t TABLESAMPLE SYSTEM ($1::float4) REPEATABLE (0)`, percent).Scan(&n, &avg)
		if err != nil {
			return 0, 0, fmt.Errorf("sample the rows of %s: %w", table, err)
		}
		if n > 0 {
			return avg * pageShare, n, nil
		}
	}
	err := db.QueryRow(ctx, `SELECT count(*), COALESCE(avg(`+rowBytesExpr+`), 0)::float8 FROM (SELECT * FROM `+rel+
		` LIMIT $1) t`, SampleRows).Scan(&n, &avg)
	if err != nil {
		return 0, 0, fmt.Errorf("sample the rows of %s: %w", table, err)
	}
	return avg * pageShare, n, nil
}

// aggregatesPerDay is how many aggregate rows a day of a downsample entry's
// data makes: the distinct (group, bucket) pairs over the whole buckets of
// about the last WindowDays days, per day. Whole buckets, so that partial
// buckets at the window's edges do not count as whole ones.
func aggregatesPerDay(ctx context.Context, db catalog.Querier, t policy.Table, now time.Time) (float64, error) {
	bucket := t.Bucket
	if bucket == "" {
		bucket = "day"
	}
	end := policy.BucketStart(bucket, now)
	start := policy.BucketStart(bucket, end.Add(-WindowDays*policy.Day))
	days := end.Sub(start).Hours() / 24
	if days <= 0 {
		return 0, nil
	}
	keys := catalog.QuoteAll("", t.GroupBy)
	if keys != "" {
		keys += ", "
	}
	tc := catalog.Quote(t.TimeColumn)
	sql := fmt.Sprintf(`SELECT count(*) FROM (
    SELECT DISTINCT %s date_trunc($3::text, %s::timestamptz, 'UTC')
    FROM %s WHERE %s >= $1::timestamptz AND %s < $2::timestamptz) g`,
		keys, tc, catalog.QuoteName(t.Live), tc, tc)
	var n int64
	if err := db.QueryRow(ctx, sql, start, end, bucket).Scan(&n); err != nil {
		return 0, fmt.Errorf("count the %s groups of %s: %w", bucket, t.Live, err)
	}
	return float64(n) / days, nil
}

// exportsTable is archive_exports (the cold archive's manifest,
// migrations/006), when it exists with the columns read here.
type exportsTable struct {
	exists, hasRows, hasState bool
}

func findExports(ctx context.Context, db catalog.Querier) (exportsTable, error) {
	t, err := catalog.Describe(ctx, db, "archive_exports")
	if err != nil {
		return exportsTable{}, err
	}
	_, name := t.Column("table_name")
	_, bytes := t.Column("bytes")
	_, rows := t.Column("rows")
	_, state := t.Column("state")
	return exportsTable{exists: t.Exists() && name && bytes, hasRows: rows, hasState: state}, nil
}

// of sums an entry's exported bytes and rows. The manifest names the
// archive table; the entry's name and live table are looked for too. An
// export still 'uploading' has no verified object yet and does not count;
// 'verified', 'dropped' and 'restored' ones keep their object in S3.
func (x exportsTable) of(ctx context.Context, db catalog.Querier, t policy.Table) (int64, int64, error) {
	if !x.exists {
		return 0, 0, nil
	}
	rows := "0"
	if x.hasRows {
		rows = "COALESCE(sum(rows), 0)"
	}
	stored := ""
	if x.hasState {
		stored = " AND state <> 'uploading'"
	}
	var b, r int64
	err := db.QueryRow(ctx, `SELECT COALESCE(sum(bytes), 0)::int8, `+rows+`::int8 FROM archive_exports WHERE table_name = ANY($1::text[])`+stored,
		uniq(t.Archive, t.Live, t.Name)).Scan(&b, &r)
	if err != nil {
		return 0, 0, fmt.Errorf("read archive_exports: %w", err)
	}
	return b, r, nil
}

func uniq(names ...string) []string {
	var out []string
	seen := map[string]bool{}
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}
