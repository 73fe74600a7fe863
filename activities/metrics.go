package activities

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/policy"
)

// downsampleRows aggregates the batch's samples per group and UTC day into
// the archive and deletes them, in the batch's transaction. A batch is the
// next Limit samples in (time, key) order, like a move: a day larger than
// any batch is taken in parts, each merged into the day's aggregate, so no
// day is ever too large to archive and every batch keeps to the lock-time
// budget.
//
// Merging is exact: counts add up, the average is recomputed from the exact
// sums kept in extra_data (so a day filled by several batches equals one
// GROUP BY over all its samples), min and max widen. Metric batches take a
// transaction-level advisory lock, so two workers never merge into the same
// aggregates at once; the samples are aggregated from what the DELETE
// returns, which is what it deleted (see deleteRange for concurrent
// application writes).
func downsampleRows(ctx context.Context, tx pgx.Tx, s shape, in MoveBatchInput) (moved, error) {
	if !s.table.Seed() {
		return aggregateRows(ctx, tx, s, in)
	}
	t := s.table
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('archiver.batches.' || $1))`, t.Live); err != nil {
		return moved{}, fmt.Errorf("lock metric batches: %w", err)
	}
	groups := catalog.QuoteAll("", t.GroupBy)
	value := catalog.Quote(t.Value)
	scale := averageScale(s, t)
	return takeSamples(ctx, tx, s, in, func(b *batchSQL, take string) string {
		return fmt.Sprintf(`
WITH %[1]s
    RETURNING %[2]s, l.%[3]s::numeric AS archiver_value, pg_column_size(l.*) AS archiver_row_bytes,
              %[4]s AS archiver_ts, %[5]s AS archiver_key
), agg AS (
    SELECT %[6]s, %[13]s AS archiver_day,
           count(*) AS n, sum(archiver_value) AS total, min(archiver_value) AS lo, max(archiver_value) AS hi
    FROM moved
    GROUP BY %[6]s, archiver_day
), ins AS (
    INSERT INTO %[7]s AS a
        (id, %[6]s, %[8]s, %[3]s, extra_data, archive_batch_id, is_aggregated, aggregation_period, sample_count)
    SELECT md5(%[9]s)::uuid, %[6]s, archiver_day, round(total / n, %[10]d),
           jsonb_build_object('min', lo, 'max', hi, 'sum', total),
           %[11]s, true, 'day', n
    FROM agg
    ORDER BY %[6]s, archiver_day
    ON CONFLICT (%[6]s, aggregation_period, %[8]s)
    DO UPDATE SET
        sample_count = a.sample_count + EXCLUDED.sample_count,
        %[3]s = round(((a.extra_data->>'sum')::numeric + (EXCLUDED.extra_data->>'sum')::numeric)
                      / (a.sample_count + EXCLUDED.sample_count), %[10]d),
        extra_data = a.extra_data || jsonb_build_object(
            'min', LEAST((a.extra_data->>'min')::numeric, (EXCLUDED.extra_data->>'min')::numeric),
            'max', GREATEST((a.extra_data->>'max')::numeric, (EXCLUDED.extra_data->>'max')::numeric),
            'sum', (a.extra_data->>'sum')::numeric + (EXCLUDED.extra_data->>'sum')::numeric,
            'merged_batches', COALESCE((a.extra_data->>'merged_batches')::int, 0) + 1),
        archived_at = now()
    RETURNING (archive_batch_id = %[11]s) AS fresh
)%[12]s`,
			take,
			catalog.QuoteAll("l.", t.GroupBy), value, b.tsExpr("l."), b.keyExpr("l."),
			groups, catalog.QuoteName(s.archive.Name), catalog.Quote(t.TimeColumn),
			aggregateID(t.GroupBy), scale, b.arg(in.BatchID),
			b.recordTotals("(SELECT count(*) FILTER (WHERE fresh) FROM ins)", "(SELECT count(*) FILTER (WHERE NOT fresh) FROM ins)", "(SELECT count(*) FROM agg)"),
			utcBucket("day", "archiver_ts"))
	})
}

// utcBucket is the SQL expression of the start of the UTC hour, day or
// week (from Monday) that the timestamptz expression ts falls in. It equals
// date_trunc(unit, ts, 'UTC') whatever the session's time zone (checked
// over two centuries) but is plain arithmetic on the timestamp, where
// date_trunc converts to and from the zone for every row: a sixth of a
// batch statement's time, measured. The origin is a Monday at 00:00 UTC.
func utcBucket(unit, ts string) string {
	stride := map[string]string{"hour": "1 hour", "day": "1 day", "week": "7 days"}[unit]
	return fmt.Sprintf("date_bin('%s', %s, '2000-01-03 00:00:00+00')", stride, ts)
}

// aggregateID is the SQL expression of an aggregate's id: an MD5 over an
// unambiguous encoding of its group and day. Each field is written as its
// length, a colon and its text (NULL as "N", which no length starts with),
// so no two distinct groups encode alike whatever their values contain;
// the day is its epoch, independent of session settings.
func aggregateID(groupBy []string) string {
	parts := make([]string, 0, len(groupBy)+2)
	for _, g := range groupBy {
		q := catalog.Quote(g)
		parts = append(parts, fmt.Sprintf("COALESCE(length(%[1]s::text) || ':' || %[1]s::text, 'N')", q))
	}
	parts = append(parts, "'day'", "extract(epoch FROM archiver_day)::bigint::text")
	return "concat_ws(',', " + strings.Join(parts, ", ") + ")"
}

// averageScale is the number of decimals an average is rounded to: the
// archive value column's scale, or 6 when it has none.
func averageScale(s shape, t policy.Table) int {
	if c, ok := s.archive.Column(t.Value); ok {
		if d, ok := catalog.NumericScale(c); ok {
			return d
		}
	}
	return 6
}

// DayStart is the start of t's UTC day.
func DayStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

// aggregateRows is a declared downsample: the batch's rows are aggregated
// per group and time bucket (hour, day or week, in UTC) into the columns the
// archiver made for the declared functions, and deleted. Merging into a
// bucket filled by an earlier batch is exact: counts and sums add up, min
// and max widen, and the average is a generated column, sum / count.
func aggregateRows(ctx context.Context, tx pgx.Tx, s shape, in MoveBatchInput) (moved, error) {
	t := s.table
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('archiver.batches.' || $1))`, t.Live); err != nil {
		return moved{}, fmt.Errorf("lock %s batches: %w", t.Name, err)
	}
	groups := catalog.QuoteAll("", t.GroupBy)
	ret := []string{}
	for _, g := range t.GroupBy {
		ret = append(ret, "l."+catalog.Quote(g))
	}
	var aggs, insCols, insVals, updates []string
	for _, a := range t.Aggregates {
		col := catalog.Quote(a.Column)
		ret = append(ret, "l."+col)
		c, _ := s.live.Column(a.Column)
		for _, ac := range aggregateColumns(a, c) {
			q := catalog.Quote(ac.name)
			switch {
			case ac.name == a.Column+"_sum":
				aggs = append(aggs, fmt.Sprintf("sum(%s::numeric) AS %s", col, q))
				updates = append(updates, fmt.Sprintf("%[1]s = CASE WHEN a.%[1]s IS NULL THEN EXCLUDED.%[1]s WHEN EXCLUDED.%[1]s IS NULL THEN a.%[1]s ELSE a.%[1]s + EXCLUDED.%[1]s END", q))
			case ac.name == a.Column+"_count":
				aggs = append(aggs, fmt.Sprintf("count(%s) AS %s", col, q))
				updates = append(updates, fmt.Sprintf("%[1]s = a.%[1]s + EXCLUDED.%[1]s", q))
			case ac.name == a.Column+"_min":
				aggs = append(aggs, fmt.Sprintf("min(%s) AS %s", col, q))
				updates = append(updates, fmt.Sprintf("%[1]s = LEAST(a.%[1]s, EXCLUDED.%[1]s)", q))
			case ac.name == a.Column+"_max":
				aggs = append(aggs, fmt.Sprintf("max(%s) AS %s", col, q))
				updates = append(updates, fmt.Sprintf("%[1]s = GREATEST(a.%[1]s, EXCLUDED.%[1]s)", q))
			default:
				continue // generated (the average)
			}
			insCols, insVals = append(insCols, q), append(insVals, q)
		}
	}
	groupList, groupSel, conflict := "archiver_bucket", "", catalog.Quote(t.TimeColumn)
	if len(t.GroupBy) > 0 {
		groupList = groups + ", archiver_bucket"
		groupSel = groups + ", "
		conflict = groups + ", " + conflict
	}
	return takeSamples(ctx, tx, s, in, func(b *batchSQL, take string) string {
		return fmt.Sprintf(`
WITH %[1]s
    RETURNING %[2]s, pg_column_size(l.*) AS archiver_row_bytes, %[3]s AS archiver_ts, %[4]s AS archiver_key
), agg AS (
    SELECT %[5]s%[6]s AS archiver_bucket, count(*) AS archiver_n, %[7]s
    FROM moved
    GROUP BY %[8]s
), ins AS (
    INSERT INTO %[9]s AS a (%[5]s%[10]s, sample_count, %[11]s, archive_batch_id)
    SELECT %[5]sarchiver_bucket, archiver_n, %[12]s, %[13]s
    FROM agg
    ORDER BY %[8]s
    ON CONFLICT (%[14]s)
    DO UPDATE SET sample_count = a.sample_count + EXCLUDED.sample_count, %[15]s, archived_at = now()
    RETURNING (archive_batch_id = %[13]s) AS fresh
)%[16]s`,
			take, strings.Join(ret, ", "), b.tsExpr("l."), b.keyExpr("l."),
			groupSel, utcBucket(t.Bucket, "archiver_ts"), strings.Join(aggs, ", "), groupList,
			catalog.QuoteName(t.Archive), catalog.Quote(t.TimeColumn), strings.Join(insCols, ", "), strings.Join(insVals, ", "), b.arg(in.BatchID),
			conflict, strings.Join(updates, ", "),
			b.recordTotals("(SELECT count(*) FILTER (WHERE fresh) FROM ins)", "(SELECT count(*) FILTER (WHERE NOT fresh) FROM ins)", "(SELECT count(*) FROM agg)"))
	})
}
