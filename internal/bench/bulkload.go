package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// bulkLoad runs load on table with the table's indexes out of the way:
// inserting millions of rows one index entry at a time (random uuids in the
// primary key) dirties and WAL-logs index pages all over, which made the
// 20M-row scale seed take 18 minutes. In one transaction it reads the
// definitions of table's indexes, of the constraints they back and of the
// foreign keys from or to table from the catalogue, drops them, runs load,
// and creates them again from those definitions with a larger
// maintenance_work_mem (each index built by one sort). After the commit it
// checks that the table's columns, indexes and constraints read back
// exactly as before, and fails if not (a CLUSTER ON mark or a replica
// identity index is not restored: that fails the check).
//
// table must be a plain table without partitions or inheritance children
// (the bench's live tables, as the migrations make them).
func bulkLoad(ctx context.Context, conn *pgx.Conn, table string, load func(pgx.Tx) error) error {
	before, err := tableShape(ctx, conn, table)
	if err != nil {
		return err
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var (
			oid    uint32
			kind   string
			nchild int
		)
		if err := tx.QueryRow(ctx, `
			SELECT c.oid, c.relkind::text, (SELECT count(*) FROM pg_inherits WHERE inhparent = c.oid)
			FROM pg_class c WHERE c.oid = to_regclass($1)`, table).Scan(&oid, &kind, &nchild); err != nil {
			return fmt.Errorf("bulk load %s: read catalogue: %w", table, err)
		}
		if kind != "r" || nchild > 0 {
			return fmt.Errorf("bulk load %s: not a plain table without children (relkind %s, %d children)", table, kind, nchild)
		}
		// What to drop, in this order, and re-create in the reverse one:
		// foreign keys (from table, and from other tables to it: they need
		// its unique index), the constraints that own an index, the other
		// indexes. A primary key or unique constraint is re-created from its
		// index's definition (pg_get_constraintdef leaves out the index's
		// storage parameters), then attached with ADD CONSTRAINT ... USING
		// INDEX.
		rows, err := tx.Query(ctx, `
			SELECT 1 AS step, n.nspname, c.relname, con.conname, con.contype::text, pg_get_constraintdef(con.oid), '', '', false, false
			FROM pg_constraint con
			JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE con.contype = 'f' AND (con.conrelid = $1 OR con.confrelid = $1)
			UNION ALL
			SELECT 2, n.nspname, c.relname, con.conname, con.contype::text, pg_get_constraintdef(con.oid),
			       ic.relname, pg_get_indexdef(con.conindid), con.condeferrable, con.condeferred
			FROM pg_constraint con
			JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
			JOIN pg_class ic ON ic.oid = con.conindid
			WHERE con.conrelid = $1 AND con.contype IN ('p', 'u', 'x')
			UNION ALL
			SELECT 3, n.nspname, ic.relname, '', '', '', '', pg_get_indexdef(i.indexrelid), false, false
			FROM pg_index i
			JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ic.relnamespace
			WHERE i.indrelid = $1
			  AND NOT EXISTS (SELECT FROM pg_constraint con WHERE con.conrelid = $1 AND con.conindid = i.indexrelid AND con.contype IN ('p', 'u', 'x'))
			ORDER BY 1, 2, 3, 4`, oid)
		if err != nil {
			return fmt.Errorf("bulk load %s: read definitions: %w", table, err)
		}
		type redo struct {
			drop   string
			create []string
		}
		var steps []redo
		for rows.Next() {
			var (
				step                                 int
				schema, rel, con, contype, cdef, idx string
				idef                                 string
				deferrable, deferred                 bool
			)
			if err := rows.Scan(&step, &schema, &rel, &con, &contype, &cdef, &idx, &idef, &deferrable, &deferred); err != nil {
				rows.Close()
				return err
			}
			q := pgx.Identifier{schema, rel}.Sanitize()
			if step == 3 {
				steps = append(steps, redo{"DROP INDEX " + q, []string{idef}})
				continue
			}
			alter := "ALTER TABLE " + q
			r := redo{drop: alter + " DROP CONSTRAINT " + pgx.Identifier{con}.Sanitize()}
			add := alter + " ADD CONSTRAINT " + pgx.Identifier{con}.Sanitize() + " "
			switch contype {
			case "p", "u":
				using := map[string]string{"p": "PRIMARY KEY", "u": "UNIQUE"}[contype] + " USING INDEX " + pgx.Identifier{idx}.Sanitize()
				if deferrable {
					using += " DEFERRABLE"
				}
				if deferred {
					using += " INITIALLY DEFERRED"
				}
				r.create = []string{idef, add + using}
			default:
				r.create = []string{add + cdef}
			}
			steps = append(steps, r)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("bulk load %s: read definitions: %w", table, err)
		}
		for _, s := range steps {
			if _, err := tx.Exec(ctx, s.drop); err != nil {
				return fmt.Errorf("bulk load %s: %s: %w", table, s.drop, err)
			}
		}
		if err := load(tx); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SET LOCAL maintenance_work_mem = '1GB'`); err != nil {
			return err
		}
		for i := len(steps) - 1; i >= 0; i-- {
			for _, sql := range steps[i].create {
				if _, err := tx.Exec(ctx, sql); err != nil {
					return fmt.Errorf("bulk load %s: %s: %w", table, sql, err)
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	after, err := tableShape(ctx, conn, table)
	if err != nil {
		return err
	}
	if !slices.Equal(before, after) {
		return fmt.Errorf("bulk load %s: the table's definition changed:\nbefore:\n  %s\nafter:\n  %s",
			table, strings.Join(before, "\n  "), strings.Join(after, "\n  "))
	}
	return nil
}

// tableShape lists table's columns, its indexes (definition, validity,
// clustering, replica identity) and every constraint on it or referencing
// it, sorted: two tables with the same shape have the same list.
func tableShape(ctx context.Context, conn *pgx.Conn, table string) ([]string, error) {
	rows, err := conn.Query(ctx, `
		SELECT format('column %s %s not null %s default %s', a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
		              pg_get_expr(d.adbin, d.adrelid))
		FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
		UNION ALL
		SELECT format('index %s valid %s ready %s clustered %s replident %s', pg_get_indexdef(i.indexrelid),
		              i.indisvalid, i.indisready, i.indisclustered, i.indisreplident)
		FROM pg_index i WHERE i.indrelid = to_regclass($1)
		UNION ALL
		SELECT format('constraint %s on %s: %s (index %s, deferrable %s deferred %s validated %s)', con.conname, con.conrelid::regclass,
		              pg_get_constraintdef(con.oid), con.conindid::regclass, con.condeferrable, con.condeferred, con.convalidated)
		FROM pg_constraint con WHERE con.conrelid = to_regclass($1) OR con.confrelid = to_regclass($1)
		ORDER BY 1`, table)
	if err != nil {
		return nil, fmt.Errorf("read the definition of %s: %w", table, err)
	}
	shape, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read the definition of %s: %w", table, err)
	}
	if len(shape) == 0 {
		return nil, fmt.Errorf("read the definition of %s: no such table", table)
	}
	return shape, nil
}
