package activities

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/policy"
)

// EnsurePartitionsInput asks for the monthly archive partitions that rows
// older than Cutoff will go to.
type EnsurePartitionsInput struct {
	Table  string
	Cutoff time.Time
	After  time.Time `json:",omitzero"` // a backfill window's lower bound
	// Entry is the table's policy entry in force (nil: the built-in table
	// of that name).
	Entry *policy.Table `json:",omitempty"`
}

// WorkerRole is the least-privilege role of migrations/003_worker_role.sql:
// it owns the archive tables and their partitions.
const WorkerRole = "archiver_worker"

// EnsurePartitionsResult names the partitions this call created.
type EnsurePartitionsResult struct {
	Created []string
	// Oldest is the oldest eligible row's timestamp (nil: nothing eligible).
	Oldest *time.Time
	// Reattached names orphaned partitions (detached, never dropped) that
	// were attached again because rows of their month are to be archived.
	Reattached []string `json:",omitempty"`
	// ArchiveCreated names the archive table this call made (a declared
	// entry's first run).
	ArchiveCreated string `json:",omitempty"`
}

// EnsurePartitions puts back the partitions of unfinished exchanges, runs
// the preflight checks, then creates the missing monthly partitions for
// the months that hold eligible rows. Concurrent
// callers serialise on an advisory lock, so two workers never race to create
// the same partition.
func (a *Activities) EnsurePartitions(ctx context.Context, in EnsurePartitionsInput) (EnsurePartitionsResult, error) {
	t, err := entryFor(in.Table, in.Entry)
	if err != nil {
		return EnsurePartitionsResult{}, err
	}
	// An exchange still unfinished here is one this run does not go on
	// with (row by row, another mode, a deadline): its partition goes back
	// to the live table, whose rows batches then move.
	if err := a.settleExchanges(ctx, t, nil, "the run moves rows by batches only"); err != nil {
		return EnsurePartitionsResult{}, err
	}
	if _, err := preflight(ctx, a.DB, t); err != nil {
		return EnsurePartitionsResult{}, err
	}
	made, err := ensureArchiveTable(ctx, a.DB, t)
	if err != nil {
		return EnsurePartitionsResult{}, err
	}
	res, err := ensurePartitions(ctx, a.DB, t, in.After, in.Cutoff)
	if err != nil {
		return EnsurePartitionsResult{}, err
	}
	if made {
		res.ArchiveCreated = t.Archive
	}
	if a.Metrics != nil {
		a.Metrics.Remaining(t.Name, estimateEligible(ctx, a.DB, t, in.After, in.Cutoff))
	}
	res.Oldest = utc(res.Oldest)
	return res, nil
}

type querier interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func ensurePartitions(ctx context.Context, db querier, t policy.Table, after, cutoff time.Time) (EnsurePartitionsResult, error) {
	var res EnsurePartitionsResult
	needed, err := periodsWithRows(ctx, db, t, after, cutoff)
	if err != nil || len(needed) == 0 {
		return res, err
	}
	res.Oldest = &needed[0].oldest
	tx, err := db.Begin(ctx)
	if err != nil {
		return res, fmt.Errorf("ensure partitions of %s: %w", t.Archive, err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	// Creating a partition locks the parent; never queue behind long
	// readers. Partitions are made as the worker role, so that they have
	// one owner whichever worker login made them (retention drops them).
	if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '5s'; SET LOCAL ROLE `+WorkerRole); err != nil {
		return res, fmt.Errorf("ensure partitions of %s: %w", t.Archive, err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('archiver.partitions.' || $1))`, t.Archive); err != nil {
		return res, fmt.Errorf("lock partitions of %s: %w", t.Archive, err)
	}
	existing, err := partitionsByName(ctx, tx, t)
	if err != nil {
		return res, err
	}
	orphans, err := orphanPartitions(ctx, tx, t)
	if err != nil {
		return res, err
	}
	for _, n := range needed {
		name := PartitionName(t, n.start)
		if _, ok := existing[name]; ok {
			continue
		}
		if _, ok := orphans[name]; ok {
			// Detached but never dropped (a drop that a lock timeout or a
			// crash interrupted): its rows are archived rows of this month.
			// Attach it again rather than lose the month; retention decides
			// its fate at the end of the run.
			if _, err := tx.Exec(ctx, attachPartitionSQL(t, n.start)); err != nil {
				return res, fmt.Errorf("attach the orphaned partition %s again: %w (rename or drop it, then run again)", name, err)
			}
			res.Reattached = append(res.Reattached, name)
			continue
		}
		if _, err := tx.Exec(ctx, createPartitionSQL(t, n.start)); err != nil {
			return res, overlapError(err, name)
		}
		res.Created = append(res.Created, name)
	}
	// CREATE TABLE IF NOT EXISTS skips a name that some other table holds:
	// check that every month needed really has its partition now.
	have, err := partitionsByName(ctx, tx, t)
	if err != nil {
		return res, err
	}
	for _, n := range needed {
		name := PartitionName(t, n.start)
		if p, ok := have[name]; !ok || p.lower == nil || !p.lower.Equal(n.start) {
			return res, invalid("ensure partitions", fmt.Errorf("%s exists but is not the partition of %s for %s (a table of that name made by hand?): rename it, then run again",
				name, t.Archive, n.start.Format("2006-01-02")))
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return res, fmt.Errorf("ensure partitions of %s: %w", t.Archive, err)
	}
	return res, nil
}

// periodWithRows is an archive partition span (a UTC month or day) that
// eligible rows go to, and the oldest of those rows.
type periodWithRows struct {
	start, oldest time.Time
}

// periodsWithRows lists the archive partition spans that rows in [after,
// cutoff) go to, oldest first, by skipping from one span's first row to the
// next span's (an index seek per span that has rows): one row dated 1900
// costs one partition, not one for every month since. A downsample's
// aggregates go to their buckets' spans (archivedAt).
func periodsWithRows(ctx context.Context, db querier, t policy.Table, after, cutoff time.Time) ([]periodWithRows, error) {
	span := t.PartitionSpan()
	live, err := describeForFilter(ctx, db, t)
	if err != nil {
		return nil, err
	}
	w := newFilter(t, live)
	cond := w.sql("l.", 3)
	sql := fmt.Sprintf(`
		WITH RECURSIVE m AS (
		    SELECT (SELECT min(l.%[1]s) FROM %[2]s l WHERE l.%[1]s < $1::timestamptz AND l.%[1]s >= $2::timestamptz%[3]s)::timestamptz AS first
		    UNION ALL
		    SELECT (SELECT min(l.%[1]s) FROM %[2]s l
		            WHERE l.%[1]s >= (date_trunc('%[4]s', m.first, 'UTC') AT TIME ZONE 'UTC' + interval '1 %[4]s') AT TIME ZONE 'UTC'
		              AND l.%[1]s < $1::timestamptz%[3]s)::timestamptz
		    FROM m WHERE m.first IS NOT NULL
		)
		SELECT first FROM m WHERE first IS NOT NULL`,
		catalog.Quote(t.TimeColumn), catalog.QuoteName(t.Live), cond, span)
	rows, err := db.Query(ctx, sql, append([]any{cutoff, after}, w.args...)...)
	if err != nil {
		return nil, fmt.Errorf("find the %ss holding eligible rows of %s: %w", span, t.Live, err)
	}
	firsts, err := pgx.CollectRows(rows, pgx.RowTo[time.Time])
	if err != nil {
		return nil, fmt.Errorf("find the %ss holding eligible rows of %s: %w", span, t.Live, err)
	}
	var out []periodWithRows
	seen := map[time.Time]bool{}
	for _, f := range firsts {
		f = f.UTC()
		for _, at := range archivedAt(t, f) {
			// firsts rise: a span listed already has an older row
			if start := periodStart(t, at); !seen[start] {
				seen[start] = true
				out = append(out, periodWithRows{start: start, oldest: f})
			}
		}
	}
	slices.SortFunc(out, func(a, b periodWithRows) int { return a.start.Compare(b.start) })
	return out, nil
}

// archivedAt is where in time the rows of a partition span whose first
// eligible row is at first go in the archive: the span itself, or for a
// downsample the buckets' starts. A weekly bucket starts on a Monday that
// can lie in a span holding no eligible row (the month before a Thursday
// the 1st, a day without samples), and its aggregates go to that span's
// partition, not the row's. The span's later rows go to buckets starting
// after the first row's; those start inside the span itself, which is
// listed when one can (a week inside a month; never a week in a day).
func archivedAt(t policy.Table, first time.Time) []time.Time {
	if t.ModeOf() != policy.ModeDownsample {
		return []time.Time{first}
	}
	b := policy.BucketStart(t.Bucket, first)
	out := []time.Time{b}
	if next := b.Add(bucketLength[t.Bucket]); next.Before(periodEnd(t, periodStart(t, first))) {
		out = append(out, first)
	}
	return out
}

// bucketLength is a downsample bucket's length ("" is a day).
var bucketLength = map[string]time.Duration{"": policy.Day, "hour": time.Hour, "day": policy.Day, "week": 7 * policy.Day}

// describeForFilter reads the live table when t has conditions (their
// values are cast to the columns' types).
func describeForFilter(ctx context.Context, db catalog.Querier, t policy.Table) (catalog.Table, error) {
	if len(t.Where) == 0 {
		return catalog.Table{}, nil
	}
	return catalog.Describe(ctx, db, t.Live)
}

// estimateEligible is the planner's estimate of the rows in [after,
// cutoff): free, unlike a count over a 100M-row backlog (0 if unknown).
func estimateEligible(ctx context.Context, db querier, t policy.Table, after, cutoff time.Time) int64 {
	var plan []byte
	live, err := describeForFilter(ctx, db, t)
	if err != nil {
		return 0
	}
	w := newFilter(t, live)
	sql := fmt.Sprintf(`EXPLAIN (FORMAT JSON) SELECT 1 FROM %[2]s l WHERE l.%[1]s < $1::timestamptz AND l.%[1]s >= $2::timestamptz%[3]s`,
		catalog.Quote(t.TimeColumn), catalog.QuoteName(t.Live), w.sql("l.", 3))
	if err := db.QueryRow(ctx, sql, append([]any{cutoff, after}, w.args...)...).Scan(&plan); err != nil {
		return 0
	}
	var p []struct {
		Plan struct {
			Rows float64 `json:"Plan Rows"`
		}
	}
	if json.Unmarshal(plan, &p) != nil || len(p) == 0 {
		return 0
	}
	return int64(p[0].Plan.Rows)
}

// partition is one partition of an archive table. Its bounds are read as
// timestamps by the server (nil when it has no timestamp range bound: a
// DEFAULT partition or one made by hand with MINVALUE), never parsed from
// text by the worker.
type partition struct {
	name          string
	isDefault     bool
	lower, upper  *time.Time
	detachPending bool
	// orphan: not attached at all (see orphanPartitions).
	orphan bool
}

// partitionsSQL: pg_get_expr prints a bound in the session's DateStyle and
// time zone; the server casts its own text back to timestamptz under the
// same settings, so the worker gets typed values whatever they are.
const partitionsSQL = `
SELECT c.relname, i.inhdetachpending, pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT',
       b.m[1]::timestamptz, b.m[2]::timestamptz
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
CROSS JOIN LATERAL (SELECT regexp_match(pg_get_expr(c.relpartbound, c.oid),
                    '^FOR VALUES FROM \(''([^'']+)''\) TO \(''([^'']+)''\)$') AS m) b
WHERE i.inhparent = to_regclass($1)
ORDER BY 1`

// archivePartitions lists the partitions attached to t's archive table
// (including one whose detach is pending).
func archivePartitions(ctx context.Context, db interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}, t policy.Table) ([]partition, error) {
	rows, err := db.Query(ctx, partitionsSQL, catalog.QuoteName(t.Archive))
	if err != nil {
		return nil, fmt.Errorf("list partitions of %s: %w", t.Archive, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (partition, error) {
		var p partition
		err := r.Scan(&p.name, &p.detachPending, &p.isDefault, &p.lower, &p.upper)
		if p.lower != nil {
			l, u := p.lower.UTC(), p.upper.UTC()
			p.lower, p.upper = &l, &u
		}
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("list partitions of %s: %w", t.Archive, err)
	}
	return out, nil
}

// partitionsByName maps t's archive partitions by name.
func partitionsByName(ctx context.Context, db interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}, t policy.Table) (map[string]partition, error) {
	parts, err := archivePartitions(ctx, db, t)
	if err != nil {
		return nil, err
	}
	out := make(map[string]partition, len(parts))
	for _, p := range parts {
		out[p.name] = p
	}
	return out, nil
}

// retentionKeptComment marks a partition that retention detached and kept
// on purpose (ARCHIVE_RETENTION_MODE=detach); such a table is not an orphan.
const retentionKeptComment = "archiver: detached by retention and kept (ARCHIVE_RETENTION_MODE=detach)"

// orphanPartitions finds tables that carry the name of one of t's
// partitions but are attached to nothing: a partition whose detach
// completed but whose drop did not (a lock timeout, a killed worker). Only
// tables owned by the archive table's owner count, and not those retention
// kept on purpose, nor a partition an exchange in flight has detached (it
// is on its way to the archive, or back to the live table: see
// returnPartition). It maps each name to its span's start.
func orphanPartitions(ctx context.Context, db interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}, t policy.Table) (map[string]time.Time, error) {
	rows, err := db.Query(ctx, `
		SELECT c.relname
		FROM pg_class c, pg_class a
		WHERE a.oid = to_regclass($1)
		  AND c.relnamespace = a.relnamespace AND c.relowner = a.relowner
		  AND c.relkind = 'r' AND NOT c.relispartition
		  AND left(c.relname, length(a.relname) + 2) = a.relname || '_y'
		  AND obj_description(c.oid, 'pg_class') IS DISTINCT FROM $2
		  AND NOT EXISTS (SELECT 1 FROM archive_batches b WHERE b.partition_oid = c.oid AND b.kind = 'partition' AND b.state = 'exchanging')`,
		catalog.QuoteName(t.Archive), retentionKeptComment)
	if err != nil {
		return nil, fmt.Errorf("look for orphaned partitions of %s: %w", t.Archive, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("look for orphaned partitions of %s: %w", t.Archive, err)
	}
	_, base := policy.SplitName(t.Archive)
	pattern := regexp.MustCompile(`^` + regexp.QuoteMeta(base) + `_y(\d{4})m(\d{2})(?:d(\d{2}))?$`)
	out := map[string]time.Time{}
	for _, n := range names {
		m := pattern.FindStringSubmatch(n)
		if m == nil {
			continue
		}
		y, _ := strconv.Atoi(m[1])
		mo, _ := strconv.Atoi(m[2])
		d := 1
		if m[3] != "" {
			d, _ = strconv.Atoi(m[3])
		}
		start := time.Date(y, time.Month(mo), d, 0, 0, 0, 0, time.UTC)
		if PartitionName(t, start) == n { // the entry's span, and a real date
			out[n] = start
		}
	}
	return out, nil
}

// periodStart is the start of the archive partition span (a UTC month, or
// a day) holding ts.
func periodStart(t policy.Table, ts time.Time) time.Time {
	ts = ts.UTC()
	if t.PartitionSpan() == policy.PartitionDay {
		return time.Date(ts.Year(), ts.Month(), ts.Day(), 0, 0, 0, 0, time.UTC)
	}
	return time.Date(ts.Year(), ts.Month(), 1, 0, 0, 0, 0, time.UTC)
}

// periodEnd is the start of the span after the one starting at start.
func periodEnd(t policy.Table, start time.Time) time.Time {
	if t.PartitionSpan() == policy.PartitionDay {
		return start.AddDate(0, 0, 1)
	}
	return start.AddDate(0, 1, 0)
}

// PartitionName is a partition's name (in the archive table's schema):
// <archive>_yYYYYmMM, or <archive>_yYYYYmMMdDD for daily partitions.
func PartitionName(t policy.Table, start time.Time) string {
	_, base := policy.SplitName(t.Archive)
	if t.PartitionSpan() == policy.PartitionDay {
		return fmt.Sprintf("%s_y%04dm%02dd%02d", base, start.Year(), int(start.Month()), start.Day())
	}
	return fmt.Sprintf("%s_y%04dm%02d", base, start.Year(), int(start.Month()))
}

// partitionIdent is a partition's name quoted for SQL, schema-qualified
// like its archive table.
func partitionIdent(t policy.Table, name string) string {
	return catalog.QuoteName(catalog.Sibling(t.Archive, name))
}

// createPartitionSQL is DDL, which takes no parameters: the identifiers come
// from the policy and are quoted; the bounds are formatted from time values,
// in UTC and ISO order, so no session setting can shift them.
func createPartitionSQL(t policy.Table, start time.Time) string {
	return fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s PARTITION OF %s FOR VALUES %s`,
		partitionIdent(t, PartitionName(t, start)), catalog.QuoteName(t.Archive), periodBounds(t, start))
}

// attachPartitionSQL attaches an orphaned partition again. A table detached
// CONCURRENTLY keeps a CHECK constraint equal to its bounds, so PostgreSQL
// skips the validation scan.
func attachPartitionSQL(t policy.Table, start time.Time) string {
	return fmt.Sprintf(`ALTER TABLE %s ATTACH PARTITION %s FOR VALUES %s`,
		catalog.QuoteName(t.Archive), partitionIdent(t, PartitionName(t, start)), periodBounds(t, start))
}

func periodBounds(t policy.Table, start time.Time) string {
	return fmt.Sprintf(`FROM ('%s') TO ('%s')`, start.Format("2006-01-02 15:04:05+00"), periodEnd(t, start).Format("2006-01-02 15:04:05+00"))
}
