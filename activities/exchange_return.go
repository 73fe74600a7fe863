package activities

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/activity"

	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/policy"
)

// An exchange that cannot complete is undone: the partition goes back into
// the live table, under its old name, in its old schema, with its old
// bounds, as it was before the detach (the archive columns, the bounds
// constraint and the indexes the exchange added are dropped; the foreign
// keys were never dropped, since that happens with the attach), and the
// ledger row becomes 'returned'. A detached partition is never left in
// neither table, whether the exchange failed, the entry changed, or the
// next run moves rows by batches only (settleExchanges).

// returnPartition undoes in's exchange, recording why. It answers the archive
// partition's name (quoted) instead when the partition is attached to the
// archive already (the exchange is then complete but for its record), and
// whether the partition had left the live table.
func (a *Activities) returnPartition(ctx context.Context, conn *pgxpool.Conn, t policy.Table, in ExchangeInput, why string) (attached string, detached bool, err error) {
	oid := in.Partition.OID
	st, err := exchangeState(ctx, conn, t, oid, in.BatchID)
	if errors.Is(err, errPartitionGone) {
		note := fmt.Sprintf("%s; then the partition (oid %d) was dropped by someone else", why, oid)
		if merr := markReturned(ctx, a.DB, in.BatchID, note); merr != nil {
			return "", true, merr
		}
		return "", true, invalid("exchange", fmt.Errorf("%s: %s", in.Partition.Partition, note))
	}
	if err != nil {
		return "", false, err
	}
	switch {
	case st.where == "archive":
		return st.ident, true, nil
	case st.where == "live" && !st.detachPending:
		return "", false, markReturned(ctx, a.DB, in.BatchID, why)
	case st.where == "live":
		finalize := fmt.Sprintf(`ALTER TABLE %s DETACH PARTITION %s FINALIZE`, catalog.QuoteName(t.Live), st.ident)
		if err := withLockRetries(ctx, func() error { _, err := conn.Exec(ctx, finalize); return err }); err != nil {
			return "", true, fmt.Errorf("finish the detach of %s: %w", st.ident, err)
		}
		if st, err = exchangeState(ctx, conn, t, oid, in.BatchID); err != nil {
			return "", true, err
		}
	}
	var originSchema, originName, liveOwner string
	if err := a.DB.QueryRow(ctx, `
		SELECT COALESCE(b.partition_origin[1], CASE WHEN cardinality(p.i) = 2 THEN p.i[1] ELSE l.nspname END),
		       COALESCE(b.partition_origin[2], p.i[cardinality(p.i)]), l.owner
		FROM archive_batches b
		CROSS JOIN LATERAL (SELECT parse_ident(b.partition_name) AS i) p
		CROSS JOIN (SELECT n.nspname::text, pg_get_userbyid(c.relowner) AS owner
		            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $2::regclass) l
		WHERE b.batch_id = $1`, in.BatchID, catalog.QuoteName(t.Live)).Scan(&originSchema, &originName, &liveOwner); err != nil {
		return "", true, fmt.Errorf("read where %s came from: %w", st.ident, err)
	}
	// The archive's indexes the exchange built, and its columns (with the
	// indexes on them): the live table has neither.
	undo := fmt.Sprintf(`DO $$ DECLARE i regclass; BEGIN
		FOR i IN SELECT x.indexrelid::regclass FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid
		         WHERE x.indrelid = %[1]d AND (c.relname ~ '^archiver_ix_[0-9]+_[0-9]+$'
		               OR left(c.relname, length(%[2]s) + 3) = %[2]s || '_ix' AND substr(c.relname, length(%[2]s) + 4) ~ '^[0-9]+$') LOOP
			EXECUTE format('DROP INDEX %%s', i);
		END LOOP; END $$;
		ALTER TABLE %[3]s DROP COLUMN IF EXISTS archived_at, DROP COLUMN IF EXISTS archive_batch_id`,
		oid, quoteLiteral(PartitionName(t, in.Partition.Lower)), st.ident)
	ident := catalog.Quote(originSchema) + "." + catalog.Quote(st.name)
	if st.schema != originSchema {
		undo += fmt.Sprintf(`; ALTER TABLE %s SET SCHEMA %s`, st.ident, catalog.Quote(originSchema))
	}
	if st.name != originName {
		undo += fmt.Sprintf(`; ALTER TABLE %s RENAME TO %s`, ident, catalog.Quote(originName))
		ident = catalog.Quote(originSchema) + "." + catalog.Quote(originName)
	}
	if err := withLockRetries(ctx, func() error { _, err := conn.Exec(ctx, undo); return err }); err != nil {
		return "", true, fmt.Errorf("undo the exchange steps on %s: %w", st.ident, err)
	}
	if st.ownedByWorker {
		// An earlier version gave it the archive's owner before the
		// attach. The live table's owner takes it back if it may (CREATE
		// on the schema); if not, the partition stays the worker's, in the
		// live table all the same.
		if _, err := conn.Exec(ctx, fmt.Sprintf(`ALTER TABLE %s OWNER TO %s`, ident, catalog.Quote(liveOwner))); err != nil {
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
				return "", true, fmt.Errorf("give %s back to %s: %w", ident, liveOwner, err)
			}
			if activity.IsActivity(ctx) {
				activity.GetLogger(ctx).Warn("partition put back keeps the worker as its owner", "partition", ident, "error", err.Error())
			}
		}
	}
	attach := fmt.Sprintf(`ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%s) TO (%s); ALTER TABLE %s DROP CONSTRAINT IF EXISTS %s`,
		catalog.QuoteName(t.Live), ident, quoteLiteral(in.Partition.Lower.UTC().Format("2006-01-02 15:04:05+00")),
		quoteLiteral(in.Partition.Upper.UTC().Format("2006-01-02 15:04:05+00")), ident, catalog.Quote(boundsConstraint(oid)))
	if err := withLockRetries(ctx, func() error { _, err := conn.Exec(ctx, attach); return err }); err != nil {
		return "", true, fmt.Errorf("attach %s to %s again: %w", ident, t.Live, err)
	}
	return "", true, markReturned(ctx, a.DB, in.BatchID, why)
}

// markReturned closes an exchange's ledger row: nothing moved, and why.
func markReturned(ctx context.Context, db *pgxpool.Pool, batchID, why string) error {
	if _, err := db.Exec(ctx, `UPDATE archive_batches SET state = 'returned', note = $2, committed_at = now() WHERE batch_id = $1 AND state = 'exchanging'`, batchID, why); err != nil {
		return fmt.Errorf("record the return of exchange %s: %w", batchID, err)
	}
	return nil
}

// settleExchanges ends the exchanges of t's live table that an earlier run
// left unfinished, other than those in keep (which the caller resumes):
// one attached to the archive already is recorded as done, any other is
// put back into the live table (why says why). Every run that moves rows
// calls it (EnsurePartitions), whether it exchanges or not.
func (a *Activities) settleExchanges(ctx context.Context, t policy.Table, keep map[string]bool, why string) error {
	list, err := unfinishedExchanges(ctx, a.DB, t)
	if err != nil {
		return err
	}
	var todo []ExchangeCandidate
	for _, c := range list {
		if !keep[c.BatchID] {
			todo = append(todo, c)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	conn, err := a.DB.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SET lock_timeout = '`+lockTimeout+`'; SET ROLE `+WorkerRole); err != nil {
		return fmt.Errorf("settle the exchanges of %s: %w", t.Live, err)
	}
	defer conn.Exec(context.Background(), `RESET lock_timeout; RESET ROLE`) //nolint:errcheck // back to the pool either way
	for _, c := range todo {
		in := ExchangeInput{Table: t.Name, Entry: &t, BatchID: c.BatchID, Partition: c}
		attached, _, err := a.returnPartition(ctx, conn, t, in, why)
		if err != nil {
			return fmt.Errorf("put %s back into %s: %w", c.Partition, t.Live, err)
		}
		if attached != "" {
			var res ExchangeResult
			if err := a.completeExchange(ctx, t, in, attached, &res); err != nil {
				return err
			}
		}
		heartbeat(ctx, "settled the exchange of "+c.Partition)
	}
	return nil
}
