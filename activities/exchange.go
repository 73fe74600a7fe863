package activities

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/policy"
)

// Partition exchange (DESIGN.md §10): where the live table is partitioned
// by RANGE on its time column and a whole live partition, spanning exactly
// one archive partition's period, lies before the cut-off, it moves as one
// unit instead of row by row:
//
//  1. claim a ledger row (kind 'partition', the partition's oid);
//  2. DETACH PARTITION … CONCURRENTLY from the live table (FINALIZE when a
//     crash left it pending); PostgreSQL adds a CHECK constraint equal to its
//     bounds, so the attach below needs no validation scan;
//  3. add the archive columns with constant defaults (archived_at, the
//     batch id): no rewrite; give it the archive's name, schema and owner;
//     build the archive's indexes on it (only it is locked);
//  4. ATTACH PARTITION to the archive (which then only links the indexes);
//  5. complete the ledger row with the partition's rows and bytes.
//
// Each step is recognised from the catalogue (where the oid is attached,
// which columns it has), so a retry or a crash at any step resumes forward
// and the partition is never lost or counted twice. Every DDL step runs
// under a lock_timeout and is timed: the longest is reported.

// ExchangeCandidate is a live partition that can move whole.
type ExchangeCandidate struct {
	Partition string // schema-qualified name, as regclass prints it
	OID       uint32
	Lower     time.Time
	Upper     time.Time
	// BatchID is set for an exchange an earlier run left unfinished: it
	// resumes under its own ledger row.
	BatchID string `json:",omitempty"`
}

// ListExchangeableInput asks for the live partitions of Table that lie
// wholly in [After, Cutoff).
type ListExchangeableInput struct {
	Table  string
	Entry  *policy.Table `json:",omitempty"`
	Cutoff time.Time
	After  time.Time `json:",omitzero"`
}

// ListExchangeableResult lists the candidates, and why the others in range
// move by batches instead.
type ListExchangeableResult struct {
	Candidates []ExchangeCandidate `json:",omitempty"`
	Skipped    []string            `json:",omitempty"`
}

// ListExchangeable finds the live partitions that can be exchanged whole.
func (a *Activities) ListExchangeable(ctx context.Context, in ListExchangeableInput) (ListExchangeableResult, error) {
	t, err := entryFor(in.Table, in.Entry)
	if err != nil {
		return ListExchangeableResult{}, err
	}
	return listExchangeable(ctx, a.DB, t, in.After, in.Cutoff)
}

func listExchangeable(ctx context.Context, db catalog.Querier, t policy.Table, after, cutoff time.Time) (ListExchangeableResult, error) {
	var out ListExchangeableResult
	if t.ModeOf() != policy.ModeMove {
		return out, nil
	}
	s, err := inspect(ctx, db, t)
	if err != nil {
		return out, err
	}
	if s.live.Kind != catalog.Partitioned {
		return out, nil
	}
	var byTime bool
	if err := db.QueryRow(ctx, `
		SELECT p.partstrat = 'r' AND p.partnatts = 1 AND a.attname = $2
		FROM pg_partitioned_table p JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
		WHERE p.partrelid = $1::regclass`, catalog.QuoteName(t.Live), t.TimeColumn).Scan(&byTime); err != nil {
		return out, fmt.Errorf("read the partition key of %s: %w", t.Live, err)
	}
	if !byTime {
		return out, nil // partitioned by something else: batches
	}
	for _, c := range s.live.Columns {
		if ac, ok := s.archive.Column(c.Name); !ok || ac.Type != c.Type || !s.planned && ac.TypeOID != c.TypeOID {
			out.Skipped = append(out.Skipped, fmt.Sprintf("column %s differs between %s and %s (partitions can only be attached with identical columns)", c.Name, t.Live, t.Archive))
			return out, nil
		}
	}
	var member bool
	if err := db.QueryRow(ctx, `
		SELECT pg_has_role(CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $2) THEN $2 ELSE current_user END,
		                   (SELECT relowner FROM pg_class WHERE oid = $1::regclass), 'USAGE')`, catalog.QuoteName(t.Live), WorkerRole).Scan(&member); err != nil {
		return out, fmt.Errorf("check ownership of %s: %w", t.Live, err)
	}
	rows, err := db.Query(ctx, `
		SELECT c.oid::regclass::text, c.oid::int8, c.relkind = 'p', pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT',
		       b.m[1]::timestamptz, b.m[2]::timestamptz, i.inhdetachpending
		FROM pg_inherits i
		JOIN pg_class c ON c.oid = i.inhrelid
		CROSS JOIN LATERAL (SELECT regexp_match(pg_get_expr(c.relpartbound, c.oid),
		                    '^FOR VALUES FROM \(''([^'']+)''\) TO \(''([^'']+)''\)$') AS m) b
		WHERE i.inhparent = $1::regclass
		ORDER BY 5 NULLS LAST`, catalog.QuoteName(t.Live))
	if err != nil {
		return out, fmt.Errorf("list the partitions of %s: %w", t.Live, err)
	}
	type livePart struct {
		name           string
		oid            int64
		sub, isDefault bool
		lower, upper   *time.Time
		detachPending  bool
	}
	parts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (livePart, error) {
		var p livePart
		return p, r.Scan(&p.name, &p.oid, &p.sub, &p.isDefault, &p.lower, &p.upper, &p.detachPending)
	})
	if err != nil {
		return out, fmt.Errorf("list the partitions of %s: %w", t.Live, err)
	}
	// Exchanges an earlier run left unfinished come first: their partition
	// may be detached already, no longer listed under the live table.
	pending, err := db.Query(ctx, `
		SELECT batch_id::text, partition_oid::int8, COALESCE(partition_name, ''), min_ts, max_ts
		FROM archive_batches WHERE table_name = $1 AND kind = 'partition' AND state = 'exchanging'
		ORDER BY min_ts`, t.Live)
	if err != nil {
		return out, fmt.Errorf("find unfinished exchanges of %s: %w", t.Live, err)
	}
	resumed, err := pgx.CollectRows(pending, func(r pgx.CollectableRow) (ExchangeCandidate, error) {
		var c ExchangeCandidate
		var oid int64
		err := r.Scan(&c.BatchID, &oid, &c.Partition, &c.Lower, &c.Upper)
		c.OID, c.Lower, c.Upper = uint32(oid), c.Lower.UTC(), c.Upper.UTC()
		return c, err
	})
	if err != nil {
		return out, fmt.Errorf("find unfinished exchanges of %s: %w", t.Live, err)
	}
	out.Candidates = append(out.Candidates, resumed...)
	archived, err := partitionsByName(ctx, db, t)
	if err != nil {
		return out, err
	}
	holds, err := activeHolds(ctx, db, t)
	if err != nil {
		return out, err
	}
	for _, p := range parts {
		if slices.ContainsFunc(resumed, func(c ExchangeCandidate) bool { return int64(c.OID) == p.oid }) {
			continue
		}
		if p.isDefault || p.lower == nil || p.upper.After(cutoff) || !after.IsZero() && p.lower.Before(after) {
			continue // not wholly eligible: its rows move by batches
		}
		lo, hi := p.lower.UTC(), p.upper.UTC()
		switch {
		case overlapsHold(holds, lo, hi):
			out.Skipped = append(out.Skipped, p.name+": a restore holds part of it (its other rows move by batches)")
			continue
		case p.sub:
			out.Skipped = append(out.Skipped, p.name+": sub-partitioned")
			continue
		case !lo.Equal(periodStart(t, lo)) || !hi.Equal(periodEnd(t, lo)):
			out.Skipped = append(out.Skipped, fmt.Sprintf("%s: its bounds are not one archive %s", p.name, t.PartitionSpan()))
			continue
		case !member:
			out.Skipped = append(out.Skipped, fmt.Sprintf("%s: %s is not a member of the owner of %s (GRANT that role TO %s to exchange whole partitions)", p.name, WorkerRole, t.Live, WorkerRole))
			continue
		}
		if ap, ok := archived[PartitionName(t, lo)]; ok {
			var empty bool
			if err := db.QueryRow(ctx, fmt.Sprintf(`SELECT NOT EXISTS (SELECT 1 FROM %s)`, partitionIdent(t, ap.name))).Scan(&empty); err != nil {
				return out, err
			}
			if !empty {
				out.Skipped = append(out.Skipped, fmt.Sprintf("%s: the archive already holds rows of %s", p.name, lo.Format("2006-01-02")))
				continue
			}
		}
		out.Candidates = append(out.Candidates, ExchangeCandidate{Partition: p.name, OID: uint32(p.oid), Lower: lo, Upper: hi})
	}
	return out, nil
}

// ExchangeInput names one live partition to exchange under BatchID.
type ExchangeInput struct {
	Table     string
	Entry     *policy.Table `json:",omitempty"`
	JobID     string
	BatchID   string
	Partition ExchangeCandidate
}

// ExchangeStep is one DDL step and how long it held its lock.
type ExchangeStep struct {
	Step   string
	Millis int64
}

// ExchangeResult is what the exchange moved, as the ledger records it.
type ExchangeResult struct {
	BatchID   string
	Partition string // its name in the archive
	Rows      int64
	Bytes     int64
	MinTS     *time.Time `json:",omitempty"`
	MaxTS     *time.Time `json:",omitempty"`
	Replayed  bool       `json:",omitempty"`
	Steps     []ExchangeStep
	// LongestLockMillis is the longest any step held a lock.
	LongestLockMillis int64
}

// ExchangePartition moves one live partition to the archive whole.
func (a *Activities) ExchangePartition(ctx context.Context, in ExchangeInput) (ExchangeResult, error) {
	res := ExchangeResult{BatchID: in.BatchID}
	t, err := entryFor(in.Table, in.Entry)
	if err != nil {
		return res, err
	}
	if _, err := ensureArchiveTable(ctx, a.DB, t); err != nil {
		return res, err
	}
	if done, err := a.claimExchange(ctx, t, in, &res); err != nil || done {
		return res, err
	}
	conn, err := a.DB.Acquire(ctx)
	if err != nil {
		return res, err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SET lock_timeout = '`+lockTimeout+`'; SET ROLE `+WorkerRole); err != nil {
		return res, fmt.Errorf("exchange %s: %w", in.Partition.Partition, err)
	}
	defer conn.Exec(context.Background(), `RESET lock_timeout; RESET ROLE`) //nolint:errcheck // back to the pool either way
	oid := in.Partition.OID
	target := PartitionName(t, in.Partition.Lower)
	for range 8 { // each pass takes one step forward; 5 suffice
		st, err := exchangeState(ctx, conn, t, oid, in.BatchID)
		if err != nil {
			return res, err
		}
		var step, sql string
		switch {
		case st.where == "live" && st.detachPending:
			step, sql = "detach-finalize", fmt.Sprintf(`ALTER TABLE %s DETACH PARTITION %s FINALIZE`, catalog.QuoteName(t.Live), st.ident)
		case st.where == "live" && st.liveHasDefault:
			// PostgreSQL refuses CONCURRENTLY beside a DEFAULT partition:
			// a plain detach, instant, under the lock_timeout.
			step, sql = "detach", fmt.Sprintf(`ALTER TABLE %s DETACH PARTITION %s`, catalog.QuoteName(t.Live), st.ident)
		case st.where == "live":
			step, sql = "detach", fmt.Sprintf(`ALTER TABLE %s DETACH PARTITION %s CONCURRENTLY`, catalog.QuoteName(t.Live), st.ident)
		case st.where == "archive":
			return res, a.completeExchange(ctx, t, in, st.ident, &res)
		case !st.hasArchiveColumns:
			// Constant defaults: no rewrite. The CHECK constraint equal to
			// the archive bound lets ATTACH skip its validation scan (a
			// concurrent detach adds one itself; a plain one does not);
			// validating it scans this table, which nobody uses any more.
			step = "add-archive-columns"
			sql = fmt.Sprintf(`ALTER TABLE %[1]s ADD COLUMN IF NOT EXISTS archived_at timestamptz NOT NULL DEFAULT %[2]s,
				ADD COLUMN IF NOT EXISTS archive_batch_id uuid NOT NULL DEFAULT %[3]s,
				ADD CONSTRAINT %[4]s CHECK (%[5]s >= %[6]s AND %[5]s < %[7]s);
				ALTER TABLE %[1]s ALTER COLUMN archived_at DROP DEFAULT, ALTER COLUMN archive_batch_id DROP DEFAULT`,
				st.ident, quoteLiteral(st.claimedAt.UTC().Format("2006-01-02 15:04:05.999999+00")), quoteLiteral(in.BatchID),
				catalog.Quote(fmt.Sprintf("archiver_bounds_%d", oid)), catalog.Quote(t.TimeColumn),
				quoteLiteral(in.Partition.Lower.Format("2006-01-02 15:04:05+00")), quoteLiteral(in.Partition.Upper.Format("2006-01-02 15:04:05+00")))
		case st.name != target || st.schema != st.archiveSchema || !st.ownedByWorker:
			step = "rename"
			sql = ""
			if st.schema != st.archiveSchema {
				sql += fmt.Sprintf(`ALTER TABLE %s SET SCHEMA %s; `, st.ident, catalog.Quote(st.archiveSchema))
			}
			moved := catalog.Quote(st.archiveSchema) + "." + catalog.Quote(st.name)
			if st.name != target {
				sql += fmt.Sprintf(`ALTER TABLE %s RENAME TO %s; `, moved, catalog.Quote(target))
			}
			sql += fmt.Sprintf(`ALTER TABLE %s OWNER TO %s`, catalog.Quote(st.archiveSchema)+"."+catalog.Quote(target), WorkerRole)
		case len(st.missingIndexes) > 0:
			// The archive's own indexes, built on the detached table (which
			// only this step locks) before ATTACH, which would otherwise
			// build them holding the archive's partition list.
			step, sql = "index", strings.Join(st.missingIndexes, "; ")
		default:
			if err := dropEmptyArchivePartition(ctx, conn, t, in.Partition.Lower, oid); err != nil {
				return res, err
			}
			step, sql = "attach", fmt.Sprintf(`ALTER TABLE %s ATTACH PARTITION %s FOR VALUES %s`, catalog.QuoteName(t.Archive), st.ident, periodBounds(t, in.Partition.Lower))
		}
		began := time.Now()
		if err := withLockRetries(ctx, func() error { _, err := conn.Exec(ctx, sql); return err }); err != nil {
			return res, fmt.Errorf("exchange %s, step %s: %w", in.Partition.Partition, step, err)
		}
		ms := time.Since(began).Milliseconds()
		res.Steps = append(res.Steps, ExchangeStep{Step: step, Millis: ms})
		res.LongestLockMillis = max(res.LongestLockMillis, ms)
		// Kept across attempts: a crash does not forget the longest lock.
		if _, err := a.DB.Exec(ctx, `UPDATE archive_batches SET lock_ms = GREATEST(COALESCE(lock_ms, 0), $2) WHERE batch_id = $1`, in.BatchID, ms); err != nil {
			return res, err
		}
		if activity.IsActivity(ctx) {
			activity.RecordHeartbeat(ctx, step)
		}
		if a.AfterExchangeStep != nil {
			a.AfterExchangeStep(step)
		}
	}
	return res, fmt.Errorf("exchange %s did not converge", in.Partition.Partition)
}

// claimExchange claims the ledger row, or answers from it when the
// exchange committed before (done).
func (a *Activities) claimExchange(ctx context.Context, t policy.Table, in ExchangeInput, res *ExchangeResult) (bool, error) {
	var state, kind string
	var oid *int64
	err := a.DB.QueryRow(ctx, `
		INSERT INTO archive_batches (batch_id, job_id, table_name, cutoff, batch_limit, kind, state, partition_oid, partition_name, min_ts, max_ts)
		VALUES ($1, $2, $3, $4, 0, 'partition', 'exchanging', $5, $6, $7, $4)
		ON CONFLICT (batch_id) DO UPDATE
		SET job_id = CASE WHEN archive_batches.state = 'exchanging' THEN EXCLUDED.job_id ELSE archive_batches.job_id END
		RETURNING state, kind, partition_oid::int8`, in.BatchID, in.JobID, t.Live, in.Partition.Upper, int64(in.Partition.OID), in.Partition.Partition, in.Partition.Lower).
		Scan(&state, &kind, &oid)
	if err != nil {
		return false, fmt.Errorf("claim exchange of %s: %w", in.Partition.Partition, err)
	}
	if kind != "partition" || oid == nil || uint32(*oid) != in.Partition.OID {
		return false, temporal.NewNonRetryableApplicationError(fmt.Sprintf("batch id %s is already recorded for another batch", in.BatchID), ErrInvalidInput, nil)
	}
	if state != "done" {
		return false, nil
	}
	res.Replayed = true
	return true, a.DB.QueryRow(ctx, `
		SELECT COALESCE(partition_name, ''), rows_moved, bytes, min_ts, max_ts, COALESCE(lock_ms, 0)
		FROM archive_batches WHERE batch_id = $1`, in.BatchID).Scan(&res.Partition, &res.Rows, &res.Bytes, &res.MinTS, &res.MaxTS, &res.LongestLockMillis)
}

// completeExchange records what the attached partition holds.
func (a *Activities) completeExchange(ctx context.Context, t policy.Table, in ExchangeInput, ident string, res *ExchangeResult) error {
	err := a.DB.QueryRow(ctx, fmt.Sprintf(`
		WITH p AS (
		    SELECT count(*) AS n, min(%[1]s)::timestamptz AS lo, max(%[1]s)::timestamptz AS hi,
		           count(*) FILTER (WHERE archive_batch_id <> $1) AS other
		    FROM %[2]s
		)
		UPDATE archive_batches b
		SET state = 'done', rows_moved = p.n, rows_deleted = p.n, bytes = pg_total_relation_size($2::regclass),
		    min_ts = p.lo, max_ts = p.hi, partition_name = $3, committed_at = now(),
		    lock_ms = GREATEST(COALESCE(b.lock_ms, 0), $4)
		FROM p WHERE b.batch_id = $1 AND p.other = 0
		RETURNING b.rows_moved, b.bytes, b.min_ts, b.max_ts, b.lock_ms`, catalog.Quote(t.TimeColumn), ident),
		in.BatchID, ident, PartitionName(t, in.Partition.Lower), res.LongestLockMillis).
		Scan(&res.Rows, &res.Bytes, &res.MinTS, &res.MaxTS, &res.LongestLockMillis)
	if errors.Is(err, pgx.ErrNoRows) {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("%s holds rows of another batch: not recorded", ident), ErrInvalidInput, nil)
	}
	if err != nil {
		return fmt.Errorf("record exchange of %s: %w", in.Partition.Partition, err)
	}
	res.Partition = PartitionName(t, in.Partition.Lower)
	res.MinTS, res.MaxTS = utc(res.MinTS), utc(res.MaxTS)
	return nil
}

// exchangeState is where an exchanged partition is.
type exchangeStateOf struct {
	where             string // live, archive, or "" (standalone)
	detachPending     bool
	liveHasDefault    bool
	ident             string // quoted, schema-qualified
	name, schema      string
	archiveSchema     string
	ownedByWorker     bool
	hasArchiveColumns bool
	claimedAt         time.Time
	// missingIndexes are CREATE INDEX statements for the archive's plain
	// indexes the detached table has no equivalent of.
	missingIndexes []string
}

func exchangeState(ctx context.Context, conn *pgxpool.Conn, t policy.Table, oid uint32, batchID string) (exchangeStateOf, error) {
	var st exchangeStateOf
	var parent *string
	err := conn.QueryRow(ctx, `
		SELECT c.relname, n.nspname, pg_get_userbyid(c.relowner) = $3,
		       (SELECT i.inhparent::regclass::text FROM pg_inherits i WHERE i.inhrelid = c.oid),
		       COALESCE((SELECT i.inhdetachpending FROM pg_inherits i WHERE i.inhrelid = c.oid), false),
		       EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'archive_batch_id' AND NOT a.attisdropped),
		       (SELECT an.nspname FROM pg_class ac JOIN pg_namespace an ON an.oid = ac.relnamespace WHERE ac.oid = $2::regclass),
		       (SELECT committed_at FROM archive_batches WHERE batch_id = $4),
		       EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhrelid
		               WHERE i.inhparent = $5::regclass AND pg_get_expr(p.relpartbound, p.oid) = 'DEFAULT')
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = $1::oid`, int64(oid), catalog.QuoteName(t.Archive), WorkerRole, batchID, catalog.QuoteName(t.Live)).
		Scan(&st.name, &st.schema, &st.ownedByWorker, &parent, &st.detachPending, &st.hasArchiveColumns, &st.archiveSchema, &st.claimedAt, &st.liveHasDefault)
	if errors.Is(err, pgx.ErrNoRows) {
		return st, temporal.NewNonRetryableApplicationError(fmt.Sprintf("the partition being exchanged (oid %d) no longer exists", oid), ErrInvalidInput, nil)
	}
	if err != nil {
		return st, fmt.Errorf("read the state of partition %d: %w", oid, err)
	}
	st.ident = catalog.Quote(st.schema) + "." + catalog.Quote(st.name)
	if parent == nil && st.hasArchiveColumns {
		// Plain (non-unique) indexes of the archive, by their columns; a
		// unique one is the key, which the live partition brings.
		rows, err := conn.Query(ctx, `
			SELECT ai.indexrelid::int8, pg_get_indexdef(ai.indexrelid)
			FROM pg_index ai
			WHERE ai.indrelid = $2::regclass AND NOT ai.indisunique
			  AND NOT EXISTS (SELECT 1 FROM pg_index pi WHERE pi.indrelid = $1::oid
			                  AND pi.indkey::text = ai.indkey::text AND pi.indclass::text = ai.indclass::text
			                  AND pi.indexprs IS NULL AND ai.indexprs IS NULL AND pi.indpred IS NULL AND ai.indpred IS NULL)`,
			int64(oid), catalog.QuoteName(t.Archive))
		if err != nil {
			return st, fmt.Errorf("compare the indexes of %s: %w", st.ident, err)
		}
		defs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
			var id int64
			var def string
			if err := r.Scan(&id, &def); err != nil {
				return "", err
			}
			i := strings.Index(def, " USING ")
			if i < 0 {
				return "", fmt.Errorf("index definition %q", def)
			}
			return fmt.Sprintf("CREATE INDEX %s ON %s%s", catalog.Quote(fmt.Sprintf("%s_ix%d", st.name, id)), st.ident, def[i:]), nil
		})
		if err != nil {
			return st, fmt.Errorf("compare the indexes of %s: %w", st.ident, err)
		}
		st.missingIndexes = defs
	}
	if parent != nil {
		var liveName, archiveName string
		if err := conn.QueryRow(ctx, `SELECT $1::regclass::text, $2::regclass::text`, catalog.QuoteName(t.Live), catalog.QuoteName(t.Archive)).Scan(&liveName, &archiveName); err != nil {
			return st, err
		}
		switch *parent {
		case liveName:
			st.where = "live"
		case archiveName:
			st.where = "archive"
		default:
			return st, temporal.NewNonRetryableApplicationError(fmt.Sprintf("%s is attached to %s, neither %s nor %s", st.ident, *parent, t.Live, t.Archive), ErrInvalidInput, nil)
		}
	}
	return st, nil
}

// dropEmptyArchivePartition removes an empty archive partition that holds
// the exchanged partition's period (made by an earlier run's batches), so
// that the exchanged one can take its place: detached CONCURRENTLY, then
// dropped.
func dropEmptyArchivePartition(ctx context.Context, conn *pgxpool.Conn, t policy.Table, start time.Time, exchanged uint32) error {
	name := PartitionName(t, start)
	var oid *int64
	var empty bool
	ident := partitionIdent(t, name)
	if err := conn.QueryRow(ctx, `SELECT to_regclass($1)::oid::int8`, ident).Scan(&oid); err != nil || oid == nil || uint32(*oid) == exchanged {
		return err
	}
	if err := conn.QueryRow(ctx, fmt.Sprintf(`SELECT NOT EXISTS (SELECT 1 FROM %s)`, ident)).Scan(&empty); err != nil {
		return err
	}
	if !empty {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("%s already holds archived rows of its period: the partition moves by batches instead", name), ErrInvalidInput, nil)
	}
	var attached bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = $1::regclass)`, ident).Scan(&attached); err != nil {
		return err
	}
	if attached {
		if err := withLockRetries(ctx, func() error {
			_, err := conn.Exec(ctx, fmt.Sprintf(`ALTER TABLE %s DETACH PARTITION %s CONCURRENTLY`, catalog.QuoteName(t.Archive), ident))
			return err
		}); err != nil {
			return fmt.Errorf("detach the empty %s: %w", name, err)
		}
	}
	_, err := conn.Exec(ctx, fmt.Sprintf(`DROP TABLE %s`, ident))
	return err
}
