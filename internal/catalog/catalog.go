// Package catalog reads what the archiver must know about a table from
// PostgreSQL's catalogue instead of assuming it (docs/design.md): the table's
// kind (plain, partitioned, inheritance parent), its columns with types and
// nullability, its primary key, the foreign keys that reference it and the
// columns its inheritance children add.
package catalog

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Querier is a pool, a connection or a transaction.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Kind is how a table stores its rows.
type Kind string

const (
	// Missing: no such table.
	Missing Kind = ""
	// Plain: an ordinary table without children; a row address (ctid)
	// identifies a row.
	Plain Kind = "plain"
	// Partitioned: a declaratively partitioned table; ctid is unique only
	// within one partition.
	Partitioned Kind = "partitioned"
	// Inherited: an ordinary table with inheritance children; ctid is unique
	// only within one of them.
	Inherited Kind = "inheritance parent"
	// Other: a view, foreign table, materialized view...
	Other Kind = "other"
)

// Column is one column as the catalogue declares it.
type Column struct {
	Name    string `json:"name"`
	Type    string `json:"type"` // format_type: character varying(500)
	TypeOID uint32 `json:"oid"`
	Typmod  int32  `json:"typmod"`
	// BaseType is the type a value is compared in: Type without its
	// modifier, a domain's base type (character varying, numeric, bpchar).
	// A cast to Type would truncate or round the value first (an explicit
	// cast to varchar(10) cuts 'delivered_late' to 'delivered_').
	BaseType string `json:"basetype"`
	NotNull  bool   `json:"notnull"`
	// HasDefault: an INSERT that omits the column gets a value (a
	// default, an identity or a generated column).
	HasDefault bool `json:"hasdefault"`
	// Generated: a stored generated column; PostgreSQL computes its value
	// and refuses any other in an INSERT.
	Generated bool `json:"generated,omitempty"`
	// Identity is "always" (GENERATED ALWAYS AS IDENTITY: an INSERT gives
	// it a value only with OVERRIDING SYSTEM VALUE), "by default", or "".
	Identity string `json:"identity,omitempty"`
}

// Identity kinds.
const (
	IdentityAlways    = "always"
	IdentityByDefault = "by default"
)

// InsertColumns is what an INSERT of whole rows into t names: cols without
// t's generated columns (computed anew from the others), and the
// OVERRIDING clause an identity column GENERATED ALWAYS needs for the
// values given to be kept ("" when none is named).
func (t Table) InsertColumns(cols []string) (names []string, overriding string) {
	for _, n := range cols {
		c, ok := t.Column(n)
		switch {
		case ok && c.Generated:
			continue
		case ok && c.Identity == IdentityAlways:
			overriding = "OVERRIDING SYSTEM VALUE"
		}
		names = append(names, n)
	}
	return names, overriding
}

// Table is one relation's description.
type Table struct {
	Name       string
	OID        uint32
	Kind       Kind
	Owner      string
	Schema     string
	Columns    []Column
	PrimaryKey []string
}

// Exists reports whether the table was found.
func (t Table) Exists() bool { return t.Kind != Missing }

// Column returns the named column.
func (t Table) Column(name string) (Column, bool) {
	for _, c := range t.Columns {
		if c.Name == name {
			return c, true
		}
	}
	return Column{}, false
}

// ColumnType is the named column's type as SQL spells it ("text" when the
// column does not exist, so that a cast still parses and the statement
// fails on the missing column instead).
func (t Table) ColumnType(name string) string {
	if c, ok := t.Column(name); ok {
		return c.Type
	}
	return "text"
}

// CompareType is the type a value is compared with the named column in
// (Column.BaseType; "text" when the column does not exist, like
// ColumnType).
func (t Table) CompareType(name string) string {
	c, ok := t.Column(name)
	switch {
	case !ok:
		return "text"
	case c.BaseType == "":
		return c.Type
	}
	return c.BaseType
}

// ColumnNames lists the columns in the table's order.
func (t Table) ColumnNames() []string {
	out := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		out[i] = c.Name
	}
	return out
}

// RowAddressUnique reports whether ctid alone identifies a row of the table
// as seen through it (a plain table without children).
func (t Table) RowAddressUnique() bool { return t.Kind == Plain }

// describeSQL reads a relation, its columns and its primary key in one
// round trip (it runs in every batch's transaction).
const describeSQL = `
SELECT c.oid, c.relkind::text, pg_get_userbyid(c.relowner), n.nspname,
       EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhparent = c.oid),
       COALESCE((SELECT json_agg(json_build_object(
                    'name', a.attname, 'type', format_type(a.atttypid, a.atttypmod),
                    'oid', a.atttypid::int8, 'typmod', a.atttypmod, 'notnull', a.attnotnull,
                    'hasdefault', a.atthasdef OR a.attidentity <> '', 'generated', a.attgenerated <> '',
                    'identity', CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' ELSE '' END,
                    'basetype', (WITH RECURSIVE d(oid, typtype, base) AS (
                                     SELECT t.oid, t.typtype, t.typbasetype FROM pg_type t WHERE t.oid = a.atttypid
                                     UNION ALL
                                     SELECT t.oid, t.typtype, t.typbasetype FROM pg_type t JOIN d ON t.oid = d.base WHERE d.typtype = 'd')
                                 SELECT format_type(d.oid, -1) FROM d WHERE d.typtype <> 'd')) ORDER BY a.attnum)
                 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '[]'),
       COALESCE((SELECT json_agg(a.attname ORDER BY k.ord)
                 FROM pg_constraint p
                 CROSS JOIN LATERAL unnest(p.conkey) WITH ORDINALITY AS k(attnum, ord)
                 JOIN pg_attribute a ON a.attrelid = p.conrelid AND a.attnum = k.attnum
                 WHERE p.conrelid = c.oid AND p.contype = 'p'), '[]')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = to_regclass($1)`

// Describe reads name (resolved through the search path, as the archiver's
// SQL resolves it). A table that does not exist has Kind Missing.
func Describe(ctx context.Context, q Querier, name string) (Table, error) {
	t := Table{Name: name}
	var relkind string
	var hasChildren bool
	err := q.QueryRow(ctx, describeSQL, QuoteName(name)).Scan(&t.OID, &relkind, &t.Owner, &t.Schema, &hasChildren, &t.Columns, &t.PrimaryKey)
	if errors.Is(err, pgx.ErrNoRows) {
		return t, nil
	}
	if err != nil {
		return t, fmt.Errorf("read the catalogue entry of %s: %w", name, err)
	}
	switch {
	case relkind == "p":
		t.Kind = Partitioned
	case relkind == "r" && hasChildren:
		t.Kind = Inherited
	case relkind == "r":
		t.Kind = Plain
	default:
		t.Kind = Other
	}
	return t, nil
}

// ForeignKey is a constraint of another table (or of this one) that
// references the table.
type ForeignKey struct {
	Name     string
	Table    string // the referencing table
	OnDelete string // CASCADE, RESTRICT, NO ACTION, SET NULL, SET DEFAULT
}

// ReferencedBy lists the foreign keys that reference t or any of its
// partitions (a partition's clone of its parent's constraint is listed once).
func ReferencedBy(ctx context.Context, q Querier, t Table) ([]ForeignKey, error) {
	rows, err := q.Query(ctx, `
		WITH RECURSIVE tree AS (
		    SELECT $1::oid AS oid
		    UNION ALL
		    SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.oid
		)
		SELECT c.conname, c.conrelid::regclass::text,
		       CASE c.confdeltype WHEN 'c' THEN 'CASCADE' WHEN 'r' THEN 'RESTRICT' WHEN 'n' THEN 'SET NULL'
		                          WHEN 'd' THEN 'SET DEFAULT' ELSE 'NO ACTION' END
		FROM pg_constraint c
		WHERE c.contype = 'f' AND c.confrelid IN (SELECT oid FROM tree) AND c.conparentid = 0
		ORDER BY 2, 1`, t.OID)
	if err != nil {
		return nil, fmt.Errorf("read the foreign keys that reference %s: %w", t.Name, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ForeignKey, error) {
		var fk ForeignKey
		return fk, r.Scan(&fk.Name, &fk.Table, &fk.OnDelete)
	})
	if err != nil {
		return nil, fmt.Errorf("read the foreign keys that reference %s: %w", t.Name, err)
	}
	return out, nil
}

// ChildColumn is a column that an inheritance child (at any depth) has and
// its parent does not: rows read through the parent lose it.
type ChildColumn struct {
	Child, Column string
}

// ChildOnlyColumns lists the columns t's inheritance descendants declare
// beyond what they inherit. Partitions cannot have any.
func ChildOnlyColumns(ctx context.Context, q Querier, t Table) ([]ChildColumn, error) {
	if t.Kind != Inherited {
		return nil, nil
	}
	rows, err := q.Query(ctx, `
		WITH RECURSIVE tree AS (
		    SELECT i.inhrelid AS oid FROM pg_inherits i WHERE i.inhparent = $1::oid
		    UNION ALL
		    SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.oid
		)
		SELECT a.attrelid::regclass::text, a.attname
		FROM pg_attribute a JOIN tree ON a.attrelid = tree.oid
		WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attinhcount = 0
		ORDER BY 1, a.attnum`, t.OID)
	if err != nil {
		return nil, fmt.Errorf("read the children of %s: %w", t.Name, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ChildColumn, error) {
		var c ChildColumn
		return c, r.Scan(&c.Child, &c.Column)
	})
	if err != nil {
		return nil, fmt.Errorf("read the children of %s: %w", t.Name, err)
	}
	return out, nil
}

// Quote returns the identifier quoted for SQL.
func Quote(name string) string { return pgx.Identifier{name}.Sanitize() }

// QuoteAll quotes each name and joins them with ", ", each prefixed by
// prefix (a table alias and a dot, or "").
func QuoteAll(prefix string, names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = prefix + Quote(n)
	}
	return strings.Join(q, ", ")
}

// QuoteName quotes a table name that may be schema-qualified ("schema.table"
// as the policy spells it) for SQL, and for to_regclass.
func QuoteName(qualified string) string {
	if i := strings.IndexByte(qualified, '.'); i >= 0 {
		return pgx.Identifier{qualified[:i], qualified[i+1:]}.Sanitize()
	}
	return pgx.Identifier{qualified}.Sanitize()
}

// Sibling names a table in the same schema as qualified: the partitions of
// an archive table live beside it.
func Sibling(qualified, name string) string {
	if i := strings.IndexByte(qualified, '.'); i >= 0 {
		return qualified[:i+1] + name
	}
	return name
}
