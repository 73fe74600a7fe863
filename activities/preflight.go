package activities

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/mockupaws/archiver/internal/policy"
)

// archiveOnly are the archive columns that the live tables do not have.
var archiveOnly = map[string]bool{
	"archived_at": true, "archive_batch_id": true, "is_aggregated": true, "aggregation_period": true,
	"sample_count": true, "s3_location": true, "deleted_locally": true,
}

// preflight refuses to archive a table whose state would lose data or
// mislead: a live column the archive lacks (rows would lose it), an archive
// column the live table lacks (the move statement would fail on every
// batch), a DEFAULT archive partition (rows of any month would land in it
// and partitions could no longer be created), or rows with a NULL
// timestamp (never eligible, never archived, silently). Each is a
// non-retryable error that names the problem.
func preflight(ctx context.Context, db querier, t policy.Table) error {
	live, err := columns(ctx, db, t.Live)
	if err != nil {
		return err
	}
	archive, err := columns(ctx, db, t.Archive)
	if err != nil {
		return err
	}
	if len(live) == 0 || len(archive) == 0 {
		return invalid("preflight", fmt.Errorf("table %s or %s does not exist: run `starter migrate`", t.Live, t.Archive))
	}
	for c := range live {
		if _, ok := archive[c]; !ok {
			return invalid("schema drift", fmt.Errorf("%s has column %q that %s lacks: archived rows would lose it; add it to the archive table first", t.Live, c, t.Archive))
		}
	}
	for c := range archive {
		if _, ok := live[c]; !ok && !archiveOnly[c] {
			return invalid("schema drift", fmt.Errorf("%s lacks column %q that %s has", t.Live, c, t.Archive))
		}
	}
	if !live[t.TimeColumn] { // nullable
		var n int64
		q := fmt.Sprintf(`SELECT count(*) FROM %s WHERE %s IS NULL`, pgx.Identifier{t.Live}.Sanitize(), pgx.Identifier{t.TimeColumn}.Sanitize())
		if err := db.QueryRow(ctx, q).Scan(&n); err != nil {
			return fmt.Errorf("preflight %s: %w", t.Live, err)
		}
		if n > 0 {
			return invalid("preflight", fmt.Errorf("%d rows of %s have a NULL %s: they can never be archived; set their %s or delete them", n, t.Live, t.TimeColumn, t.TimeColumn))
		}
	}
	return checkPartitions(ctx, db, t)
}

// checkPartitions refuses archive partitions that are not the archiver's
// own monthly ones: a DEFAULT partition (rows of any month would land in it
// and monthly partitions could no longer be created) or one made by hand
// over another range (it would overlap the monthly partition to create).
func checkPartitions(ctx context.Context, db querier, t policy.Table) error {
	rows, err := db.Query(ctx, `
		SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = to_regclass($1) ORDER BY 1`, t.Archive)
	if err != nil {
		return fmt.Errorf("list partitions of %s: %w", t.Archive, err)
	}
	defer rows.Close()
	for rows.Next() {
		var name, bound string
		if err := rows.Scan(&name, &bound); err != nil {
			return err
		}
		if bound == "DEFAULT" {
			return invalid("preflight", fmt.Errorf("%s has a DEFAULT partition %s (made by hand?): rows would land there and monthly partitions could not be created; move its rows into monthly partitions and drop it", t.Archive, name))
		}
		m := rangeBound.FindStringSubmatch(bound)
		var from, to time.Time
		if m != nil {
			from, err = parseBound(m[1])
			if err == nil {
				to, err = parseBound(m[2])
			}
		}
		if m == nil || err != nil || !from.Equal(monthStart(from)) || !to.Equal(from.AddDate(0, 1, 0)) || name != PartitionName(t, from) {
			return invalid("preflight", fmt.Errorf("%s has a partition %s (%s) that is not one of the archiver's monthly partitions (made by hand?): it would overlap them; move its rows and drop or detach it", t.Archive, name, bound))
		}
	}
	return rows.Err()
}

// columns maps a table's columns to whether they are NOT NULL.
func columns(ctx context.Context, db querier, table string) (map[string]bool, error) {
	rows, err := db.Query(ctx, `
		SELECT attname, attnotnull FROM pg_attribute
		WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped`, table)
	if err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", table, err)
	}
	out := map[string]bool{}
	for rows.Next() {
		var name string
		var notNull bool
		if err := rows.Scan(&name, &notNull); err != nil {
			return nil, err
		}
		out[name] = notNull
	}
	return out, rows.Err()
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
