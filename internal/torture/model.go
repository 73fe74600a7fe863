package torture

import (
	"context"
	"fmt"
	"io"
	"math/big"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"pgregory.net/rapid"
)

// model is the oracle's picture of one table: every row the application
// wrote and did not delete (by content digest: a table without a key may
// hold a row twice), and what the policy says of each as of the last
// completed archive run. It is built from what the application's own
// statements returned, never from the archiver's code or tables.
type model struct {
	mu   sync.Mutex
	t    *table
	rows map[string]int // digest → copies
	meta map[string]rowMeta
	// ran: an archive run completed; lastRun is the operation it was, and
	// cutoff and retention its bounds: rows strictly older than cutoff
	// that the where conditions select leave the live table; archive
	// partitions that end at or before retention are dropped (exported
	// first when the entry exports).
	ran               bool
	lastRun           int
	cutoff, retention time.Time
	// held are windows restores brought back: archive runs leave them.
	held []window
	// filled are windows backfills archived: their rows the where
	// conditions select left the live table, whatever the cut-off, if they
	// were written before the backfill began (op) and no restore holds them.
	filled []fill
	// exports caches the digests of exported objects (immutable).
	exports map[int64][]string
	// files is an offload table's model of its files (offload.go); lax,
	// the rows the last check let be in either place (their file changed
	// while a run went on), loose the windows of restores refused midway.
	files *fileModel
	lax   map[string]bool
	loose []window
}

type rowMeta struct {
	ts      time.Time
	whereOK bool      // the entry's where conditions select the row (true without any)
	born    int       // the operation that wrote it
	vals    []*string // a downsample's groups and values, as text
}

type window struct{ after, before time.Time }

type fill struct {
	window
	op int
}

func (w window) holds(ts time.Time) bool { return !ts.Before(w.after) && ts.Before(w.before) }

func newModel(t *table) *model {
	m := &model{t: t, rows: map[string]int{}, meta: map[string]rowMeta{}, exports: map[int64][]string{}}
	if t.off != nil {
		m.files = newFileModel(t)
	}
	return m
}

// add records a row the application wrote (callers hold mu).
func (m *model) add(r rowSeen, op int) {
	m.rows[r.digest]++
	m.meta[r.digest] = rowMeta{ts: time.UnixMicro(r.micros).UTC(), whereOK: m.t.where == nil || m.t.where.holds(r.where), born: op, vals: r.vals}
}

// remove records a row the application deleted (callers hold mu).
func (m *model) remove(digest string) {
	if m.rows[digest] <= 1 {
		delete(m.rows, digest)
		return
	}
	m.rows[digest]--
}

// holds evaluates the condition as PostgreSQL would on the stored value
// (text, NULL as nil): a comparison with NULL is not true.
func (c *cond) holds(v *string) bool {
	switch c.op {
	case "is null":
		return v == nil
	case "is not null":
		return v != nil
	}
	if v == nil {
		return false
	}
	switch c.op {
	case "in":
		return slices.Contains(c.values, *v)
	case "=":
		return *v == c.values[0]
	case "<>":
		return *v != c.values[0]
	case "<=":
		return numericCmp(*v, c.values[0]) <= 0
	}
	panic("torture: condition op " + c.op)
}

// numericCmp compares numeric texts; NaN sorts above every number, as in
// PostgreSQL.
func numericCmp(a, b string) int {
	an, bn := a == "NaN", b == "NaN"
	switch {
	case an && bn:
		return 0
	case an:
		return 1
	case bn:
		return -1
	}
	x, ok1 := new(big.Rat).SetString(a)
	y, ok2 := new(big.Rat).SetString(b)
	if !ok1 || !ok2 {
		panic(fmt.Sprintf("torture: numeric %q or %q", a, b))
	}
	return x.Cmp(y)
}

// periodEnd is the end of the archive partition a row of ts goes to.
func (m *model) periodEnd(ts time.Time) time.Time {
	if m.t.partition == "day" {
		return time.Date(ts.Year(), ts.Month(), ts.Day()+1, 0, 0, 0, 0, time.UTC)
	}
	return time.Date(ts.Year(), ts.Month()+1, 1, 0, 0, 0, 0, time.UTC)
}

// judged says whether a run or a backfill that began after the row was
// written has ruled on it (if not, the row may be in either place), and
// whether the row was due then: older than the last run's cut-off, or in
// a backfilled window, and selected by the where conditions. A restore's
// hold, checked apart, keeps a due row live.
func (m *model) judged(meta rowMeta) (judged, due bool) {
	byRun := m.ran && meta.born < m.lastRun
	byFill := false
	for _, f := range m.filled {
		byFill = byFill || meta.born < f.op && f.holds(meta.ts)
	}
	return byRun || byFill, meta.whereOK && (byRun && meta.ts.Before(m.cutoff) || byFill)
}

func (m *model) isLoose(ts time.Time) bool {
	for _, w := range m.loose {
		if w.holds(ts) {
			return true
		}
	}
	return false
}

func (m *model) isHeld(ts time.Time) bool {
	for _, w := range m.held {
		if w.holds(ts) {
			return true
		}
	}
	return false
}

// place is where the database has a table's rows now, by digest.
type place struct {
	live, archive, exported, stranded map[string]int
	strandedIn                        []string
}

// check compares the database and the exported objects with the models:
// every row the application wrote and did not delete is in exactly one
// place (live, archive, or an exported object), or was dropped by
// retention from a partition past it (when the entry does not export);
// rows the policy keeps are live; no row appears that nobody wrote.
func (h *harness) check(t *rapid.T) {
	for _, m := range h.models {
		if m.t.ds != nil {
			h.checkDownsample(t, m)
			continue
		}
		p := h.observe(t, m)
		if m.files != nil {
			h.checkFiles(t, m)
		}
		m.mu.Lock()
		h.compare(t, m, p)
		h.s.stats.rowsChecked += len(m.rows)
		m.mu.Unlock()
	}
}

// observe reads where the table's rows are, with the oracle's own SQL.
func (h *harness) observe(t *rapid.T, m *model) place {
	ctx := context.Background()
	p := place{live: map[string]int{}, archive: map[string]int{}, exported: map[string]int{}, stranded: map[string]int{}}
	tb := m.t
	entry := h.entry(tb)
	archive := q(tb.schema) + "." + q(strings.TrimPrefix(entry.Archive, tb.schema+"."))
	digest := func(alias string) string {
		var cols []string
		for _, c := range tb.columnNames() {
			cols = append(cols, alias+"."+q(c))
		}
		return "md5(row(" + strings.Join(cols, ", ") + ")::text)"
	}
	err := pgx.BeginFunc(ctx, h.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, pinnedSettings); err != nil {
			return err
		}
		tally := func(into map[string]int, sql string, args ...any) error {
			rows, err := tx.Query(ctx, sql, args...)
			if err != nil {
				return err
			}
			var d string
			_, err = pgx.ForEachRow(rows, []any{&d}, func() error { into[d]++; return nil })
			return err
		}
		if err := tally(p.live, `SELECT `+digest("x")+` FROM `+tb.rel("")+` x`); err != nil {
			return fmt.Errorf("read %s: %w", tb.qualified(), err)
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, archive).Scan(&exists); err != nil {
			return err
		}
		if exists {
			if err := tally(p.archive, `SELECT `+digest("x")+` FROM `+archive+` x`); err != nil {
				return fmt.Errorf("read %s: %w", archive, err)
			}
		}
		// Tables of the live or archive table's name that belong to
		// neither: a partition an exchange or retention left detached.
		rows, err := tx.Query(ctx, `
			SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relkind = 'r' AND NOT c.relispartition
			  AND (c.relname ~ ('^' || $2 || '_p[0-9]{4}_[0-9]{2}') OR c.relname ~ ('^' || $3 || '_y[0-9]{4}m'))
			  AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)`,
			tb.schema, tb.name, strings.TrimPrefix(entry.Archive, tb.schema+"."))
		if err != nil {
			return err
		}
		if p.strandedIn, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return err
		}
		for _, rel := range p.strandedIn {
			if err := tally(p.stranded, `SELECT `+digest("x")+` FROM `+rel+` x`); err != nil {
				return fmt.Errorf("read %s: %w", rel, err)
			}
		}
		if !exists {
			return nil
		}
		list, err := droppedExports(ctx, tx, entry.Archive)
		if err != nil {
			return err
		}
		for _, e := range list {
			ds, ok := m.exports[e.id]
			if !ok {
				b, err := h.download(ctx, e)
				if err != nil {
					return err
				}
				cols, err := oracleColumns(ctx, tx, tb)
				if err != nil {
					return err
				}
				if ds, err = objectDigests(ctx, tx, b, e.format, cols); err != nil {
					return fmt.Errorf("read export %d (%s) with the oracle's reader: %w", e.id, e.key, err)
				}
				m.exports[e.id] = ds
			}
			for _, d := range ds {
				p.exported[d]++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("oracle: %v", err)
	}
	return p
}

// compare holds the places to the model (m.mu held).
func (h *harness) compare(t *rapid.T, m *model, p place) {
	tb := m.t
	var problems []string
	report := func(format string, args ...any) {
		if len(problems) < 12 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	if len(p.strandedIn) > 0 {
		report("%d rows stranded in tables left detached: %v", total(p.stranded), p.strandedIn)
	}
	seen := map[string]bool{}
	for _, src := range []map[string]int{p.live, p.archive, p.exported, p.stranded} {
		for d := range src {
			seen[d] = true
		}
	}
	for d := range seen {
		if m.rows[d] == 0 {
			report("a row nobody wrote (or changed on the way) is in %s: digest %s: %s", where(p, d), d[:12], h.rowText(tb, d))
		}
	}
	var digests []string
	for d := range m.rows {
		digests = append(digests, d)
	}
	sort.Strings(digests)
	for _, d := range digests {
		want, meta := m.rows[d], m.meta[d]
		got := p.live[d] + p.archive[d] + p.exported[d] + p.stranded[d]
		if got > want {
			report("row %s (time %s) is in more places than written: %d copies written, %d found (%s)", d[:12], meta.ts.Format(time.RFC3339), want, got, where(p, d))
			continue
		}
		gone := want - got
		if gone > 0 && !(tb.export == "" && m.ran && !m.periodEnd(meta.ts).After(m.retention) && p.live[d] == 0) {
			report("row %s (time %s, where %v, born at op %d) is lost: %d copies written, %d found (%s)", d[:12], meta.ts.Format(time.RFC3339), meta.whereOK, meta.born, want, got, where(p, d))
			continue
		}
		judged, due := m.judged(meta)
		if !judged || m.lax[d] || m.isLoose(meta.ts) {
			continue // written after the last run began, or left either way: either place
		}
		switch {
		case !due && p.live[d] != want:
			report("row %s (time %s, where %v) is one the policy keeps (cut-off %s, backfills %v), but %d of %d copies are not live (%s)",
				d[:12], meta.ts.Format(time.RFC3339), meta.whereOK, m.cutoff.Format(time.RFC3339), m.filled, want-p.live[d], want, where(p, d))
		case m.isHeld(meta.ts) && p.live[d] != want-gone:
			report("row %s (time %s) is in a window a restore holds, but not live (%s)", d[:12], meta.ts.Format(time.RFC3339), where(p, d))
		case due && !m.isHeld(meta.ts) && p.live[d] != 0:
			report("row %s (time %s) is due (cut-off %s, backfills %v) but still live", d[:12], meta.ts.Format(time.RFC3339), m.cutoff.Format(time.RFC3339), m.filled)
		}
	}
	if len(problems) > 0 {
		t.Fatalf("oracle: %s (%s): %d rows in the model, %d live, %d archived, %d in exported objects:\n  %s",
			tb.entry, tb.qualified(), len(m.rows), total(p.live), total(p.archive), total(p.exported), strings.Join(problems, "\n  "))
	}
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func where(p place, d string) string {
	return fmt.Sprintf("live %d, archive %d, exported %d, detached %d", p.live[d], p.archive[d], p.exported[d], p.stranded[d])
}

// oracleColumns are the live table's columns as objectDigests reads them
// from an exported object: their types as the catalogue spells them.
func oracleColumns(ctx context.Context, tx pgx.Tx, tb *table) ([]Column, error) {
	rows, err := tx.Query(ctx, `SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
		WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, tb.rel(""))
	if err != nil {
		return nil, err
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Column, error) {
		var c Column
		return c, r.Scan(&c.Name, &c.Type)
	})
	if err != nil {
		return nil, err
	}
	var out []Column
	for _, n := range tb.columnNames() {
		for _, c := range all {
			if c.Name == n {
				out = append(out, c)
			}
		}
	}
	return out, nil
}

// rowText is a row of the live or archive table with digest d, as text,
// for a failure's report (the rows are the scenario's own, made up).
func (h *harness) rowText(tb *table, d string) string {
	ctx := context.Background()
	archive := q(tb.schema) + "." + q(strings.TrimPrefix(h.entry(tb).Archive, tb.schema+"."))
	text := "(not found)"
	err := pgx.BeginFunc(ctx, h.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, pinnedSettings); err != nil {
			return err
		}
		for _, rel := range []string{tb.rel(""), archive} {
			err := tx.QueryRow(ctx, `SELECT row(`+tb.columnList("x")+`)::text || ' in ' || x.tableoid::regclass::text FROM `+rel+` x WHERE `+tb.digestOf("x")+` = $1 LIMIT 1`, d).Scan(&text)
			if err == nil {
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return err.Error()
	}
	return text
}

// export is an exported object whose partition was dropped: its rows live
// only there.
type export struct {
	id          int64
	key, format string
}

// droppedExports lists the exports of archive whose partitions were dropped.
func droppedExports(ctx context.Context, tx pgx.Tx, archive string) ([]export, error) {
	rows, err := tx.Query(ctx, `SELECT id, object_key, format FROM archive_exports WHERE table_name = $1 AND state = 'dropped' ORDER BY id`, archive)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (export, error) {
		var e export
		return e, r.Scan(&e.id, &e.key, &e.format)
	})
}

// download reads an export's object from S3.
func (h *harness) download(ctx context.Context, e export) ([]byte, error) {
	body, err := h.s.store.Get(ctx, e.key)
	if err != nil {
		return nil, fmt.Errorf("download export %d (%s): %w", e.id, e.key, err)
	}
	defer body.Close()
	return io.ReadAll(body)
}
