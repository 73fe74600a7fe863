package activities

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.temporal.io/sdk/temporal"

	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/coldstore"
	"github.com/mockupaws/archiver/internal/policy"
)

// RestoreInput names a window of one table to bring back to its live
// table: rows with After <= time < Before.
type RestoreInput struct {
	Table         string
	Entry         *policy.Table `json:",omitempty"`
	After, Before time.Time
	// WorkflowID and HoldUntil (HoldWindow): who holds the window, and
	// until when archive runs leave it alone.
	WorkflowID string    `json:",omitempty"`
	HoldUntil  time.Time `json:",omitzero"`
}

// RestorePlan is what a restore of the window would bring back, and from
// where.
type RestorePlan struct {
	// ArchiveRows are the rows in the archive table's partitions.
	ArchiveRows int64
	// Exports are the exports of partitions retention dropped that meet
	// the window: each is restored whole (the object is the unit).
	Exports []RestoreExportRef `json:",omitempty"`
	// Files (offload) are the archived rows in the window whose files went
	// to S3 and come back with them.
	Files int64 `json:",omitempty"`
	// HoldAfter and HoldBefore are the window widened to the whole
	// partitions of the exports: what the restore holds.
	HoldAfter, HoldBefore time.Time
	// Grant, when set, is the GRANT the worker needs before it can put
	// rows back (it archives without INSERT on live tables): a restore
	// other than a dry run is refused until it is run.
	Grant string `json:",omitempty"`
}

// RestoreExportRef is one export a restore reads.
type RestoreExportRef struct {
	ID           int64
	Partition    string
	Lower, Upper time.Time
	Rows         int64
	Location     string
}

// ErrCannotRestore: what was asked cannot be brought back (aggregated
// samples, a window without rows anywhere, an entry nothing was archived
// of yet).
const ErrCannotRestore = "CannotRestore"

func cannotRestore(format string, args ...any) error {
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf(format, args...), ErrCannotRestore, nil)
}

// PlanRestore counts what the window holds in the archive and finds the
// exports of dropped partitions that meet it. It writes nothing.
func (a *Activities) PlanRestore(ctx context.Context, in RestoreInput) (RestorePlan, error) {
	t, err := entryFor(in.Table, in.Entry)
	if err != nil {
		return RestorePlan{}, err
	}
	if !in.After.Before(in.Before) {
		return RestorePlan{}, invalid("restore", fmt.Errorf("--after %s is not before --before %s", in.After.Format(time.RFC3339), in.Before.Format(time.RFC3339)))
	}
	if t.ModeOf() == policy.ModeDownsample {
		return RestorePlan{}, cannotRestore("%s cannot be restored: its samples were aggregated into %s buckets in %s and deleted; an aggregate cannot be turned back into the samples it summarises (the aggregates stay queryable there)",
			t.Name, bucketOf(t), t.Archive)
	}
	plan := RestorePlan{HoldAfter: in.After.UTC(), HoldBefore: in.Before.UTC()}
	// Every later statement reads the archive table: without it each would
	// fail the same way on every attempt.
	archive, err := catalog.Describe(ctx, a.DB, t.Archive)
	if err != nil {
		return plan, err
	}
	if !archive.Exists() {
		return plan, cannotRestore("%s: nothing was archived yet, so there is nothing to restore: its archive table %s does not exist (an archive run of %s makes it)",
			t.Name, t.Archive, t.Name)
	}
	// The worker archives with no INSERT on live tables; a restore needs it,
	// granted by the operator for the restore's time.
	var role string
	var ins bool
	if err := a.DB.QueryRow(ctx, `
		WITH r AS (SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $2) AND pg_has_role(current_user, $2, 'MEMBER')
		                       THEN $2 ELSE current_user END AS name)
		SELECT r.name, has_table_privilege(r.name, $1::regclass, 'INSERT') FROM r`, catalog.QuoteName(t.Live), WorkerRole).Scan(&role, &ins); err != nil {
		return plan, fmt.Errorf("check privileges on %s: %w", t.Live, err)
	}
	if !ins {
		plan.Grant = fmt.Sprintf("GRANT INSERT ON %s TO %s", catalog.QuoteName(t.Live), catalog.Quote(role))
	}
	ts := catalog.Quote(t.TimeColumn)
	if err := a.DB.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s WHERE %s >= $1 AND %s < $2`, catalog.QuoteName(t.Archive), ts, ts),
		in.After, in.Before).Scan(&plan.ArchiveRows); err != nil {
		return plan, fmt.Errorf("count %s's rows in the window: %w", t.Archive, err)
	}
	if t.ModeOf() == policy.ModeOffload {
		if err := a.DB.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s WHERE %s >= $1 AND %s < $2 AND s3_location IS NOT NULL AND deleted_locally`,
			catalog.QuoteName(t.Archive), ts, ts), in.After, in.Before).Scan(&plan.Files); err != nil {
			return plan, fmt.Errorf("count %s's offloaded files in the window: %w", t.Archive, err)
		}
	}
	rows, err := a.DB.Query(ctx, `SELECT `+exportColumns+` FROM archive_exports
		WHERE table_name = $1 AND state = 'dropped' AND lower_bound < $3 AND upper_bound > $2
		ORDER BY lower_bound, id`, t.Archive, in.After, in.Before)
	if err != nil {
		return plan, fmt.Errorf("find the exports of the window: %w", err)
	}
	exports, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Export, error) { return scanExport(r) })
	if err != nil {
		return plan, fmt.Errorf("find the exports of the window: %w", err)
	}
	if len(exports) > 0 && t.ModeOf() == policy.ModeOffload {
		return plan, cannotRestore("%s: the window reaches into partitions retention dropped (%s first): their rows were exported, but their files' objects have expired with the bucket's lifecycle or are not tied to the export; restore a window inside %s's retention",
			t.Name, exports[0].Partition, t.Archive)
	}
	for _, e := range exports {
		plan.Exports = append(plan.Exports, RestoreExportRef{ID: e.ID, Partition: e.Partition, Lower: e.Lower, Upper: e.Upper, Rows: e.Rows, Location: e.Location()})
		if e.Lower.Before(plan.HoldAfter) {
			plan.HoldAfter = e.Lower
		}
		if e.Upper.After(plan.HoldBefore) {
			plan.HoldBefore = e.Upper
		}
	}
	return plan, nil
}

func bucketOf(t policy.Table) string {
	if t.Bucket != "" {
		return t.Bucket
	}
	return "day"
}

// HoldWindow records the restore's hold on its window, then waits for
// batches already running on the table to commit (a SHARE lock, taken and
// released at once), so that every batch after it sees the hold. The hold
// is the window's: a retry finds its row, and another window of the table
// (another restore under the same workflow id, restore-<table>) adds its
// own beside it.
func (a *Activities) HoldWindow(ctx context.Context, in RestoreInput) error {
	t, err := entryFor(in.Table, in.Entry)
	if err != nil {
		return err
	}
	if _, err := a.DB.Exec(ctx, `
		INSERT INTO archive_holds (table_name, after_ts, before_ts, hold_until, workflow_id) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (workflow_id, table_name, after_ts, before_ts) DO UPDATE SET hold_until = EXCLUDED.hold_until`,
		t.Live, in.After, in.Before, in.HoldUntil, in.WorkflowID); err != nil {
		return fmt.Errorf("hold %s: %w", t.Live, err)
	}
	return withLockRetries(ctx, func() error {
		tx, err := a.DB.Begin(ctx)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback(ctx) }()
		if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '`+lockTimeout+`'`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `LOCK TABLE ONLY `+catalog.QuoteName(t.Live)+` IN SHARE MODE`); err != nil {
			return err
		}
		return tx.Commit(ctx)
	})
}

// RestoreBatchInput is one batch of a restore from the archive table.
type RestoreBatchInput struct {
	Table         string
	Entry         *policy.Table `json:",omitempty"`
	JobID         string
	BatchID       string
	After, Before time.Time
	Limit         int
	Cursor        *Key `json:",omitempty"`
}

// RestoreBatch moves up to Limit archived rows of the window back to the
// live table in one transaction, under the ledger protocol of MoveBatch
// (kind 'restore'): the archive's own columns are dropped, and the ledger
// row counts the rows taken from each archive batch.
func (a *Activities) RestoreBatch(ctx context.Context, in RestoreBatchInput) (MoveBatchResult, error) {
	t, err := entryFor(in.Table, in.Entry)
	if err != nil {
		return MoveBatchResult{}, err
	}
	if err := policy.ValidateBatchSize(in.Limit); err != nil {
		return MoveBatchResult{}, invalid("restore batch", err)
	}
	if t.ModeOf() != policy.ModeMove {
		return MoveBatchResult{}, invalid("restore batch", fmt.Errorf("%s is restored by its own steps (mode %s)", t.Name, t.ModeOf()))
	}
	mv := MoveBatchInput{Table: in.Table, Entry: in.Entry, JobID: in.JobID, BatchID: in.BatchID, Cutoff: in.Before, After: in.After, Limit: in.Limit, Cursor: in.Cursor}
	return a.restoreOnce(ctx, t, mv, 0, func(ctx context.Context, tx pgx.Tx, s shape) (moved, error) {
		return restoreRows(ctx, tx, s, mv)
	})
}

// restoreOnce runs one restore step under the ledger protocol (kind
// 'restore') and calls AfterCommit.
func (a *Activities) restoreOnce(ctx context.Context, t policy.Table, in MoveBatchInput, exportID int64,
	step func(ctx context.Context, tx pgx.Tx, s shape) (moved, error)) (MoveBatchResult, error) {
	res, err := a.ledgerStep(ctx, t, in, "restore", exportID, func(ctx context.Context, tx pgx.Tx, s shape) (moved, error) {
		m, err := step(ctx, tx, s)
		if err != nil {
			return m, restoreError(t, err)
		}
		return m, nil
	})
	if err != nil {
		return res, err
	}
	if a.AfterCommit != nil {
		if err := a.AfterCommit(ctx, res); err != nil {
			return MoveBatchResult{}, err
		}
	}
	return res, nil
}

// restoreRows is moveRows the other way: the batch's rows leave the
// archive table and go back into the live table, the live columns only
// (its generated columns computed anew, its identity values kept).
func restoreRows(ctx context.Context, tx pgx.Tx, s shape, in MoveBatchInput) (moved, error) {
	rev := s
	rev.live, rev.archive = s.archive, s.live
	rev.table.Where, rev.holds = nil, nil
	// Any rows of the window, in no order and without a cursor: the
	// archive has no index on the time column (archiving does not need
	// one), and ordering would sort the rest of the window in every batch
	// (1,500 rows/s on a 1M-row window, measured).
	in.Cursor = nil
	b := newBatchSQL(rev, in)
	b.anyOrder = true
	ins, overriding := s.live.InsertColumns(s.copy)
	sql := fmt.Sprintf(`
WITH %s,
moved AS (
    %s
    RETURNING %s, l.archive_batch_id AS archiver_from, pg_column_size(l.*) AS archiver_row_bytes, %s AS archiver_ts, %s AS archiver_key
), ins AS (
    INSERT INTO %s (%s) %s
    SELECT %s FROM moved
    RETURNING 1
), origin AS (
    SELECT jsonb_object_agg(f, n) AS restored_from
    FROM (SELECT archiver_from::text AS f, count(*) AS n FROM moved GROUP BY 1) o
), totals AS (
    SELECT (SELECT count(*) FROM ins) AS inserted, count(*) AS expected,
           COALESCE(sum(archiver_row_bytes), 0)::bigint AS bytes,
           min(archiver_ts) AS min_ts, max(archiver_ts) AS max_ts,
           (SELECT archiver_key::text FROM moved ORDER BY archiver_ts DESC, archiver_key DESC LIMIT 1) AS last_key
    FROM moved
)
UPDATE archive_batches ab
SET rows_moved = t.inserted, rows_deleted = t.expected, bytes = t.bytes, min_ts = t.min_ts, max_ts = t.max_ts,
    last_ts = t.max_ts, last_key = t.last_key, restored_from = (SELECT restored_from FROM origin), committed_at = now()
FROM totals t
WHERE ab.batch_id = %s
RETURNING t.inserted, 0::bigint, t.expected, t.expected, t.bytes, t.min_ts, t.max_ts, t.last_key`,
		b.selectBatch(), b.deleteBatch(),
		catalog.QuoteAll("l.", s.copy), b.tsExpr("l."), b.keyExpr("l."),
		catalog.QuoteName(s.live.Name), catalog.QuoteAll("", ins), overriding, catalog.QuoteAll("", ins),
		b.arg(in.BatchID))
	return b.run(ctx, tx, sql)
}

// RestoreExportInput restores one export of a dropped partition.
type RestoreExportInput struct {
	Table    string
	Entry    *policy.Table `json:",omitempty"`
	JobID    string
	BatchID  string
	ExportID int64
}

// RestoreExport brings the rows of an exported, dropped partition back to
// the live table in one transaction: the object is downloaded and checked
// against the manifest's SHA-256, loaded into a temporary table of the
// manifest's columns, checked against its row count and content checksum,
// and only then inserted into the live table (its own columns), with the
// export marked restored and the ledger row written. A retry finds the
// ledger row; a second restore finds the export restored.
func (a *Activities) RestoreExport(ctx context.Context, in RestoreExportInput) (MoveBatchResult, error) {
	t, err := entryFor(in.Table, in.Entry)
	if err != nil {
		return MoveBatchResult{}, err
	}
	e, err := scanExport(a.DB.QueryRow(ctx, `SELECT `+exportColumns+` FROM archive_exports WHERE id = $1`, in.ExportID))
	if err != nil {
		return MoveBatchResult{}, fmt.Errorf("read export %d: %w", in.ExportID, err)
	}
	if e.Table != t.Archive {
		return MoveBatchResult{}, invalid("restore export", fmt.Errorf("export %d is of %s, not %s", e.ID, e.Table, t.Archive))
	}
	mv := MoveBatchInput{Table: in.Table, Entry: in.Entry, JobID: in.JobID, BatchID: in.BatchID, Cutoff: e.Upper, Limit: 1}
	var recorded bool
	if err := a.DB.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM archive_batches WHERE batch_id = $1)`, in.BatchID).Scan(&recorded); err != nil {
		return MoveBatchResult{}, err
	}
	if !recorded && e.State != ExportDropped {
		return MoveBatchResult{}, cannotRestore("export %d (%s) is %s, not dropped: %s", e.ID, e.Partition, e.State,
			map[bool]string{true: "its rows were restored already", false: "its partition is still in the archive"}[e.State == ExportRestored])
	}
	var local *os.File
	if !recorded {
		store, err := a.bucketStore(ctx, e.Bucket)
		if err != nil {
			return MoveBatchResult{}, err
		}
		if local, err = a.download(ctx, store.Get, e); err != nil {
			return MoveBatchResult{}, err
		}
		defer os.Remove(local.Name())
		defer local.Close()
	}
	stop := keepAlive(ctx, fmt.Sprintf("restore export %d: loading, checking and inserting %d rows", e.ID, e.Rows))
	defer stop()
	return a.restoreOnce(ctx, t, mv, e.ID, func(ctx context.Context, tx pgx.Tx, s shape) (moved, error) {
		return restoreFromFile(ctx, tx, s, e, local, in.BatchID)
	})
}

// download fetches an export's object into the export directory and
// checks its SHA-256 and size against the manifest.
func (a *Activities) download(ctx context.Context, get func(context.Context, string) (io.ReadCloser, error), e Export) (*os.File, error) {
	body, err := get(ctx, e.Key)
	if err != nil {
		return nil, storageError(err)
	}
	defer body.Close()
	f, err := os.CreateTemp(a.exportDir(), "archiver-restore-*")
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), &progressReader{r: body, ctx: ctx, at: time.Now()})
	if err == nil && (n != e.Bytes || hex.EncodeToString(h.Sum(nil)) != e.SHA256) {
		err = temporal.NewNonRetryableApplicationError(fmt.Sprintf("export %d (%s): the object is not what was exported (%d bytes, SHA-256 differs or size; manifest: %d bytes)", e.ID, e.Location(), n, e.Bytes), ErrExportMismatch, nil)
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return f, nil
}

// restoreFromFile loads the export into a temporary table, checks it
// against the manifest, and inserts it into the live table.
func restoreFromFile(ctx context.Context, tx pgx.Tx, s shape, e Export, f *os.File, batchID string) (moved, error) {
	var m moved
	const stage = "archiver_restore_stage"
	if _, err := tx.Exec(ctx, coldstore.TableSQL("CREATE TEMP TABLE", stage, e.Columns)+" ON COMMIT DROP"); err != nil {
		return m, fmt.Errorf("make the staging table: %w", err)
	}
	loaded, err := loadExport(ctx, tx, e, f, stage)
	if err != nil {
		return m, err
	}
	var n int64
	var sum string
	if err := tx.QueryRow(ctx, coldstore.ChecksumSQL(stage, e.Columns)).Scan(&n, &sum); err != nil {
		return m, err
	}
	if n != e.Rows || sum != e.Checksum || loaded != e.Rows {
		return m, temporal.NewNonRetryableApplicationError(fmt.Sprintf("export %d (%s): read back %d rows with checksum %s; the manifest says %d rows, %s",
			e.ID, e.Location(), n, sum, e.Rows, e.Checksum), ErrExportMismatch, nil)
	}
	for _, c := range s.copy {
		if !columnIn(e.Columns, c) {
			lc, _ := s.live.Column(c)
			if lc.NotNull && !lc.HasDefault {
				return m, invalid("restore export", fmt.Errorf("%s.%s (NOT NULL, no default) was added after export %d was made: the export has no values for it", s.live.Name, c, e.ID))
			}
		}
	}
	var cols []string
	for _, c := range s.copy {
		if columnIn(e.Columns, c) {
			cols = append(cols, c)
		}
	}
	cols, overriding := s.live.InsertColumns(cols)
	hasBatch := columnIn(e.Columns, "archive_batch_id")
	from := "NULL::jsonb"
	if hasBatch {
		from = `(SELECT jsonb_object_agg(b, k) FROM (SELECT archive_batch_id::text AS b, count(*) AS k FROM ` + stage + ` GROUP BY 1) o)`
	}
	ts := catalog.Quote(s.timeColumn)
	err = tx.QueryRow(ctx, fmt.Sprintf(`
WITH ins AS (
    INSERT INTO %[1]s (%[2]s) %[6]s SELECT %[2]s FROM %[3]s RETURNING 1
), marked AS (
    UPDATE archive_exports SET state = 'restored', restored_at = now() WHERE id = $1 AND state = 'dropped' RETURNING 1
)
UPDATE archive_batches ab
SET rows_moved = (SELECT count(*) FROM ins), rows_deleted = $3, bytes = $4,
    min_ts = (SELECT min(%[4]s)::timestamptz FROM %[3]s), max_ts = (SELECT max(%[4]s)::timestamptz FROM %[3]s),
    restored_from = %[5]s, committed_at = now()
WHERE ab.batch_id = $2 AND (SELECT count(*) FROM marked) = 1
RETURNING rows_moved, min_ts, max_ts`,
		catalog.QuoteName(s.live.Name), catalog.QuoteAll("", cols), stage, ts, from, overriding),
		e.ID, batchID, e.Rows, e.Bytes).Scan(&m.inserted, &m.minTS, &m.maxTS)
	if errors.Is(err, pgx.ErrNoRows) {
		return m, cannotRestore("export %d was restored by another run meanwhile", e.ID)
	}
	if err != nil {
		return m, fmt.Errorf("restore export %d into %s: %w", e.ID, s.live.Name, err)
	}
	m.expected, m.deleted, m.bytes = e.Rows, e.Rows, e.Bytes
	return m, nil
}

// restoreError turns what the live table refuses into a non-retryable
// error that says what to do: retrying cannot create a partition or remove
// a conflicting row.
func restoreError(t policy.Table, err error) error {
	var pgErr *pgconn.PgError
	switch {
	case isMissingPartition(err):
		return cannotRestore("%s has no partition for some restored rows (%s): create the live partitions of the window (or a DEFAULT partition) and restore again", t.Live, pgErr2(err))
	case errors.As(err, &pgErr) && pgErr.Code == "23505":
		// The key's values stay out of the message (and the history).
		return cannotRestore("%s already holds a row with the key of a restored row (constraint %s): the live row was made anew since; remove one of them and restore again", t.Live, pgErr.ConstraintName)
	}
	return err
}

func pgErr2(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Message
	}
	return err.Error()
}

func columnIn(cols []coldstore.Column, name string) bool {
	for _, c := range cols {
		if c.Name == name {
			return true
		}
	}
	return false
}
