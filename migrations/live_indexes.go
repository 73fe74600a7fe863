package migrations

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// liveIndex is an index the archiver needs on a live table: it walks each
// live table in (time, id) order below a cut-off (keyset cursor), so the
// index must lead with exactly those two columns, ascending.
type liveIndex struct {
	table, timeCol, idCol string
}

// liveIndexes are built by EnsureLiveIndexes, not by a SQL migration:
// a plain CREATE INDEX in a migration's transaction would stop the
// application's writes for as long as the build takes.
var liveIndexes = []liveIndex{
	{"scenario_logs", "received_at", "id"},
	{"scenario_metrics", "timestamp", "id"},
	{"reports", "created_at", "id"},
}

// liveIndexesLock serialises concurrent EnsureLiveIndexes calls (a session
// advisory lock; tern's own lock is released before they run).
const liveIndexesLock = 7243011

// EnsureLiveIndexes gives every live table a valid btree index leading with
// (time, id) ascending and returns the names of the indexes it created
// (none when each table already has one, whatever its name).
//
// conn must not be in a transaction: indexes on tables that hold data are
// built with CREATE INDEX CONCURRENTLY, which takes no lock that stops
// INSERT, UPDATE or DELETE (it waits instead for the transactions already
// writing to the table to finish). A table that does not exist is skipped.
// An invalid index under the archiver's own name (<table>_<time>_id_idx),
// left by an interrupted concurrent build, is dropped concurrently and built
// again. A partitioned table gets the index on each partition concurrently,
// then an index on the parent made ON ONLY with the partitions' indexes
// attached, so that it is valid and future partitions get it. An inheritance
// parent and each of its children get one each (indexes are not inherited).
func EnsureLiveIndexes(ctx context.Context, conn *pgx.Conn) ([]string, error) {
	if err := lockLiveIndexes(ctx, conn); err != nil {
		return nil, err
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, liveIndexesLock) //nolint:errcheck

	var created []string
	for _, spec := range liveIndexes {
		var r rel
		err := conn.QueryRow(ctx, `
			SELECT c.oid, n.nspname, c.relname, c.relkind::text
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE c.oid = to_regclass($1)`, spec.table).Scan(&r.oid, &r.schema, &r.name, &r.kind)
		if errors.Is(err, pgx.ErrNoRows) {
			continue // no such table: nothing to index
		}
		if err != nil {
			return created, fmt.Errorf("live index on %s: read catalogue: %w", spec.table, err)
		}
		b := builder{conn: conn, spec: spec, seen: map[uint32]bool{}}
		err = b.ensure(ctx, r)
		created = append(created, b.created...)
		if err != nil {
			return created, fmt.Errorf("live index on %s (%s, %s): %w", spec.table, spec.timeCol, spec.idCol, err)
		}
	}
	return created, nil
}

// lockLiveIndexes takes the advisory lock by polling: a session blocked in
// pg_advisory_lock holds a snapshot, and a concurrent index build waits for
// every snapshot older than its own, which would deadlock the two callers.
func lockLiveIndexes(ctx context.Context, conn *pgx.Conn) error {
	for {
		var ok bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, liveIndexesLock).Scan(&ok); err != nil {
			return fmt.Errorf("live indexes: lock: %w", err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("live indexes: wait for another migrate to finish: %w", ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

type rel struct {
	oid          uint32
	schema, name string
	kind         string // pg_class.relkind
}

func (r rel) ident() string { return pgx.Identifier{r.schema, r.name}.Sanitize() }

// index is an index on a relation whose shape serves the keyset cursor.
type index struct {
	oid        uint32
	name       string // pg_class.relname
	qualified  string // schema-qualified, quoted
	valid      bool
	attachedTo uint32 // the partitioned index it is a partition of, or 0
}

type builder struct {
	conn    *pgx.Conn
	spec    liveIndex
	seen    map[uint32]bool
	created []string
}

func (b *builder) ensure(ctx context.Context, r rel) error {
	if b.seen[r.oid] {
		return nil // a child of two inheritance parents
	}
	b.seen[r.oid] = true
	switch r.kind {
	case "r": // plain table, maybe an inheritance parent
		if err := b.ensurePlain(ctx, r); err != nil {
			return err
		}
		children, err := b.children(ctx, r)
		if err != nil {
			return err
		}
		for _, c := range children {
			if err := b.ensure(ctx, c); err != nil {
				return err
			}
		}
		return nil
	case "p":
		_, err := b.ensurePartitioned(ctx, r)
		return err
	default:
		// Views, foreign tables and the like cannot carry an index of ours.
		return nil
	}
}

// ensurePlain gives a table that holds rows an equivalent valid index,
// built concurrently when it has none.
func (b *builder) ensurePlain(ctx context.Context, r rel) error {
	idx, err := b.equivalent(ctx, r)
	if err != nil {
		return err
	}
	for _, i := range idx {
		if i.valid {
			return nil // reuse it, whatever its name
		}
	}
	name := b.indexName(r)
	taken, err := b.nameTaken(ctx, r, name, false)
	if err != nil {
		return err
	}
	if taken != "" {
		// Our own leftover of an interrupted concurrent build.
		if _, err := b.conn.Exec(ctx, `DROP INDEX CONCURRENTLY IF EXISTS `+taken); err != nil {
			return fmt.Errorf("drop invalid index %s: %w", taken, err)
		}
	}
	sql := fmt.Sprintf(`CREATE INDEX CONCURRENTLY IF NOT EXISTS %s ON %s (%s, %s)`,
		pgx.Identifier{name}.Sanitize(), r.ident(),
		pgx.Identifier{b.spec.timeCol}.Sanitize(), pgx.Identifier{b.spec.idCol}.Sanitize())
	if _, err := b.conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("build index %s on %s: %w (an interrupted build leaves an invalid index that the next migrate drops and builds again)", name, r.ident(), err)
	}
	return b.checkBuilt(ctx, r, name)
}

// ensurePartitioned gives every partition an equivalent valid index
// (recursing into sub-partitioned partitions), then the parent an index
// made ON ONLY with the partitions' indexes attached. It returns the
// parent's index, or nil when the parent cannot have a valid one (a foreign
// partition cannot be indexed).
func (b *builder) ensurePartitioned(ctx context.Context, r rel) (*index, error) {
	parts, err := b.children(ctx, r)
	if err != nil {
		return nil, err
	}
	indexable := true
	for _, p := range parts {
		switch p.kind {
		case "r":
			if err := b.ensurePlain(ctx, p); err != nil {
				return nil, err
			}
		case "p":
			sub, err := b.ensurePartitioned(ctx, p)
			if err != nil {
				return nil, err
			}
			if sub == nil {
				indexable = false
			}
		default:
			// A foreign partition has no index: the parent's index would
			// never become valid. The other partitions keep theirs, which
			// is what the archiver's scans use.
			indexable = false
		}
	}
	if !indexable {
		return nil, nil
	}

	idx, err := b.equivalent(ctx, r)
	if err != nil {
		return nil, err
	}
	name := b.indexName(r)
	var parent *index
	// A valid one first; else complete one that has partitions still to
	// attach, ours first.
	for i := range idx {
		if idx[i].valid {
			return &idx[i], nil
		}
		if parent == nil || idx[i].name == name {
			parent = &idx[i]
		}
	}
	if parent == nil {
		if _, err := b.nameTaken(ctx, r, name, true); err != nil {
			return nil, err
		}
		sql := fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %s ON ONLY %s (%s, %s)`,
			pgx.Identifier{name}.Sanitize(), r.ident(),
			pgx.Identifier{b.spec.timeCol}.Sanitize(), pgx.Identifier{b.spec.idCol}.Sanitize())
		if err := b.shortDDL(ctx, sql); err != nil {
			return nil, fmt.Errorf("create index %s on only %s: %w", name, r.ident(), err)
		}
		if idx, err = b.equivalent(ctx, r); err != nil {
			return nil, err
		}
		for i := range idx {
			if idx[i].name == name {
				parent = &idx[i]
			}
		}
		if parent == nil {
			return nil, fmt.Errorf("index %s on %s was not created", name, r.ident())
		}
		b.created = append(b.created, parent.qualified)
	}

	for _, p := range parts {
		pidx, err := b.equivalent(ctx, p)
		if err != nil {
			return nil, err
		}
		var attach *index
		attached := false
		for i := range pidx {
			if pidx[i].attachedTo == parent.oid {
				attached = true
				break
			}
			if attach == nil && pidx[i].valid && pidx[i].attachedTo == 0 {
				attach = &pidx[i]
			}
		}
		if attached {
			continue
		}
		if attach == nil {
			return nil, fmt.Errorf("partition %s has no valid index on (%s, %s) free to attach to %s", p.ident(), b.spec.timeCol, b.spec.idCol, parent.qualified)
		}
		sql := fmt.Sprintf(`ALTER INDEX %s ATTACH PARTITION %s`, parent.qualified, attach.qualified)
		if err := b.shortDDL(ctx, sql); err != nil {
			return nil, fmt.Errorf("attach index %s to %s: %w", attach.qualified, parent.qualified, err)
		}
	}

	var valid bool
	if err := b.conn.QueryRow(ctx, `SELECT indisvalid FROM pg_index WHERE indexrelid = $1`, parent.oid).Scan(&valid); err != nil {
		return nil, fmt.Errorf("read index %s: %w", parent.qualified, err)
	}
	if !valid {
		return nil, fmt.Errorf("index %s on %s is still invalid after attaching every partition's index", parent.qualified, r.ident())
	}
	parent.valid = true
	return parent, nil
}

// shortDDL runs a statement that takes a lock stopping writes for an
// instant (no data is read). lock_timeout keeps it from queueing the
// application's writes behind a long transaction: it gives up and tries
// again a little later instead.
func (b *builder) shortDDL(ctx context.Context, sql string) error {
	const attempts = 30
	var err error
	for i := 0; i < attempts; i++ {
		err = pgx.BeginFunc(ctx, b.conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '2s'`); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, sql)
			return err
		})
		var pgErr *pgconn.PgError
		if err == nil || !errors.As(err, &pgErr) || pgErr.Code != "55P03" {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return fmt.Errorf("%w (a long transaction holds the table: run migrate again later)", err)
}

// children are the direct partitions or inheritance children of r.
func (b *builder) children(ctx context.Context, r rel) ([]rel, error) {
	rows, err := b.conn.Query(ctx, `
		SELECT c.oid, n.nspname, c.relname, c.relkind::text
		FROM pg_inherits i
		JOIN pg_class c ON c.oid = i.inhrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE i.inhparent = $1
		ORDER BY n.nspname, c.relname`, r.oid)
	if err != nil {
		return nil, fmt.Errorf("read children of %s: %w", r.ident(), err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (rel, error) {
		var c rel
		err := row.Scan(&c.oid, &c.schema, &c.name, &c.kind)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("read children of %s: %w", r.ident(), err)
	}
	return out, nil
}

// equivalent lists r's indexes that serve the keyset cursor: btree, not
// partial, no expressions, leading key columns exactly (time, id), each
// ascending with nulls last, in its type's default operator class and the
// column's collation. Valid ones first. An index on the time column alone
// is not equivalent: the cursor orders by (time, id).
func (b *builder) equivalent(ctx context.Context, r rel) ([]index, error) {
	rows, err := b.conn.Query(ctx, `
		SELECT i.indexrelid, ic.relname,
		       quote_ident(n.nspname) || '.' || quote_ident(ic.relname),
		       i.indisvalid,
		       COALESCE((SELECT h.inhparent FROM pg_inherits h WHERE h.inhrelid = i.indexrelid LIMIT 1), 0)
		FROM pg_index i
		JOIN pg_class ic ON ic.oid = i.indexrelid
		JOIN pg_namespace n ON n.oid = ic.relnamespace
		JOIN pg_am am ON am.oid = ic.relam
		JOIN pg_attribute ta ON ta.attrelid = i.indrelid AND ta.attname = $2 AND NOT ta.attisdropped
		JOIN pg_attribute ia ON ia.attrelid = i.indrelid AND ia.attname = $3 AND NOT ia.attisdropped
		JOIN pg_opclass tc ON tc.oid = i.indclass[0]
		JOIN pg_opclass kc ON kc.oid = i.indclass[1]
		WHERE i.indrelid = $1
		  AND am.amname = 'btree'
		  AND i.indislive
		  AND i.indpred IS NULL
		  AND i.indexprs IS NULL
		  AND i.indnkeyatts >= 2
		  AND i.indkey[0] = ta.attnum AND i.indkey[1] = ia.attnum
		  AND i.indoption[0] = 0 AND i.indoption[1] = 0
		  AND tc.opcdefault AND kc.opcdefault
		  AND i.indcollation[0] = ta.attcollation AND i.indcollation[1] = ia.attcollation
		ORDER BY i.indisvalid DESC, ic.relname`, r.oid, b.spec.timeCol, b.spec.idCol)
	if err != nil {
		return nil, fmt.Errorf("read indexes of %s: %w", r.ident(), err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (index, error) {
		var i index
		err := row.Scan(&i.oid, &i.name, &i.qualified, &i.valid, &i.attachedTo)
		return i, err
	})
	if err != nil {
		return nil, fmt.Errorf("read indexes of %s: %w", r.ident(), err)
	}
	return out, nil
}

// nameTaken checks that name is free in r's schema. It returns the quoted
// name of an invalid index of r under that name (our leftover, to drop), or
// "" when the name is free; anything else under the name is an error that
// names it, as the build would otherwise be skipped silently.
func (b *builder) nameTaken(ctx context.Context, r rel, name string, partitioned bool) (string, error) {
	var (
		kind    string
		onTable uint32
		valid   bool
	)
	err := b.conn.QueryRow(ctx, `
		SELECT c.relkind::text, COALESCE(i.indrelid, 0), COALESCE(i.indisvalid, false)
		FROM pg_class c LEFT JOIN pg_index i ON i.indexrelid = c.oid
		WHERE c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = $1) AND c.relname = $2`,
		r.oid, name).Scan(&kind, &onTable, &valid)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read catalogue for %s: %w", name, err)
	}
	q := pgx.Identifier{r.schema, name}.Sanitize()
	if !partitioned && kind == "i" && onTable == r.oid && !valid {
		return q, nil
	}
	return "", fmt.Errorf("%s already exists and is not a btree index on %s (%s, %s) usable by the archiver: rename or drop it, then run migrate again",
		q, r.ident(), b.spec.timeCol, b.spec.idCol)
}

// checkBuilt confirms that the index a build named is there and valid (IF
// NOT EXISTS would have skipped it silently otherwise).
func (b *builder) checkBuilt(ctx context.Context, r rel, name string) error {
	idx, err := b.equivalent(ctx, r)
	if err != nil {
		return err
	}
	for _, i := range idx {
		if i.name == name && i.valid {
			b.created = append(b.created, i.qualified)
			return nil
		}
	}
	return fmt.Errorf("index %s on %s is missing or invalid after its build", name, r.ident())
}

// indexName is <table>_<time>_<id>_idx, the names migration 001 used,
// shortened with a hash to PostgreSQL's 63 bytes when a partition's name is
// long (PostgreSQL would truncate it silently, and the name checked would
// not be the name made).
func (b *builder) indexName(r rel) string {
	name := r.name + "_" + b.spec.timeCol + "_" + b.spec.idCol + "_idx"
	const maxLen = 63
	if len(name) <= maxLen {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	suffix := "_" + hex.EncodeToString(sum[:4]) + "_idx"
	head := name[:maxLen-len(suffix)]
	for !utf8.ValidString(head) {
		head = head[:len(head)-1]
	}
	return head + suffix
}
