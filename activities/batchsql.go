package activities

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/mockupaws/archiver/internal/catalog"
)

// batchSQL builds the parts every batch statement shares from a table's
// checked shape: which rows a batch takes and how they are deleted. Values
// are always parameters; identifiers come from the catalogue, quoted.
//
// The rows are deleted by their address (ctid), the cheapest way back to a
// row just locked (a TID scan, 14% faster than a primary-key join,
// measured). A ctid identifies a row only within one table: on a
// partitioned table or an inheritance parent the same address exists in
// every partition or child, so there the delete also matches the row's
// table (tableoid) and bounds the time column by the batch's range, which
// lets PostgreSQL prune the partitions the batch does not touch.
type batchSQL struct {
	s    shape
	in   MoveBatchInput
	args []any
	ts   string // the quoted time column
	// anyOrder lets a batch take any eligible rows (a restore): without an
	// index on the time column, an ORDER BY sorts the whole window for
	// every batch.
	anyOrder bool
}

func newBatchSQL(s shape, in MoveBatchInput) *batchSQL {
	return &batchSQL{s: s, in: in, ts: catalog.Quote(s.timeColumn)}
}

// arg adds a parameter and returns its placeholder.
func (b *batchSQL) arg(v any) string {
	b.args = append(b.args, v)
	return fmt.Sprintf("$%d", len(b.args))
}

// selectBatch is the CTE "batch": the oldest eligible rows after the
// cursor, locked, skipping rows another worker holds.
func (b *batchSQL) selectBatch() string {
	var where []string
	where = append(where, fmt.Sprintf("%s < %s::timestamptz", b.ts, b.arg(b.in.Cutoff)))
	if !b.in.After.IsZero() {
		where = append(where, fmt.Sprintf("%s >= %s::timestamptz", b.ts, b.arg(b.in.After)))
	}
	order := b.ts
	if b.s.key != "" {
		order += ", " + catalog.Quote(b.s.key)
	}
	if c := b.in.Cursor; c != nil {
		if b.s.key != "" && c.ID != "" {
			where = append(where, fmt.Sprintf("(%s, %s) > (%s::timestamptz, CAST(%s::text AS %s))",
				b.ts, catalog.Quote(b.s.key), b.arg(c.TS), b.arg(c.ID), b.s.keyType))
		} else {
			where = append(where, fmt.Sprintf("%s >= %s::timestamptz", b.ts, b.arg(c.TS)))
		}
	}
	cond := strings.Join(where, " AND ") + b.where("") + b.holdsSQL()
	cols := "ctid"
	if !b.s.live.RowAddressUnique() {
		cols = "tableoid, ctid, " + b.ts
	}
	orderBy := "\n    ORDER BY " + order
	if b.anyOrder {
		orderBy = ""
	}
	return fmt.Sprintf(`batch AS (
    SELECT %s FROM %s
    WHERE %s%s
    LIMIT %s
    FOR UPDATE SKIP LOCKED
)`, cols, catalog.QuoteName(b.s.live.Name), cond, orderBy, b.arg(b.in.Limit))
}

// where is the entry's structured filter, its values added as parameters.
func (b *batchSQL) where(alias string) string {
	f := newFilter(b.s.table, b.s.live)
	sql := f.sql(alias, len(b.args)+1)
	b.args = append(b.args, f.args...)
	return sql
}

// deleteBatch deletes exactly the rows of "batch" (aliased l); the caller
// adds RETURNING.
func (b *batchSQL) deleteBatch() string {
	sql := fmt.Sprintf(`DELETE FROM %s l
    WHERE l.ctid = ANY (ARRAY(SELECT ctid FROM batch))`, catalog.QuoteName(b.s.live.Name))
	if !b.s.live.RowAddressUnique() {
		sql += fmt.Sprintf(`
      AND (l.tableoid, l.ctid) IN (SELECT tableoid, ctid FROM batch)
      AND l.%[1]s >= (SELECT min(%[1]s) FROM batch) AND l.%[1]s <= (SELECT max(%[1]s) FROM batch)`, b.ts)
	}
	return sql
}

// tsExpr is the time column as timestamptz (a timestamp is read as UTC).
func (b *batchSQL) tsExpr(alias string) string { return alias + b.ts + "::timestamptz" }

// keyExpr is the order key column (NULL when the table has none).
func (b *batchSQL) keyExpr(alias string) string {
	if b.s.key == "" {
		return "NULL::text"
	}
	return alias + catalog.Quote(b.s.key)
}

// recordTotals ends the statement: the CTE "totals" over "moved" (which
// returns archiver_row_bytes, archiver_ts and archiver_key) and the UPDATE
// that writes them into the batch's ledger row and returns inserted,
// merged, expected, deleted, bytes, min_ts, max_ts, last_key.
func (b *batchSQL) recordTotals(inserted, merged, expected string) string {
	batch := b.arg(b.in.BatchID)
	return fmt.Sprintf(`, totals AS (
    SELECT %s AS inserted, %s AS merged, %s AS expected,
           count(*) AS deleted,
           COALESCE(sum(archiver_row_bytes), 0)::bigint AS bytes,
           min(archiver_ts) AS min_ts,
           max(archiver_ts) AS max_ts,
           (SELECT archiver_key::text FROM moved ORDER BY archiver_ts DESC, archiver_key DESC LIMIT 1) AS last_key
    FROM moved
)
UPDATE archive_batches ab
SET rows_moved = t.inserted, rows_merged = t.merged, rows_deleted = t.deleted, bytes = t.bytes,
    min_ts = t.min_ts, max_ts = t.max_ts, last_ts = t.max_ts, last_key = t.last_key, committed_at = now()
FROM totals t
WHERE ab.batch_id = %s
RETURNING t.inserted, t.merged, t.expected, t.deleted, t.bytes, t.min_ts, t.max_ts, t.last_key`, inserted, merged, expected, batch)
}

// run executes a statement that ends with recordTotals and reads what it
// returns. More is true when the batch was full: rows may remain.
func (b *batchSQL) run(ctx context.Context, tx pgx.Tx, sql string) (moved, error) {
	var m moved
	var lastKey *string
	err := tx.QueryRow(ctx, sql, b.args...).Scan(&m.inserted, &m.merged, &m.expected, &m.deleted, &m.bytes, &m.minTS, &m.maxTS, &lastKey)
	if errors.Is(err, pgx.ErrNoRows) {
		return m, fmt.Errorf("ledger row of batch vanished inside its transaction")
	}
	if err != nil {
		return m, err
	}
	// A short batch means none is left that this worker could lock; rows
	// locked by another worker are that worker's to move.
	m.more = m.deleted >= int64(b.in.Limit)
	m.last = lastOf(m.maxTS, lastKey)
	return m, nil
}
