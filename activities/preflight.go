package activities

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/policy"
)

// preflight refuses to archive a table whose state would lose data, fail
// every batch, or mislead. Beyond what every batch checks (inspect: kinds,
// columns, types, nullability), it looks at what costs a query: the foreign
// keys that reference the live table (a cascade would delete rows nobody
// archived; a restriction would fail every batch), columns that inheritance
// children add (rows read through the parent would lose them), rows with a
// NULL timestamp (never eligible, never archived, silently), and archive
// partitions that are not the archiver's own monthly ones, and an archive
// table the archiver made for another live table. Each is a
// non-retryable error that names the object and the fix; nothing is changed.
func preflight(ctx context.Context, db catalog.Querier, t policy.Table) (shape, error) {
	s, err := inspect(ctx, db, t)
	if err != nil {
		return s, err
	}
	fks, err := catalog.ReferencedBy(ctx, db, s.live)
	if err != nil {
		return s, err
	}
	if len(fks) > 0 {
		var names []string
		for _, fk := range fks {
			names = append(names, fmt.Sprintf("%s on %s (ON DELETE %s)", fk.Name, fk.Table, fk.OnDelete))
		}
		return s, invalid("preflight", fmt.Errorf("%s is referenced by foreign key %s: deleting archived rows would %s; archive or detach the referencing rows first, or drop the constraint",
			t.Live, strings.Join(names, ", "), fkEffect(fks)))
	}
	extra, err := catalog.ChildOnlyColumns(ctx, db, s.live)
	if err != nil {
		return s, err
	}
	if len(extra) > 0 {
		return s, invalid("preflight", fmt.Errorf("%s inherits %s and adds column %q: rows archived through %s would lose it; archive %s on its own or add the column to %s",
			extra[0].Child, t.Live, extra[0].Column, t.Live, extra[0].Child, t.Live))
	}
	if c, _ := s.live.Column(t.TimeColumn); !c.NotNull {
		var n int64
		q := fmt.Sprintf(`SELECT count(*) FROM %s WHERE %s IS NULL`, catalog.QuoteName(t.Live), catalog.Quote(t.TimeColumn))
		if err := db.QueryRow(ctx, q).Scan(&n); err != nil {
			return s, fmt.Errorf("preflight %s: %w", t.Live, err)
		}
		if n > 0 {
			return s, invalid("preflight", fmt.Errorf("%d rows of %s have a NULL %s: they can never be archived; set their %s or delete them", n, t.Live, t.TimeColumn, t.TimeColumn))
		}
	}
	if err := checkFilter(ctx, db, t, s.live); err != nil {
		return s, err
	}
	if err := checkMadeFor(ctx, db, t, s); err != nil {
		return s, err
	}
	if err := checkPrivileges(ctx, db, t, s); err != nil {
		return s, err
	}
	if s.planned {
		return s, nil // no partitions yet
	}
	return s, checkPartitions(ctx, db, t)
}

// checkPrivileges refuses a live table the worker cannot archive from,
// with the GRANTs that fix it: SELECT and DELETE, and UPDATE on one column
// (PostgreSQL requires it for the row locks of FOR UPDATE); and, for an
// archive table to create, CREATE on its schema. The built-in tables get
// theirs from migrations/003. It checks the role archiver_worker where it
// exists (the starter checks for the worker), else the current user.
func checkPrivileges(ctx context.Context, db catalog.Querier, t policy.Table, s shape) error {
	if t.Seed() {
		return nil
	}
	updCol := s.key
	if updCol == "" {
		updCol = t.TimeColumn
	}
	schema := s.archive.Schema
	if s.planned {
		schema = s.live.Schema
		if sch, _ := policy.SplitName(t.Archive); sch != "" {
			schema = sch
		}
	}
	var role string
	var sel, del, upd, create bool
	err := db.QueryRow(ctx, `
		WITH r AS (SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $4) AND pg_has_role(current_user, $4, 'MEMBER')
		                       THEN $4 ELSE current_user END AS name)
		SELECT r.name, has_table_privilege(r.name, $1::regclass, 'SELECT'), has_table_privilege(r.name, $1::regclass, 'DELETE'),
		       has_any_column_privilege(r.name, $1::regclass, 'UPDATE'),
		       COALESCE(has_schema_privilege(r.name, $2, 'CREATE'), false) OR NOT $3
		FROM r`, catalog.QuoteName(t.Live), schema, s.planned, WorkerRole).Scan(&role, &sel, &del, &upd, &create)
	if err != nil {
		return fmt.Errorf("check privileges on %s: %w", t.Live, err)
	}
	var grants []string
	if !sel || !del {
		grants = append(grants, fmt.Sprintf("GRANT SELECT, DELETE ON %s TO %s", catalog.QuoteName(t.Live), catalog.Quote(role)))
	}
	if !upd {
		grants = append(grants, fmt.Sprintf("GRANT UPDATE (%s) ON %s TO %s", catalog.Quote(updCol), catalog.QuoteName(t.Live), catalog.Quote(role)))
	}
	if !create {
		grants = append(grants, fmt.Sprintf("GRANT USAGE, CREATE ON SCHEMA %s TO %s", catalog.Quote(schema), catalog.Quote(role)))
	}
	if len(grants) > 0 {
		return invalid("policy", fmt.Errorf("%s: %s cannot archive %s yet; run: %s", t.Name, role, t.Live, strings.Join(grants, "; ")))
	}
	return nil
}

// fkEffect says what a delete would do through the constraints.
func fkEffect(fks []catalog.ForeignKey) string {
	for _, fk := range fks {
		if fk.OnDelete == "CASCADE" || fk.OnDelete == "SET NULL" || fk.OnDelete == "SET DEFAULT" {
			return "change or delete rows of " + fk.Table + " that were never archived"
		}
	}
	return "fail on every row still referenced, and the table would never archive"
}

// checkPartitions refuses archive partitions that are not the archiver's
// own monthly ones: a DEFAULT partition (rows of any month would land in it
// and monthly partitions could no longer be created) or one made by hand
// over another range (it would overlap the monthly partition to create).
func checkPartitions(ctx context.Context, db catalog.Querier, t policy.Table) error {
	parts, err := archivePartitions(ctx, db, t)
	if err != nil {
		return err
	}
	for _, p := range parts {
		if p.isDefault {
			return invalid("preflight", fmt.Errorf("%s has a DEFAULT partition %s (made by hand?): rows would land there and monthly partitions could not be created; move its rows into monthly partitions and drop it", t.Archive, p.name))
		}
		if p.lower == nil || !p.lower.Equal(periodStart(t, *p.lower)) || !p.upper.Equal(periodEnd(t, *p.lower)) || p.name != PartitionName(t, *p.lower) {
			bounds := "no timestamp range"
			if p.lower != nil {
				bounds = fmt.Sprintf("from %s to %s", p.lower.Format(time.RFC3339), p.upper.Format(time.RFC3339))
			}
			return invalid("preflight", fmt.Errorf("%s has a partition %s (%s) that is not one of the archiver's partitions (made by hand?): it would overlap them; move its rows and drop or detach it", t.Archive, p.name, bounds))
		}
	}
	return nil
}

// overlapError turns PostgreSQL's "partition would overlap" (a partition
// someone made by hand over the same range) into a clear, final error.
func overlapError(err error, name string) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P17" && strings.Contains(pgErr.Message, "overlap") {
		return invalid("create partition "+name, fmt.Errorf("%s (a partition made by hand covers part of this month; remove or rename it to the monthly scheme)", pgErr.Message))
	}
	return fmt.Errorf("create partition %s: %w", name, err)
}

// madeForComment reads the comment the archiver puts on an archive table it
// makes (createArchiveSQL): the live table and entry it was made for.
var madeForComment = regexp.MustCompile(`^archiver: archive of (\S+) \(policy entry (\S+), mode \S+\)$`)

// checkMadeFor refuses an archive table the archiver made for another
// live table: two entries sharing it, which only the whole policy shows
// and an activity sees one entry (retention for one would drop the other's
// rows, a restore of one would move them into its live table). The
// archive table's comment names the live table it was made for; a name
// that no longer resolves (a renamed table) proves nothing and is let be.
func checkMadeFor(ctx context.Context, db catalog.Querier, t policy.Table, s shape) error {
	if t.Seed() || s.planned {
		return nil
	}
	var note *string
	if err := db.QueryRow(ctx, `SELECT obj_description($1::oid, 'pg_class')`, s.archive.OID).Scan(&note); err != nil {
		return fmt.Errorf("preflight %s: read the comment of %s: %w", t.Name, t.Archive, err)
	}
	m := madeFor(note)
	if m == nil {
		return nil
	}
	var oid *uint32
	if err := db.QueryRow(ctx, `SELECT to_regclass($1)::oid`, catalog.QuoteName(m[1])).Scan(&oid); err != nil {
		return fmt.Errorf("preflight %s: resolve %s: %w", t.Name, m[1], err)
	}
	if oid != nil && *oid != s.live.OID {
		return invalid("policy", fmt.Errorf("%s: %s is the archive table of %s (policy entry %s), not of %s: two entries cannot share an archive table (retention for one would drop the other's rows, a restore of one would move them into its live table); give this entry its own archive_table",
			t.Name, t.Archive, m[1], m[2], t.Live))
	}
	return nil
}

// madeFor matches an archiver's archive-table comment; its live table name
// must be one the policy could hold.
func madeFor(note *string) []string {
	if note == nil {
		return nil
	}
	m := madeForComment.FindStringSubmatch(*note)
	if m == nil || !policy.ValidName(m[1]) {
		return nil
	}
	return m
}
