package torture

import (
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

func q(name string) string { return pgx.Identifier{name}.Sanitize() }

// rel is a table of the scenario's schema, quoted.
func (t *table) rel(suffix string) string { return q(t.schema) + "." + q(t.name+suffix) }

// ddl is what the application's own migrations made, before the archiver
// was installed.
func (s *scenario) ddl() []string {
	out := []string{
		`CREATE SCHEMA app`,
		`CREATE TYPE torture_mood AS ENUM ('sad', 'ok', 'happy')`,
		`CREATE DOMAIN torture_code AS varchar(10)`,
	}
	for _, t := range s.tables {
		out = append(out, t.ddl()...)
	}
	return out
}

// firstPartition is where a partitioned table's monthly partitions start:
// with a DEFAULT partition, the oldest year of rows lands there.
func (t *table) firstPartition() time.Time {
	if t.defaultPart {
		return monthStart(t0.AddDate(-2, 0, 0))
	}
	return monthStart(t0.AddDate(-3, -1, 0))
}

func monthStart(ts time.Time) time.Time {
	return time.Date(ts.Year(), ts.Month(), 1, 0, 0, 0, 0, time.UTC)
}

// bound is a partition bound literal for the time column's type.
func (t *table) bound(ts time.Time) string {
	if t.timeType == "timestamp" {
		return "'" + ts.Format("2006-01-02 15:04:05") + "'"
	}
	return "'" + ts.Format("2006-01-02 15:04:05") + "+00'"
}

func (t *table) ddl() []string {
	var out []string
	if t.key == keyBigint || t.key == keyText || t.key == keyComposite {
		out = append(out, fmt.Sprintf(`CREATE SEQUENCE %s`, t.rel("_seq")))
	}
	if t.fk != "" {
		out = append(out, fmt.Sprintf(`CREATE TABLE %s (id int PRIMARY KEY)`, t.rel("_parent")),
			fmt.Sprintf(`INSERT INTO %s SELECT generate_series(1, 20)`, t.rel("_parent")))
	}
	var defs []string
	switch t.key {
	case keyBigint:
		defs = append(defs, "id bigint NOT NULL")
	case keyIdentity:
		defs = append(defs, "id bigint GENERATED ALWAYS AS IDENTITY")
	case keyUUID:
		defs = append(defs, "id uuid NOT NULL")
	case keyText:
		defs = append(defs, "id text NOT NULL")
	case keyComposite:
		defs = append(defs, "tenant integer NOT NULL", "id bigint NOT NULL")
	}
	defs = append(defs, q(t.timeCol)+" "+t.timeType+" NOT NULL")
	if t.fk != "" {
		defs = append(defs, fmt.Sprintf("parent_id integer REFERENCES %s (id) ON DELETE %s", t.rel("_parent"), t.fk))
	}
	if t.off != nil {
		defs = append(defs, q(t.off.pathCol)+" "+t.off.pathType+" NOT NULL")
	}
	for _, c := range t.cols {
		d := q(c.name) + " " + c.typ
		if c.gen != "" {
			d += " GENERATED ALWAYS AS (" + c.gen + ") STORED"
		} else if c.notNull {
			d += " NOT NULL"
		}
		defs = append(defs, d)
	}
	if pk := t.primaryKey(); pk != "" {
		defs = append(defs, "PRIMARY KEY ("+pk+")")
	}
	opts := ""
	if t.kind == kindPartitioned {
		opts = " PARTITION BY RANGE (" + q(t.timeCol) + ")"
	}
	out = append(out, fmt.Sprintf("CREATE TABLE %s (\n  %s\n)%s", t.rel(""), strings.Join(defs, ",\n  "), opts))
	switch t.kind {
	case kindPartitioned:
		end := monthStart(t0.AddDate(1, 2, 0))
		sub := monthStart(t0.AddDate(-1, -6, 0))
		for m := t.firstPartition(); m.Before(end); m = m.AddDate(0, 1, 0) {
			p := fmt.Sprintf("%s_p%04d_%02d", t.name, m.Year(), int(m.Month()))
			stmt := fmt.Sprintf(`CREATE TABLE %s.%s PARTITION OF %s FOR VALUES FROM (%s) TO (%s)`,
				q(t.schema), q(p), t.rel(""), t.bound(m), t.bound(m.AddDate(0, 1, 0)))
			if t.subPart && m.Equal(sub) {
				out = append(out, stmt+" PARTITION BY HASH ("+t.hashKey()+")")
				for r := range 2 {
					out = append(out, fmt.Sprintf(`CREATE TABLE %s.%s PARTITION OF %s.%s FOR VALUES WITH (MODULUS 2, REMAINDER %d)`,
						q(t.schema), q(fmt.Sprintf("%s_h%d", p, r)), q(t.schema), q(p), r))
				}
				continue
			}
			out = append(out, stmt)
		}
		if t.defaultPart {
			out = append(out, fmt.Sprintf(`CREATE TABLE %s PARTITION OF %s DEFAULT`, t.rel("_default"), t.rel("")))
		}
	case kindInherited:
		for _, c := range []string{"_old", "_older"} {
			out = append(out, fmt.Sprintf(`CREATE TABLE %s () INHERITS (%s)`, t.rel(c), t.rel("")))
		}
	}
	out = append(out, fmt.Sprintf(`CREATE INDEX ON %s (%s)`, t.rel(""), q(t.timeCol)))
	if t.trigger {
		out = append(out,
			fmt.Sprintf(`CREATE TABLE %s (deleted_at timestamptz NOT NULL DEFAULT now())`, t.rel("_audit")),
			fmt.Sprintf(`CREATE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
				BEGIN INSERT INTO %s DEFAULT VALUES; RETURN OLD; END $$`, t.rel("_audit_fn"), t.rel("_audit")),
			fmt.Sprintf(`CREATE TRIGGER %s AFTER DELETE ON %s FOR EACH ROW EXECUTE FUNCTION %s()`, q(t.name+"_audit"), t.rel(""), t.rel("_audit_fn")))
	}
	return out
}

func (t *table) primaryKey() string {
	var cols []string
	switch t.key {
	case keyNone:
		return ""
	case keyComposite:
		cols = []string{"tenant", "id"}
	default:
		cols = []string{"id"}
	}
	if t.kind == kindPartitioned {
		cols = append(cols, q(t.timeCol))
	}
	return strings.Join(cols, ", ")
}

func (t *table) hashKey() string {
	if t.key == keyComposite {
		return "tenant"
	}
	return "id"
}

// grants are what the worker is given on the scenario's tables, as the
// README's GRANTs for a declared entry say (and INSERT, for restores).
func (s *scenario) grants() []string {
	out := []string{`GRANT USAGE, CREATE ON SCHEMA app TO archiver_worker`, `GRANT USAGE, CREATE ON SCHEMA public TO archiver_worker`}
	for _, t := range s.tables {
		out = append(out, fmt.Sprintf(`GRANT SELECT, INSERT, DELETE, UPDATE ON %s TO archiver_worker`, t.rel("")))
	}
	return out
}

// insertable are the columns an INSERT names (not identity nor generated).
func (t *table) insertable() (names, exprs []string) {
	switch t.key {
	case keyBigint:
		names, exprs = append(names, "id"), append(exprs, fmt.Sprintf("nextval('%s')", t.rel("_seq")))
	case keyUUID:
		names, exprs = append(names, "id"), append(exprs, "md5($1 || ':' || i)::uuid")
	case keyText:
		names, exprs = append(names, "id"), append(exprs, fmt.Sprintf("'k' || nextval('%s')", t.rel("_seq")))
	case keyComposite:
		names, exprs = append(names, "tenant", "id"), append(exprs, "(h % 3)::int", fmt.Sprintf("nextval('%s')", t.rel("_seq")))
	}
	ts := "$3::timestamptz"
	if t.timeType == "timestamp" {
		ts = "($3::timestamptz AT TIME ZONE 'UTC')"
	}
	names = append(names, q(t.timeCol))
	if t.ds != nil {
		exprs = append(exprs, t.ds.timeExpr(ts))
	} else {
		exprs = append(exprs, fmt.Sprintf("%s + (h %% $4) * interval '1 second'", ts))
	}
	if t.fk != "" {
		names, exprs = append(names, "parent_id"), append(exprs, "CASE WHEN h % 9 = 0 THEN NULL ELSE (1 + h % 20)::int END")
	}
	if t.off != nil {
		// $5: the files the rows name, row i the ((i-1) mod n)-th.
		names, exprs = append(names, q(t.off.pathCol)), append(exprs, "($5::text[])[1 + (i - 1) % cardinality($5::text[])]")
	}
	for _, c := range t.cols {
		if c.gen != "" {
			continue
		}
		e := c.expr
		if !c.notNull {
			e = "CASE WHEN h % 11 = 3 THEN NULL ELSE " + e + " END"
		}
		names, exprs = append(names, q(c.name)), append(exprs, e)
	}
	return names, exprs
}

// returning is what the model learns of each row a statement wrote: its
// digest, its time (µs since 1970, read as UTC), its where column's value
// as text, and a downsample's group and value columns as texts (dsSpec.vals).
// Run under pinnedSettings.
func (t *table) returning(alias string) string {
	p := ""
	if alias != "" {
		p = alias + "."
	}
	var cols []string
	for _, c := range t.columnNames() {
		cols = append(cols, p+q(c))
	}
	w := "NULL::text"
	if t.where != nil {
		w = p + q(t.where.column) + "::text"
	}
	return fmt.Sprintf("md5(row(%s)::text), (extract(epoch FROM %s%s) * 1000000)::bigint, %s, %s",
		strings.Join(cols, ", "), p, q(t.timeCol), w, t.ds.vals(p))
}

// insertSQL writes $2 rows with hashes of salt $1, times from $3 over $4
// seconds, into target (an offload table's rows name the files of $5).
func (t *table) insertSQL(target string) string {
	names, exprs := t.insertable()
	return fmt.Sprintf(`INSERT INTO %s (%s)
		SELECT %s FROM (SELECT i, abs(hashtext($1 || ':' || i))::bigint AS h FROM generate_series(1, $2::int) i) s
		RETURNING %s`, target, strings.Join(names, ", "), strings.Join(exprs, ", "), t.returning(""))
}

// pinnedSettings make a session's text forms (the digests) independent of
// the database's settings.
const pinnedSettings = `SET LOCAL DateStyle = 'ISO, MDY'; SET LOCAL IntervalStyle = 'postgres'; SET LOCAL TimeZone = 'UTC'; SET LOCAL extra_float_digits = 3`
