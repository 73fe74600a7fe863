package activities

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/policy"
)

// relation is a name of a policy entry as the database resolves it: the
// relation it names (by oid), or, for one not made yet (an archive table a
// first run creates), the schema-qualified name CREATE TABLE would give it.
type relation struct {
	spelt string // as the entry writes it
	key   string // what two names of one relation share
	name  string // schema.table, for messages
}

// Shared is a relation that two entries of a policy (or one entry's live
// and archive table) both name.
type Shared struct {
	Entries []string // the one or two entries
	Message string   // one sentence naming them, the relation and why
}

// SharedRelations lists, one sentence each, the relations two entries of
// pol (or one entry's live and archive table) both name, however they
// spell them: names are resolved through the session's search path, as
// the archiver's statements resolve them. Two entries on one live table
// archive its rows twice over; two entries on one archive table lose rows
// (retention for one drops the other's partitions, a restore of one moves
// the other's rows into its live table). An activity sees only its own
// entry, so the starter runs this over the whole policy before it starts
// a run, applies a schedule, or plans (`policy check`).
func SharedRelations(ctx context.Context, db catalog.Querier, pol []policy.Table) ([]Shared, error) {
	var names []string
	for _, t := range pol {
		names = append(names, catalog.QuoteName(t.Live), catalog.QuoteName(t.Archive))
	}
	rows, err := db.Query(ctx, `
		SELECT c.oid::int8, ns.nspname, c.relname, current_schema()
		FROM unnest($1::text[]) WITH ORDINALITY AS n(name, i)
		LEFT JOIN pg_class c ON c.oid = to_regclass(n.name)
		LEFT JOIN pg_namespace ns ON ns.oid = c.relnamespace
		ORDER BY n.i`, names)
	if err != nil {
		return nil, fmt.Errorf("resolve the policy's tables: %w", err)
	}
	type resolved struct {
		oid           *int64
		schema, table *string
		current       *string
	}
	res, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (resolved, error) {
		var v resolved
		return v, r.Scan(&v.oid, &v.schema, &v.table, &v.current)
	})
	if err != nil {
		return nil, fmt.Errorf("resolve the policy's tables: %w", err)
	}
	rel := func(spelt string, r resolved) relation {
		if r.oid != nil {
			name := *r.schema + "." + *r.table
			return relation{spelt: spelt, key: fmt.Sprint("oid ", *r.oid), name: name}
		}
		// Not made yet: where an unqualified CREATE TABLE puts it, the
		// first schema of the search path that exists.
		name := spelt
		if r.current != nil {
			name = policy.Qualify(spelt, *r.current)
		}
		return relation{spelt: spelt, key: "name " + name, name: name}
	}
	live := make([]relation, len(pol))
	archive := make([]relation, len(pol))
	for i, t := range pol {
		live[i], archive[i] = rel(t.Live, res[2*i]), rel(t.Archive, res[2*i+1])
	}
	var out []Shared
	for i, a := range pol {
		if live[i].key == archive[i].key {
			out = append(out, Shared{[]string{a.Name}, fmt.Sprintf("entry %q: its archive table %s is its live table%s", a.Name, archive[i].name, spelling(live[i], archive[i]))})
		}
		for j := i + 1; j < len(pol); j++ {
			b := pol[j]
			var msg string
			switch {
			case live[i].key == live[j].key:
				msg = fmt.Sprintf("entries %q and %q both archive %s%s: one entry a table", a.Name, b.Name, live[i].name, spelling(live[i], live[j]))
			case archive[i].key == archive[j].key:
				msg = fmt.Sprintf("entries %q and %q share the archive table %s%s: retention for one would drop the other's rows, and a restore of one would move the other's rows into its live table; give each entry its own archive_table",
					a.Name, b.Name, archive[i].name, spelling(archive[i], archive[j]))
			case live[i].key == archive[j].key:
				msg = fmt.Sprintf("%s is the live table of entry %q and the archive table of entry %q%s", live[i].name, a.Name, b.Name, spelling(live[i], archive[j]))
			case archive[i].key == live[j].key:
				msg = fmt.Sprintf("%s is the archive table of entry %q and the live table of entry %q%s", archive[i].name, a.Name, b.Name, spelling(archive[i], live[j]))
			default:
				continue
			}
			out = append(out, Shared{[]string{a.Name, b.Name}, msg})
		}
	}
	return out, nil
}

// spelling says how two names of one relation were written, when not
// alike.
func spelling(a, b relation) string {
	if a.spelt == b.spelt {
		return ""
	}
	return fmt.Sprintf(" (named %s and %s)", a.spelt, b.spelt)
}
