package torture

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"pgregory.net/rapid"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/policy"
	"github.com/mockupaws/archiver/workflows"
)

// maxOps bounds a scenario's operations, so that one stays within about
// fifteen seconds on a 2-core machine: rapid's Repeat draws how many it
// repeats (around -rapid.steps), the ones past this do nothing.
const maxOps = 8

// actions are the operations a scenario repeats, with time moving
// forward; "" is the oracle's check, run after each.
func (h *harness) actions() map[string]func(*rapid.T) {
	bounded := func(op func(*rapid.T)) func(*rapid.T) {
		return func(t *rapid.T) {
			if h.op < maxOps {
				op(t)
			}
		}
	}
	return map[string]func(*rapid.T){
		"":              h.check,
		"archive":       bounded(h.archive),
		"archive again": bounded(h.archive), // runs are what moves rows: drawn twice as often
		"write":         bounded(h.writeOp),
		"restore":       bounded(h.restore),
		"verify":        bounded(h.verify),
		"backfill":      bounded(h.backfill),
	}
}

func (h *harness) entry(tb *table) policy.Table {
	e, err := policy.Find(h.pol, tb.entry)
	if err != nil {
		panic(err)
	}
	return e
}

// drawFault draws the failpoint the worker is armed with for the next
// operation ("" for none) and after how many of its steps it dies.
func (h *harness) drawFault(t *rapid.T, points ...string) (string, int) {
	if rapid.IntRange(0, 2).Draw(t, "fault?") != 0 {
		return "", 0
	}
	return rapid.SampledFrom(points).Draw(t, "failpoint"), rapid.IntRange(1, 4).Draw(t, "failpoint after")
}

// archive runs every entry as of a later instant (or the same: a rerun),
// with the application writing while batches move, and a fault.
func (h *harness) archive(t *rapid.T) {
	h.op++
	start := h.op
	asOf := h.asOf.AddDate(0, 0, rapid.IntRange(0, 150).Draw(t, "days forward"))
	// The failpoints this run can reach.
	points := []string{failpoints[0]}
	for _, tb := range h.sc.tables {
		if tb.ownedByRole && tb.where == nil && tb.ds == nil && tb.off == nil && !slices.Contains(points, failpoints[1]) {
			points = append(points, failpoints[1])
		}
		if tb.export != "" && !slices.Contains(points, failpoints[2]) {
			points = append(points, failpoints[2], corruptUpload)
		}
	}
	fault, n := h.drawFault(t, points...)
	concurrent := rapid.Bool().Draw(t, "writes while it runs")
	t.Logf("op %d: archive as of %s (fault %s %d, writes during: %v)", h.op, asOf.Format(time.DateOnly), fault, n, concurrent)
	h.cover("op=archive")
	if concurrent {
		h.cover("op=archive with writes")
	}
	var during func(context.Context)
	var writeErr error
	if concurrent {
		// The application goes on writing, from a seed drawn now.
		seed := rapid.Uint64().Draw(t, "writes seed")
		during = func(ctx context.Context) { writeErr = h.writeWhile(ctx, seed) }
	}
	names := make([]string, 0, len(h.sc.tables))
	for _, tb := range h.sc.tables {
		names = append(names, tb.entry)
	}
	if server := h.drawServerFault(t); server != nil {
		// The application stops writing meanwhile: a write whose commit a
		// restart cuts off has an outcome the model cannot know.
		during = server
	}
	during = both(during, h.drawPause(t))
	var res workflows.ArchiveResult
	out := h.execute(t, workflows.ArchiveWorkflowName, "", workflows.ArchiveInput{Tables: names, Policy: h.pol, AsOf: asOf}, &res, fault, n, during)
	h.s.stats.ops++
	if writeErr != nil {
		t.Fatalf("while the run went on: %v", writeErr)
	}
	if h.serverErr != nil {
		t.Fatalf("server fault: %v", h.serverErr)
	}
	var failed map[string]bool // tables whose failure the model expects (their retention did not run)
	if out.err != nil {
		if failed = h.expectedFailures(t, start, out.err, &res); failed == nil {
			t.Fatalf("archive run as of %s failed: %v", asOf.Format(time.RFC3339), out.err)
		}
	}
	h.asOf = asOf
	for _, m := range h.models {
		m.mu.Lock()
		m.ran, m.lastRun = true, start
		m.cutoff = asOf.Add(-time.Duration(m.t.afterDays) * 24 * time.Hour)
		if m.t.ds != nil {
			m.cutoff = m.t.ds.bucketStart(m.cutoff) // no bucket is left half aggregated
		}
		if !failed[m.t.entry] {
			m.retention = asOf.Add(-time.Duration(m.t.retentionDays) * 24 * time.Hour)
		}
		m.mu.Unlock()
	}
	for _, tr := range res.Tables {
		t.Logf("  %s: %d rows archived in %d batches, %d partitions exchanged %v", tr.Table, tr.RowsArchived, tr.Batches, tr.PartitionsExchanged, tr.ExchangeSkipped)
		if tr.RowsMerged > 0 {
			h.cover("downsample merge") // late samples merged into a bucket an earlier batch made
		}
	}
}

// writeOp is the application writing between runs.
func (h *harness) writeOp(t *rapid.T) {
	h.op++
	h.s.stats.ops++
	tb, m := h.drawTable(t)
	kind := rapid.SampledFrom(writeKinds(tb)).Draw(t, "write")
	t.Logf("op %d: application %s on %s", h.op, kind, tb.entry)
	h.cover("op=write " + kind)
	salt := rapid.Uint64().Draw(t, "salt")
	if err := h.writeOnce(tb, m, kind, salt, int(2+salt%20)); err != nil {
		t.Fatal(err)
	}
}

func (h *harness) drawTable(t *rapid.T) (*table, *model) {
	i := rapid.IntRange(0, len(h.sc.tables)-1).Draw(t, "table")
	return h.sc.tables[i], h.models[i]
}

// writeWhile writes, one statement after another, until ctx ends: what an
// application does while a run moves its rows.
func (h *harness) writeWhile(ctx context.Context, seed uint64) error {
	// No parent deletes while a run goes on: a cascade reaches the rows of
	// a partition an exchange has detached and not yet attached (they are
	// not archived yet), which the application, reading the live table,
	// cannot see; deleting them is one of the two serial outcomes (the
	// other: archived first, kept), and the model could not tell which.
	//
	// A row written (or changed) while a run goes on may be in either
	// place after it, so the oracle can say less of it: a few statements of
	// a few rows each, or the run's check of the rows the policy keeps
	// would cover almost none (200 statements once changed every row).
	for i := uint64(0); ctx.Err() == nil && i < 30; i++ {
		x := seed + i*0x9e3779b97f4a7c15
		k := int(x % uint64(len(h.sc.tables)))
		kinds := slices.DeleteFunc(writeKinds(h.sc.tables[k]), func(k string) bool { return k == "parent" })
		if err := h.writeOnce(h.sc.tables[k], h.models[k], kinds[(x>>8)%uint64(len(kinds))], x, int(1+x%5)); err != nil {
			return err
		}
	}
	return nil
}

// writeOnce is one of the application's statements: new rows (young, or
// late ones older than the cut-off), an update, a delete, or a delete of
// a parent row its foreign key follows.
func (h *harness) writeOnce(tb *table, m *model, kind string, salt uint64, n int) error {
	s := fmt.Sprintf("%s-%d-%d", h.id, h.op, salt)
	var err error
	switch kind {
	case "young":
		_, err = h.insert(tb, m, tb.rel(""), s, n, h.asOf.AddDate(0, 0, -10), int64(200*24*3600))
	case "late":
		lo := t0.AddDate(-3, 0, 0)
		if tb.kind == kindPartitioned && !tb.defaultPart {
			lo = tb.firstPartition()
		}
		_, err = h.insert(tb, m, tb.rel(""), s, n, lo, int64(h.asOf.AddDate(0, 0, -400).Sub(lo)/time.Second))
	case "update":
		err = h.update(tb, m, s, n)
	case "delete":
		err = h.deleteRows(tb, m, s, n)
	case "parent":
		if tb.fk != "" {
			err = h.deleteParent(tb, m, int(1+salt%20))
		}
	case "shared":
		err = h.shareFiles(tb, m, s, salt)
	case "rewrite":
		err = h.rewriteFile(tb, m, s, salt)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23514" && pgErr.ConstraintName == "" {
		// No live partition for the row's time (past the application's
		// partitions, or one an exchange took into the archive): the
		// application's own error; nothing was written.
		return nil
	}
	return err
}

// update changes a few live rows: a column of theirs, or (where the live
// table takes any time) their time.
func (h *harness) update(tb *table, m *model, salt string, n int) error {
	// The time moves back by 17 days (into another partition, maybe out of
	// every one: the application's own error), or a column changes.
	set := fmt.Sprintf("%[1]s = x.%[1]s - interval '17 days 3 hours'", q(tb.timeCol))
	if len(salt)%2 == 0 {
		for _, c := range tb.cols {
			if c.gen == "" {
				set = fmt.Sprintf("%s = (SELECT %s FROM (SELECT old.h) s(h))", q(c.name), c.expr)
				break
			}
		}
	}
	sql := fmt.Sprintf(`WITH old AS (
		SELECT x.tableoid AS o, x.ctid AS c, %s AS d, abs(hashtext($1 || x.ctid::text))::bigint AS h
		FROM %s x ORDER BY md5(x.ctid::text || $1) LIMIT $2 FOR UPDATE
	)
	UPDATE %s x SET %s FROM old WHERE x.tableoid = old.o AND x.ctid = old.c
	RETURNING old.d, %s`, tb.digestOf("x"), tb.rel(""), tb.rel(""), set, tb.returning("x"))
	return h.change(tb, m, sql, salt, n)
}

// change runs an UPDATE returning each row's old digest and new row.
func (h *harness) change(tb *table, m *model, sql string, args ...any) error {
	ctx := context.Background()
	err := pgx.BeginFunc(ctx, h.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, pinnedSettings); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		type pair struct {
			old string
			new rowSeen
		}
		got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (pair, error) {
			var p pair
			return p, r.Scan(&p.old, &p.new.digest, &p.new.micros, &p.new.where, &p.new.vals)
		})
		if err != nil {
			return err
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, p := range got {
			m.remove(p.old)
			m.add(p.new, h.op)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("application update of %s: %w", tb.qualified(), err)
	}
	return nil
}

func (h *harness) deleteRows(tb *table, m *model, salt string, n int) error {
	ctx := context.Background()
	sql := fmt.Sprintf(`WITH victims AS (SELECT x.tableoid AS o, x.ctid AS c FROM %s x ORDER BY md5(x.ctid::text || $1) LIMIT $2)
		DELETE FROM %s x USING victims v WHERE x.tableoid = v.o AND x.ctid = v.c RETURNING %s`, tb.rel(""), tb.rel(""), tb.digestOf("x"))
	err := pgx.BeginFunc(ctx, h.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, pinnedSettings); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, sql, salt, n)
		if err != nil {
			return err
		}
		gone, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, d := range gone {
			m.remove(d)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("application delete from %s: %w", tb.qualified(), err)
	}
	return nil
}

// deleteParent deletes a parent row the table's foreign key follows, then
// makes it again (the application re-creates its customer): CASCADE
// deletes the live rows that reference it, SET NULL clears them, RESTRICT
// refuses while a live row references it. Archived rows carry no foreign
// key: the delete must never reach them or be held back by them.
func (h *harness) deleteParent(tb *table, m *model, parent int) error {
	ctx := context.Background()
	key := tb.keyColumns()
	var refused bool
	err := pgx.BeginFunc(ctx, h.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, pinnedSettings); err != nil {
			return err
		}
		// A foreign key of an inheritance parent is its own: its children's
		// rows reference nothing.
		only := ""
		if tb.kind == kindInherited {
			only = "ONLY "
		}
		rows, err := tx.Query(ctx, fmt.Sprintf(`SELECT %s, %s::text FROM %s%s x WHERE parent_id = $1 FOR UPDATE`, tb.digestOf("x"), rowKeyText("x", key), only, tb.rel("")), parent)
		if err != nil {
			return err
		}
		type ref struct{ digest, key string }
		refs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ref, error) {
			var x ref
			return x, r.Scan(&x.digest, &x.key)
		})
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `SAVEPOINT del; DELETE FROM `+tb.rel("_parent")+` WHERE id = `+fmt.Sprint(parent))
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23503" {
			if len(refs) == 0 {
				return fmt.Errorf("deleting parent %d was refused (%s), but no live row references it: an archived row holds back the application's delete", parent, pgErr.Message)
			}
			refused = true
			_, err := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT del`)
			return err
		}
		if err != nil {
			return err
		}
		var changed []rowSeen
		if tb.fk == "SET NULL" && len(refs) > 0 {
			keys := make([]string, len(refs))
			for i, r := range refs {
				keys[i] = r.key
			}
			rows, err := tx.Query(ctx, fmt.Sprintf(`SELECT %s FROM %s x WHERE %s::text = ANY($1)`, tb.returning("x"), tb.rel(""), rowKeyText("x", key)), keys)
			if err != nil {
				return err
			}
			if changed, err = scanRows(rows); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO `+tb.rel("_parent")+` VALUES (`+fmt.Sprint(parent)+`)`); err != nil {
			return err
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, r := range refs {
			m.remove(r.digest)
		}
		for _, r := range changed {
			m.add(r, h.op)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("application delete of parent %d of %s: %w", parent, tb.qualified(), err)
	}
	_ = refused // RESTRICT with live rows referencing it: refused, as it should be
	return nil
}

func (t *table) keyColumns() []string {
	switch t.key {
	case keyNone:
		return nil
	case keyComposite:
		return []string{"tenant", "id"}
	}
	return []string{"id"}
}

// rowKeyText is a row's key as one text (its ctid without a key: only used
// within one transaction).
func rowKeyText(alias string, key []string) string {
	if len(key) == 0 {
		return alias + ".ctid"
	}
	var cols []string
	for _, k := range key {
		cols = append(cols, alias+"."+q(k))
	}
	return "row(" + strings.Join(cols, ", ") + ")"
}

func (t *table) digestOf(alias string) string {
	return "md5(row(" + t.columnList(alias) + ")::text)"
}

func (t *table) columnList(alias string) string {
	var cols []string
	for _, c := range t.columnNames() {
		cols = append(cols, alias+"."+q(c))
	}
	return strings.Join(cols, ", ")
}

// restore brings a window of one table back, as an operator would: the
// live table's missing partitions of the window are made first (an
// exchange took them into the archive).
func (h *harness) restore(t *rapid.T) {
	h.op++
	h.s.stats.ops++
	tb, m := h.drawTable(t)
	h.restoreWindow(t, tb, m)
	// An operator who brought one window back often wants the next one:
	// both stay held (each window's hold is its own).
	if rapid.IntRange(0, 2).Draw(t, "another window") == 0 {
		h.cover("op=restore another window")
		h.restoreWindow(t, tb, m)
	}
}

// restoreWindow restores a window of tb drawn now.
func (h *harness) restoreWindow(t *rapid.T, tb *table, m *model) {
	lo := t0.AddDate(-3, 0, 0)
	days := int(h.asOf.Sub(lo).Hours() / 24)
	after := lo.AddDate(0, 0, rapid.IntRange(0, days).Draw(t, "restore from"))
	if m.files != nil {
		after = h.aimRestore(t, m, after)
	}
	before := after.AddDate(0, 0, rapid.IntRange(1, 200).Draw(t, "restore days"))
	fault, n := h.drawFault(t, failpoints[3])
	t.Logf("op %d: restore %s %s .. %s (fault %s %d)", h.op, tb.entry, after.Format(time.DateOnly), before.Format(time.DateOnly), fault, n)
	h.cover("op=restore")
	if tb.kind == kindPartitioned && !tb.defaultPart && tb.ds == nil {
		h.livePartitions(t, tb, after, before)
	}
	var files *restoreFiles
	if m.files != nil {
		files = h.beforeRestore(t, m, after, before)
	}
	e := h.entry(tb)
	var res workflows.RestoreResult
	// Under the starter's workflow id: one restore of a table at a time,
	// and every restore of it the same id.
	id := workflows.RestoreWorkflowID(e.Name)
	if tb.ds != nil && tb.ds.seed {
		id = "" // the built-in entry's name is every scenario's: workflow ids are the namespace's
	}
	out := h.execute(t, workflows.RestoreWorkflowName, id, workflows.RestoreRequest{Table: e.Name, Policy: &e, After: after, Before: before}, &res, fault, n, nil)
	m.mu.Lock()
	defer m.mu.Unlock()
	if out.err != nil {
		if a, ok := appError(out.err); ok && a.Type() == activities.ErrCannotRestore && !m.ran && strings.Contains(out.err.Error(), "nothing was archived yet") {
			return // refused as it should be: no archive run made the archive table yet
		}
		if tb.ds != nil && downsampleRefused(out.err) {
			h.cover("op=restore refused")
			return // aggregates cannot be turned back into samples
		}
		if files != nil && h.restoreRefused(t, m, files, out.err) {
			return
		}
		t.Fatalf("restore of %s %s .. %s failed: %v", tb.entry, after.Format(time.RFC3339), before.Format(time.RFC3339), out.err)
	}
	if tb.ds != nil {
		t.Fatalf("restore of %s, a downsample entry, was not refused: %d rows restored", tb.entry, res.RowsFromArchive+res.RowsFromExports)
	}
	if files != nil {
		h.afterRestore(t, m, files)
	}
	if res.Plan.HoldAfter.After(after) || res.Plan.HoldBefore.Before(before) {
		t.Fatalf("restore holds %s .. %s, less than the window asked for", res.Plan.HoldAfter, res.Plan.HoldBefore)
	}
	m.held = append(m.held, window{res.Plan.HoldAfter.UTC(), res.Plan.HoldBefore.UTC()})
	t.Logf("  restored %d rows from the archive, %d from exports", res.RowsFromArchive, res.RowsFromExports)
}

// livePartitions makes the live table's monthly partitions of [after,
// before) that are missing.
func (h *harness) livePartitions(t *rapid.T, tb *table, after, before time.Time) {
	for m := monthStart(after); m.Before(before); m = m.AddDate(0, 1, 0) {
		if m.Before(tb.firstPartition()) {
			continue
		}
		name := fmt.Sprintf("%s_p%04d_%02d", tb.name, m.Year(), int(m.Month()))
		_, err := h.db.Exec(context.Background(), fmt.Sprintf(`CREATE TABLE %s.%s PARTITION OF %s FOR VALUES FROM (%s) TO (%s)`,
			q(tb.schema), q(name), tb.rel(""), tb.bound(m), tb.bound(m.AddDate(0, 1, 0))))
		var pgErr *pgconn.PgError
		if err != nil && !(errors.As(err, &pgErr) && (pgErr.Code == "42P07" || pgErr.Code == "42P17")) {
			t.Fatalf("make partition %s: %v", name, err)
		}
	}
}

// verify runs `starter verify` (deep or not): with the model holding, it
// must find nothing wrong.
func (h *harness) verify(t *rapid.T) {
	h.op++
	h.s.stats.ops++
	for _, m := range h.models {
		if !m.ran {
			return // no archive table yet
		}
	}
	deep := rapid.Bool().Draw(t, "deep")
	t.Logf("op %d: verify (deep %v)", h.op, deep)
	h.cover("op=verify")
	var rep activities.VerifyReport
	out := h.execute(t, workflows.VerifyWorkflowName, "", workflows.VerifyRequest{Policy: h.pol, Deep: deep}, &rep, "", 0, nil)
	if out.err != nil {
		t.Fatalf("verify found what the oracle did not: %v", out.err)
	}
}
