package activities

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

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
// lets PostgreSQL prune the partitions the batch does not touch. A
// downsample batch on a table with an order key deletes a key range instead
// (deleteRange).
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

// eligible is the condition on the rows a batch may take: older than the
// cut-off, in the window, after the cursor, through the entry's filter and
// outside the holds (columns unqualified).
func (b *batchSQL) eligible() string {
	var where []string
	where = append(where, fmt.Sprintf("%s < %s::timestamptz", b.ts, b.arg(b.in.Cutoff)))
	if !b.in.After.IsZero() {
		where = append(where, fmt.Sprintf("%s >= %s::timestamptz", b.ts, b.arg(b.in.After)))
	}
	if c := b.in.Cursor; c != nil {
		if b.s.key != "" && c.ID != "" {
			where = append(where, fmt.Sprintf("(%s, %s) > (%s::timestamptz, CAST(%s::text AS %s))",
				b.ts, catalog.Quote(b.s.key), b.arg(c.TS), b.arg(c.ID), b.s.keyType))
		} else {
			where = append(where, fmt.Sprintf("%s >= %s::timestamptz", b.ts, b.arg(c.TS)))
		}
	}
	return strings.Join(where, " AND ") + b.where("") + b.holdsSQL()
}

// order is the batch order: time, then key.
func (b *batchSQL) order() string {
	if b.s.key == "" {
		return b.ts
	}
	return b.ts + ", " + catalog.Quote(b.s.key)
}

// selectBatch is the CTE "batch": the oldest eligible rows after the
// cursor, locked, skipping rows another worker holds.
func (b *batchSQL) selectBatch() string {
	cond, order := b.eligible(), b.order()
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

// rangeLockWait is how long a downsample range waits for a row lock an
// application transaction holds before its batch takes the locked path,
// which skips the rows others hold.
const rangeLockWait = time.Second

// takeSamples runs a downsample batch's statement, which build makes
// around the start of the CTE "moved": a DELETE of the batch's rows
// (aliased l) that build ends with RETURNING. With an order key, the batch
// is a key range deleted without row locks (deleteRange); without one, or
// when the range waits on an application's row lock longer than
// rangeLockWait, the batch locks its rows, skipping those held, and deletes
// them by address, like a move.
func takeSamples(ctx context.Context, tx pgx.Tx, s shape, in MoveBatchInput, build func(b *batchSQL, moved string) string) (moved, error) {
	if s.key != "" {
		m, err := takeRange(ctx, tx, s, in, build)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "55P03" {
			return m, err
		}
		// The savepoint rolled back to is before the range and its
		// lock_timeout.
		if _, err := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT archiver_range`); err != nil {
			return moved{}, err
		}
	}
	b := newBatchSQL(s, in)
	return b.run(ctx, tx, build(b, b.selectBatch()+",\nmoved AS (\n    "+b.deleteBatch()))
}

// takeRange runs the key-range batch in a savepoint, under a lock_timeout.
func takeRange(ctx context.Context, tx pgx.Tx, s shape, in MoveBatchInput, build func(b *batchSQL, moved string) string) (moved, error) {
	if _, err := tx.Exec(ctx, fmt.Sprintf(`SAVEPOINT archiver_range; SET LOCAL lock_timeout = %d`, rangeLockWait.Milliseconds())); err != nil {
		return moved{}, err
	}
	b := newBatchSQL(s, in)
	del, err := b.deleteRange(ctx, tx)
	if err != nil {
		return moved{}, err
	}
	m, err := b.run(ctx, tx, build(b, "moved AS (\n    "+del))
	if err != nil {
		return m, err
	}
	_, err = tx.Exec(ctx, `RELEASE SAVEPOINT archiver_range; SET LOCAL lock_timeout TO DEFAULT`)
	return m, err
}

// deleteRange deletes the next Limit eligible rows as one range of the
// (time, key) order: a first statement finds the range's last key, the
// DELETE takes every eligible row up to it (every one left, when fewer than
// Limit are).
//
// A downsample batch needs no row locks: its table's batches already
// serialise on an advisory lock, and locking would write every tuple once
// before the DELETE writes it again (the lock and the address round trip
// cost a third of the batch, measured). What the application does meanwhile
// is settled by the DELETE itself: a row it updated or deleted after the
// range was found is re-checked, under READ COMMITTED, against the same
// conditions (cut-off, cursor, range, filter, holds) in its latest version,
// and deleted only if that version still qualifies; RETURNING gives the
// values of the version deleted, and the batch aggregates exactly those, so
// nothing is lost or counted twice. Unlike SKIP LOCKED, a row an
// application transaction holds makes the batch wait for it, up to
// rangeLockWait (takeSamples).
func (b *batchSQL) deleteRange(ctx context.Context, tx pgx.Tx) (string, error) {
	cond := b.eligible()
	n := len(b.args)
	// Aliased: ORDER BY must name the columns, not the text of the key.
	last := fmt.Sprintf(`SELECT %s AS archiver_ts, %s::text AS archiver_key FROM %s WHERE %s ORDER BY %s OFFSET %s LIMIT 1`,
		b.tsExpr(""), catalog.Quote(b.s.key), catalog.QuoteName(b.s.live.Name), cond, b.order(), b.arg(b.in.Limit-1))
	var ts time.Time
	var key string
	err := tx.QueryRow(ctx, last, b.args...).Scan(&ts, &key)
	b.args = b.args[:n] // the offset is the first statement's only
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		// Fewer than Limit eligible rows: the batch takes them all.
	case err != nil:
		return "", fmt.Errorf("find the batch's last key: %w", err)
	default:
		cond += fmt.Sprintf(" AND (%s, %s) <= (%s::timestamptz, CAST(%s::text AS %s))",
			b.ts, catalog.Quote(b.s.key), b.arg(ts), b.arg(key), b.s.keyType)
	}
	return fmt.Sprintf(`DELETE FROM %s l
    WHERE %s`, catalog.QuoteName(b.s.live.Name), cond), nil
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
