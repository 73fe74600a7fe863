package activities

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/policy"
)

// Before a partition is detached, the catalogue must show that it can be
// attached to the archive: PostgreSQL attaches a table only with the same
// columns (names, types with their modifiers, collations), NOT NULL where
// the parent has it, every CHECK constraint of the parent, and a free name
// to take. A DETACH is cheap to make and, once made, leaves the rows in
// neither table until the ATTACH: whatever could refuse the ATTACH is
// found here, and the partition's rows move by batches instead.

// attr is one column as ATTACH PARTITION compares it.
type attr struct {
	name, typ    string
	typeOID      int64
	typmod       int32
	collation    int64
	collName     string
	typCollation int64 // the type's default collation
	notNull      bool
	generated    string
	identity     string
}

const attrsSQL = `
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.atttypid::int8, a.atttypmod, a.attcollation::int8,
       COALESCE(co.collname, ''), t.typcollation::int8, a.attnotnull, a.attgenerated::text, a.attidentity::text
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_collation co ON co.oid = a.attcollation
WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum`

func readAttrs(ctx context.Context, db catalog.Querier, oid uint32) ([]attr, error) {
	rows, err := db.Query(ctx, attrsSQL, int64(oid))
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (attr, error) {
		var a attr
		err := r.Scan(&a.name, &a.typ, &a.typeOID, &a.typmod, &a.collation, &a.collName, &a.typCollation, &a.notNull, &a.generated, &a.identity)
		return a, err
	})
}

func attrNamed(attrs []attr, name string) (attr, bool) {
	for _, a := range attrs {
		if a.name == name {
			return a, true
		}
	}
	return attr{}, false
}

// plannedAttrs are the columns of an archive table the archiver will make
// from the live table's (archiveColumnsFor): the same types, each type's
// default collation, NOT NULL as the live column (and on the time column).
func plannedAttrs(t policy.Table, live []attr) []attr {
	var out []attr
	for _, l := range live {
		out = append(out, attr{name: l.name, typ: l.typ, typeOID: l.typeOID, typmod: l.typmod,
			collation: l.typCollation, collName: "default", typCollation: l.typCollation, notNull: l.notNull || l.name == t.TimeColumn})
	}
	return out
}

// ownColumnTypes are the columns the exchange adds to a detached
// partition, and the types it adds them with.
var ownColumnTypes = map[string]string{"archived_at": "timestamp with time zone", "archive_batch_id": "uuid"}

// columnsBlocker says why the table oid (the live table, or one of its
// partitions: partition) could not be attached to t's archive as far as
// its columns and the archive's constraints go; "" when nothing stands in
// the way. Identity is compared on partitions only: a partition of a table
// with an identity column has none of its own before PostgreSQL 17.
func columnsBlocker(ctx context.Context, db catalog.Querier, t policy.Table, s shape, oid uint32, partition bool) (string, error) {
	live, err := readAttrs(ctx, db, oid)
	if err != nil {
		return "", fmt.Errorf("read the columns of %s: %w", t.Live, err)
	}
	var arch []attr
	if s.planned {
		arch = plannedAttrs(t, live)
	} else if arch, err = readAttrs(ctx, db, s.archive.OID); err != nil {
		return "", fmt.Errorf("read the columns of %s: %w", t.Archive, err)
	}
	const identical = "a partition is attached only with identical columns"
	for _, a := range arch {
		if typ, own := ownColumnTypes[a.name]; own {
			if s.planned {
				continue
			}
			if a.typ != typ || a.generated != "" || a.identity != "" {
				return fmt.Sprintf("%s.%s is %s, not the plain %s the exchange adds", t.Archive, a.name, a.typ, typ), nil
			}
			if l, ok := attrNamed(live, a.name); ok && (l.typ != typ || l.collation != a.collation) {
				return fmt.Sprintf("%s has its own column %q", t.Live, a.name), nil
			}
			continue
		}
		l, ok := attrNamed(live, a.name)
		switch {
		case !ok:
			return fmt.Sprintf("%s has column %q, which %s lacks: %s", t.Archive, a.name, t.Live, identical), nil
		case l.typeOID != a.typeOID || l.typmod != a.typmod:
			return fmt.Sprintf("column %q is %s in %s but %s in %s: %s", a.name, l.typ, t.Live, a.typ, t.Archive, identical), nil
		case l.collation != a.collation:
			return fmt.Sprintf("column %q has collation %q in %s but %q in %s: %s", a.name, l.collName, t.Live, a.collName, t.Archive, identical), nil
		case a.notNull && !l.notNull:
			return fmt.Sprintf("%s.%s is NOT NULL but %s.%s is not: the archive accepts no partition without it", t.Archive, a.name, t.Live, a.name), nil
		case l.generated != a.generated:
			return fmt.Sprintf("column %q is generated in one of %s and %s but not in the other: %s", a.name, t.Live, t.Archive, identical), nil
		case partition && l.identity != a.identity:
			return fmt.Sprintf("column %q is an identity column in one of %s and %s but not in the other: %s", a.name, t.Live, t.Archive, identical), nil
		}
	}
	for _, l := range live {
		if _, ok := attrNamed(arch, l.name); !ok {
			return fmt.Sprintf("%s has column %q, which %s lacks: %s", t.Live, l.name, t.Archive, identical), nil
		}
	}
	if s.planned {
		return "", nil
	}
	// A partition must carry every CHECK of the table it is attached to,
	// by name; an archive's foreign key would be checked row by row.
	var check, fk string
	if err := db.QueryRow(ctx, `
		SELECT COALESCE((SELECT conname FROM pg_constraint WHERE conrelid = $1::oid AND contype = 'c' ORDER BY conname LIMIT 1), ''),
		       COALESCE((SELECT conname FROM pg_constraint WHERE conrelid = $1::oid AND contype = 'f' ORDER BY conname LIMIT 1), '')`,
		int64(s.archive.OID)).Scan(&check, &fk); err != nil {
		return "", fmt.Errorf("read the constraints of %s: %w", t.Archive, err)
	}
	switch {
	case check != "":
		return fmt.Sprintf("%s has CHECK constraint %s, which a partition must carry to be attached", t.Archive, check), nil
	case fk != "":
		return fmt.Sprintf("%s has foreign key %s: an attached partition's rows would be checked against it", t.Archive, fk), nil
	}
	return "", nil
}

// indexKeysSQL describes each index of a table by what makes two indexes
// equivalent (ATTACH PARTITION links an archive index to an equivalent
// one of the partition): its method, uniqueness, columns and expressions
// by name (never by column number: a dropped column shifts them),
// operator classes, collations, options and predicate. It also returns
// the index's definition.
const indexKeysSQL = `
SELECT i.indexrelid::int8, i.indisunique,
       concat_ws(' | ', am.amname, i.indisunique::text, i.indnkeyatts::text,
                 (SELECT string_agg(pg_get_indexdef(i.indexrelid, k, false), ', ' ORDER BY k) FROM generate_series(1, i.indnatts) k),
                 i.indclass::text, i.indcollation::text, i.indoption::text,
                 COALESCE(to_jsonb(i) ->> 'indnullsnotdistinct', ''), COALESCE(pg_get_expr(i.indpred, i.indrelid), '')),
       pg_get_indexdef(i.indexrelid)
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_am am ON am.oid = c.relam
WHERE i.indrelid = $1::oid
ORDER BY i.indexrelid`

type indexKey struct {
	oid    int64
	unique bool
	key    string
	def    string
}

func indexKeys(ctx context.Context, db catalog.Querier, oid uint32) ([]indexKey, error) {
	rows, err := db.Query(ctx, indexKeysSQL, int64(oid))
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (indexKey, error) {
		var k indexKey
		return k, r.Scan(&k.oid, &k.unique, &k.key, &k.def)
	})
}

func hasIndexKey(keys []indexKey, key string) bool {
	for _, k := range keys {
		if k.key == key {
			return true
		}
	}
	return false
}

// archiveSchema is the schema the archive's partitions are in (for an
// archive not made yet, the one it will be made in).
func archiveSchema(t policy.Table, s shape) string {
	if !s.planned {
		return s.archive.Schema
	}
	if sch, _ := policy.SplitName(t.Archive); sch != "" {
		return sch
	}
	return s.live.Schema
}

// partitionBlocker says why the live partition oid, for the period
// starting at lower, could not take its place in the archive: its name in
// the archive is held by something other than an empty archive partition
// (which the exchange removes first), moving it to the archive's schema
// would collide, or an archive unique index has no equivalent on it (the
// ATTACH would build it, and fail on duplicates). "" when nothing does.
func partitionBlocker(ctx context.Context, db catalog.Querier, t policy.Table, s shape, oid uint32, lower time.Time) (string, error) {
	target := PartitionName(t, lower)
	schema := archiveSchema(t, s)
	var holder *int64
	var kind string
	var attached bool
	err := db.QueryRow(ctx, `
		SELECT c.oid::int8, c.relkind::text, EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid AND i.inhparent = $3::oid)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relname = $1 AND n.nspname = $2`, target, schema, int64(s.archive.OID)).Scan(&holder, &kind, &attached)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("look for %s.%s: %w", schema, target, err)
	}
	if holder != nil && uint32(*holder) != oid {
		if !attached || kind != "r" {
			return fmt.Sprintf("%s.%s already exists and is no partition of %s (an orphan, or made by hand): rename or drop it", schema, target, t.Archive), nil
		}
		var empty bool
		if err := db.QueryRow(ctx, fmt.Sprintf(`SELECT NOT EXISTS (SELECT 1 FROM %s)`, catalog.Quote(schema)+"."+catalog.Quote(target))).Scan(&empty); err != nil {
			return "", fmt.Errorf("look into %s.%s: %w", schema, target, err)
		}
		if !empty {
			return fmt.Sprintf("the archive already holds rows of %s", lower.Format("2006-01-02")), nil
		}
	}
	// A type of that name (other than a table's own row type) blocks the
	// rename too; so do names the partition and its indexes take along
	// into another schema.
	var clash string
	if err := db.QueryRow(ctx, `
		SELECT COALESCE((SELECT format('%I.%I', n.nspname, y.typname) FROM pg_type y JOIN pg_namespace n ON n.oid = y.typnamespace
		                 WHERE y.typname = $1 AND n.nspname = $2 AND y.typrelid = 0 LIMIT 1),
		                (SELECT format('%I.%I', n.nspname, x.relname) FROM pg_class p
		                 JOIN pg_namespace pn ON pn.oid = p.relnamespace
		                 JOIN pg_class x ON x.relname IN (SELECT p.relname UNION ALL SELECT ic.relname FROM pg_index pi JOIN pg_class ic ON ic.oid = pi.indexrelid WHERE pi.indrelid = p.oid)
		                 JOIN pg_namespace n ON n.oid = x.relnamespace AND n.nspname = $2
		                 WHERE p.oid = $3::oid AND pn.nspname <> $2 LIMIT 1), '')`, target, schema, int64(oid)).Scan(&clash); err != nil {
		return "", fmt.Errorf("look for names %s would clash with: %w", target, err)
	}
	if clash != "" {
		return fmt.Sprintf("%s is taken: the partition cannot be moved to %s under %s", clash, schema, target), nil
	}
	if s.planned {
		return "", nil // the archive's key will be the live key
	}
	archived, err := indexKeys(ctx, db, s.archive.OID)
	if err != nil {
		return "", fmt.Errorf("read the indexes of %s: %w", t.Archive, err)
	}
	own, err := indexKeys(ctx, db, oid)
	if err != nil {
		return "", fmt.Errorf("read the indexes of partition %d: %w", oid, err)
	}
	for _, a := range archived {
		if a.unique && !hasIndexKey(own, a.key) {
			return fmt.Sprintf("it has no index equivalent to the archive's unique index (%s): the attach would build one over rows it does not prove unique", strings.TrimSpace(a.def[strings.Index(a.def, " USING ")+1:])), nil
		}
	}
	return "", nil
}
