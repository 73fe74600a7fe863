package activities

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/objectstore"
	"github.com/mockupaws/archiver/internal/policy"
)

// FinalizeReportInput moves one report's metadata under BatchID.
type FinalizeReportInput struct {
	ReportID string
	JobID    string
	BatchID  string
	Object   ReportObject
	// Table and Entry name the offload entry ("" and nil: the built-in
	// reports table).
	Table string        `json:",omitempty"`
	Entry *policy.Table `json:",omitempty"`
}

// FinalizeReportResult is what the ledger recorded for the report.
type FinalizeReportResult struct {
	RowsMoved int64
	Bytes     int64
	Replayed  bool
}

// FinalizeReport confirms the object once more (HeadObject: present, same
// server checksum, same source checksum), then in one transaction under the
// ledger protocol locks the report's row, checks that neither its
// file_path nor its file changed since the upload (else the archive would
// point at an object of other content), inserts the reports_archive row
// (every live column, s3_location, the file's size, checksums in
// extra_data) and deletes the reports row.
func (a *Activities) FinalizeReport(ctx context.Context, in FinalizeReportInput) (FinalizeReportResult, error) {
	t, err := entryFor(offloadName(in.Table), in.Entry)
	if err != nil {
		return FinalizeReportResult{}, err
	}
	o, err := a.offloadFor(ctx, t)
	if err != nil {
		return FinalizeReportResult{}, err
	}
	if err := verifyObject(ctx, o.store, in.Object.Key, in.Object.SourceSHA256, in.Object.Checksum); err != nil {
		return FinalizeReportResult{}, err
	}
	res, err := a.runBatch(ctx, t, func(ctx context.Context, tx pgx.Tx, s shape, _ MoveBatchInput) (moved, error) {
		return a.finalizeRow(ctx, tx, s, o, in)
	}, MoveBatchInput{Table: t.Name, Entry: in.Entry, JobID: in.JobID, BatchID: in.BatchID, Cutoff: time.Now().UTC(), Limit: 1})
	if err != nil {
		return FinalizeReportResult{}, err
	}
	return FinalizeReportResult{RowsMoved: res.RowsMoved, Bytes: res.Bytes, Replayed: res.Replayed}, nil
}

// finalizeRow moves one report's row inside the batch's transaction.
func (a *Activities) finalizeRow(ctx context.Context, tx pgx.Tx, s shape, o offload, in FinalizeReportInput) (moved, error) {
	var m moved
	t := s.table
	// The row is checked again against what the listing chose it by (the
	// job's cut-off, the entry's filter, the restores' holds), as a move
	// batch's DELETE does: the application may have changed it since so
	// that the policy keeps it.
	var cutoff time.Time
	if err := tx.QueryRow(ctx, `SELECT cutoff FROM archive_jobs WHERE id = $1`, in.JobID).Scan(&cutoff); err != nil {
		return m, fmt.Errorf("read the cut-off of job %s: %w", in.JobID, err)
	}
	var filePath string
	var due bool
	q := newBatchSQL(s, MoveBatchInput{Cutoff: cutoff})
	cond := q.eligible()
	err := tx.QueryRow(ctx, fmt.Sprintf(`SELECT %s::text, COALESCE((%s), false) FROM %s l WHERE %s FOR UPDATE`,
		catalog.Quote(t.PathColumn), cond, catalog.QuoteName(t.Live), o.keyMatch("l.", q.arg(in.ReportID))), q.args...).Scan(&filePath, &due)
	if errors.Is(err, pgx.ErrNoRows) {
		return m, recordEmpty(ctx, tx, in.BatchID) // gone meanwhile: nothing to move
	}
	if err != nil {
		return m, fmt.Errorf("lock report %s: %w", in.ReportID, err)
	}
	if !due {
		return m, recordEmpty(ctx, tx, in.BatchID) // the policy keeps it now: nothing to move
	}
	if in.Object.PathSHA256 != "" && sha256Hex(filePath) != in.Object.PathSHA256 {
		return m, temporal.NewNonRetryableApplicationError(fmt.Sprintf("report %s: its %s changed since the upload: not archived against the old object; the next run uploads it again",
			in.ReportID, t.PathColumn), ErrReportUnavailable, nil)
	}
	if in.Object.SourceModTime != 0 {
		path, err := ResolveReportPath(o.root, filePath)
		if err != nil {
			return m, temporal.NewNonRetryableApplicationError("report "+in.ReportID+": "+err.Error(), ErrReportUnavailable, nil)
		}
		st, err := os.Stat(path)
		if err != nil {
			return m, temporal.NewNonRetryableApplicationError("report "+in.ReportID+": cannot read the file: "+err.Error(), ErrReportUnavailable, nil)
		}
		if st.Size() != in.Object.SourceBytes || st.ModTime().UnixNano() != in.Object.SourceModTime {
			return m, temporal.NewNonRetryableApplicationError(fmt.Sprintf("report %s: its file changed since the upload: not archived against the old object; the next run uploads it again",
				in.ReportID), ErrReportUnavailable, nil)
		}
	}
	b := newBatchSQL(s, MoveBatchInput{BatchID: in.BatchID})
	id := b.arg(in.ReportID)
	values := make([]string, len(s.copy))
	for i, c := range s.copy {
		values[i] = catalog.Quote(c)
	}
	// The object's checksums and sizes: in a declared entry's archive_info
	// column; for the built-in reports table in extra_data.archive (merged
	// into the live row's extra_data), with file_size_bytes the file's size
	// as uploaded.
	info := fmt.Sprintf(`jsonb_build_object(
               'source_sha256', %s::text, 'original_bytes', %s::bigint, 'object_bytes', %s::bigint,
               'object_checksum_sha256', %s::text, 'compression', %s::text)`,
		b.arg(in.Object.SourceSHA256), b.arg(in.Object.SourceBytes), b.arg(in.Object.Size), b.arg(in.Object.Checksum), b.arg(in.Object.Compression))
	cols := append([]string(nil), s.copy...)
	if t.Seed() {
		wrapped := "jsonb_build_object('archive', " + info + ")"
		for i, c := range cols {
			switch c {
			case "file_size_bytes":
				values[i] = b.arg(in.Object.SourceBytes)
			case "extra_data":
				values[i] = "COALESCE(extra_data::jsonb, '{}'::jsonb) || " + wrapped
			}
		}
		if _, ok := s.live.Column("extra_data"); !ok {
			if _, ok := s.archive.Column("extra_data"); ok {
				cols, values = append(cols, "extra_data"), append(values, wrapped)
			}
		}
	} else {
		cols, values = append(cols, "archive_info"), append(values, info)
	}
	sql := fmt.Sprintf(`
WITH moved AS (
    DELETE FROM %s l WHERE %s
    RETURNING l.*, 0 AS archiver_row_bytes, %s AS archiver_ts, NULL::text AS archiver_key
), ins AS (
    INSERT INTO %s (%s, s3_location, deleted_locally, archive_batch_id)
    SELECT %s, %s, false, %s FROM moved
    RETURNING 1
)%s`,
		catalog.QuoteName(t.Live), o.keyMatch("l.", id), b.tsExpr("l."),
		catalog.QuoteName(t.Archive), catalog.QuoteAll("", cols),
		strings.Join(values, ", "), b.arg(o.location(in.Object.Key)), b.arg(in.BatchID),
		b.recordTotals("(SELECT count(*) FROM ins)", "0", "count(*)"))
	if m, err = b.run(ctx, tx, sql); err != nil {
		return m, err
	}
	if m.deleted != 1 {
		return m, fmt.Errorf("report %s: %d rows carry this id; archive them by hand", in.ReportID, m.deleted)
	}
	// The batch's bytes are the file's (the row's size is not the point).
	if _, err := tx.Exec(ctx, `UPDATE archive_batches SET bytes = $2 WHERE batch_id = $1`, in.BatchID, in.Object.SourceBytes); err != nil {
		return m, err
	}
	m.bytes = in.Object.SourceBytes
	return m, nil
}

// verifyObject confirms an object exists with the source checksum (and, when
// given, the server checksum) recorded at upload.
func verifyObject(ctx context.Context, store *objectstore.Store, key, sourceSHA256, checksum string) error {
	obj, err := store.Head(ctx, key)
	if errors.Is(err, objectstore.ErrNotFound) {
		return fmt.Errorf("object %s is missing: nothing deleted", key)
	}
	if err != nil {
		return storageError(err)
	}
	if obj.Metadata["source-sha256"] != sourceSHA256 || checksum != "" && obj.Checksum != checksum {
		return fmt.Errorf("object %s does not match the uploaded checksums: nothing deleted", key)
	}
	return nil
}

// RemoveReportFileInput names an archived report whose local file goes.
type RemoveReportFileInput struct {
	ReportID string
	// Table and Entry name the offload entry ("" and nil: the built-in
	// reports table).
	Table string        `json:",omitempty"`
	Entry *policy.Table `json:",omitempty"`
}

// RemoveReportFileResult says whether the file went, and why not.
type RemoveReportFileResult struct {
	Removed bool
	// Kept says why the file stays: another live report still points at
	// it (it goes when that one is archived), or it changed since it was
	// archived.
	Kept string `json:",omitempty"`
}

// Reasons a local file is kept.
const (
	keptShared  = "another live report still uses the file"
	keptChanged = "the file changed since it was archived"
	keptDeleted = "the report was deleted before it was archived"
	// keptRequalified: changed before its move so that the policy keeps it
	// (FinalizeReport moved nothing).
	keptRequalified = "the report no longer qualified when its row was to move"
)

// RemoveReportFile removes the local file of an archived report and sets
// deleted_locally, only when all of these hold: the object is still there
// with the checksums recorded; the file's content is still the content
// uploaded (it is hashed again); no live report row points at the same
// file (two rows may share one; the younger must keep it). A changed file
// is kept and marked so (extra_data.archive.kept), and the report fails
// with that reason. Idempotent: a file already gone is fine; a report
// already marked is left alone.
func (a *Activities) RemoveReportFile(ctx context.Context, in RemoveReportFileInput) (RemoveReportFileResult, error) {
	var out RemoveReportFileResult
	t, err := entryFor(offloadName(in.Table), in.Entry)
	if err != nil {
		return out, err
	}
	o, err := a.offloadFor(ctx, t)
	if err != nil {
		return out, err
	}
	var filePath, location, sourceSHA, kept string
	var created time.Time
	var deleted bool
	err = a.DB.QueryRow(ctx, fmt.Sprintf(`
		SELECT %[1]s::text, COALESCE(s3_location, ''), deleted_locally, %[2]s::timestamptz,
		       COALESCE(%[4]s->>'source_sha256', ''), COALESCE(%[4]s->>'kept', '')
		FROM %[3]s a WHERE %[5]s`, catalog.Quote(t.PathColumn), catalog.Quote(t.TimeColumn), catalog.QuoteName(t.Archive), o.info(), o.keyMatch("a.", "$1")), in.ReportID).
		Scan(&filePath, &location, &deleted, &created, &sourceSHA, &kept)
	if errors.Is(err, pgx.ErrNoRows) {
		// Still live, it keeps its file. Gone from the live table too, the
		// application deleted it before its move (finalize moved nothing):
		// its file is the application's, and nothing failed.
		var live bool
		if err := a.DB.QueryRow(ctx, fmt.Sprintf(`SELECT EXISTS (SELECT 1 FROM %s l WHERE %s)`, catalog.QuoteName(t.Live), o.keyMatch("l.", "$1")), in.ReportID).Scan(&live); err != nil {
			return out, fmt.Errorf("look up report %s: %w", in.ReportID, err)
		}
		if !live {
			out.Kept = keptDeleted
			return out, nil
		}
		due, err := a.stillDue(ctx, t, in.ReportID)
		if err != nil {
			return out, err
		}
		if !due {
			out.Kept = keptRequalified
			return out, nil
		}
		return out, temporal.NewNonRetryableApplicationError("report "+in.ReportID+" is not archived: its file is kept", ErrInvalidInput, nil)
	}
	if err != nil {
		return out, fmt.Errorf("look up archived report %s: %w", in.ReportID, err)
	}
	if deleted {
		return out, nil
	}
	if kept != "" {
		out.Kept = kept
		return out, nil
	}
	key, ok := trimLocation(location, o.prefix())
	if !ok {
		return out, temporal.NewNonRetryableApplicationError(fmt.Sprintf("report %s is archived to %q, not this bucket: its file is kept", in.ReportID, location), ErrStorageConfig, nil)
	}
	if err := verifyObject(ctx, o.store, key, sourceSHA, ""); err != nil {
		return out, err
	}
	path, err := ResolveReportPath(o.root, filePath)
	switch {
	case err == nil:
		shared, err := a.sharedFile(ctx, o, path, filePath)
		if err != nil {
			return out, err
		}
		if shared {
			out.Kept = keptShared // not marked: when the other report goes, so does the file
			return out, nil
		}
		sum, _, err := hashFile(ctx, path)
		if err != nil {
			return out, fmt.Errorf("hash the local file of report %s again: %w", in.ReportID, err)
		}
		if sum != sourceSHA {
			if _, err := a.DB.Exec(ctx, fmt.Sprintf(`UPDATE %s a SET %s WHERE %s AND %s = $2`,
				catalog.QuoteName(t.Archive), o.setKept(), o.keyMatch("a.", "$1"), catalog.Quote(t.TimeColumn)), in.ReportID, created, keptChanged); err != nil {
				return out, fmt.Errorf("mark the file of report %s kept: %w", in.ReportID, err)
			}
			return out, temporal.NewNonRetryableApplicationError(fmt.Sprintf("report %s: %s: it is kept (the archived object holds the content as uploaded)", in.ReportID, keptChanged), ErrReportUnavailable, nil)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return out, fmt.Errorf("remove local file of report %s: %w", in.ReportID, err)
		}
	case err.Error() == "the local file is missing":
		// Removed by an attempt that crashed before recording it, or with
		// another report that shared it.
	default:
		return out, temporal.NewNonRetryableApplicationError("report "+in.ReportID+": "+err.Error(), ErrReportUnavailable, nil)
	}
	if _, err := a.DB.Exec(ctx, fmt.Sprintf(`UPDATE %s a SET deleted_locally = true WHERE %s AND %s = $2`,
		catalog.QuoteName(t.Archive), o.keyMatch("a.", "$1"), catalog.Quote(t.TimeColumn)), in.ReportID, created); err != nil {
		return out, fmt.Errorf("mark report %s removed: %w", in.ReportID, err)
	}
	out.Removed = true
	return out, nil
}

// stillDue says whether a live report still qualifies for archiving as
// FinalizeReport checks it: through the entry's filter, outside the
// restores' holds, and older than the cut-off of the job that last
// recorded a batch of the table (when there is one).
func (a *Activities) stillDue(ctx context.Context, t policy.Table, id string) (bool, error) {
	s, err := inspect(ctx, a.DB, t)
	if err != nil {
		return false, err
	}
	if s.holds, err = activeHolds(ctx, a.DB, t); err != nil {
		return false, err
	}
	var cutoff *time.Time
	err = a.DB.QueryRow(ctx, `SELECT j.cutoff FROM archive_batches b JOIN archive_jobs j ON j.id = b.job_id
		WHERE b.table_name = $1 ORDER BY b.committed_at DESC LIMIT 1`, t.Live).Scan(&cutoff)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return false, fmt.Errorf("read the last cut-off of %s: %w", t.Live, err)
	}
	in := MoveBatchInput{Cutoff: time.Date(294276, 1, 1, 0, 0, 0, 0, time.UTC)}
	if cutoff != nil {
		in.Cutoff = *cutoff
	}
	o, err := a.offloadFor(ctx, t)
	if err != nil {
		return false, err
	}
	q := newBatchSQL(s, in)
	cond := q.eligible()
	var due bool
	if err := a.DB.QueryRow(ctx, fmt.Sprintf(`SELECT COALESCE((%s), false) FROM %s l WHERE %s`,
		cond, catalog.QuoteName(t.Live), o.keyMatch("l.", q.arg(id))), q.args...).Scan(&due); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return false, fmt.Errorf("check report %s against the policy: %w", id, err)
	}
	return due, nil
}

// sharedFile reports whether a live report row points at the file at real
// (resolved) path. Rows naming it by another spelling (./a/x, an absolute
// path, a symlink of the same base name) count too: candidates are the rows
// whose path ends in the file's base name, each resolved like the upload
// resolves it.
func (a *Activities) sharedFile(ctx context.Context, o offload, real, filePath string) (bool, error) {
	t := o.t
	bases := []string{filepath.Base(real), filepath.Base(filePath)}
	rows, err := a.DB.Query(ctx, fmt.Sprintf(`
		SELECT DISTINCT %[1]s::text FROM %[2]s
		WHERE %[1]s::text = $1 OR %[1]s::text = ANY ($2) OR right(%[1]s::text, length($3) + 1) = '/' || $3 OR right(%[1]s::text, length($4) + 1) = '/' || $4`,
		catalog.Quote(t.PathColumn), catalog.QuoteName(t.Live)), filePath, bases, bases[0], bases[1])
	if err != nil {
		return false, fmt.Errorf("look for live reports sharing %s: %w", filepath.Base(real), err)
	}
	paths, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return false, fmt.Errorf("look for live reports sharing %s: %w", filepath.Base(real), err)
	}
	for _, p := range paths {
		if other, err := ResolveReportPath(o.root, p); err == nil && other == real {
			return true, nil
		}
	}
	return false, nil
}

// CompleteRemovalsInput bounds one sweep.
type CompleteRemovalsInput struct {
	Limit int
	// Table and Entry name the offload entry ("" and nil: the built-in
	// reports table).
	Table string        `json:",omitempty"`
	Entry *policy.Table `json:",omitempty"`
}

// CompleteRemovalsResult counts what the sweep did.
type CompleteRemovalsResult struct {
	Removed int
	Failed  int
	// Kept counts files still used by a live report.
	Kept int `json:",omitempty"`
}

// CompleteRemovals finishes the file removals that a crash interrupted,
// and those kept while another live report used the file: archived reports
// whose local file is not yet marked removed, all of them, a page of Limit
// at a time (so files kept for a long time never starve the others).
func (a *Activities) CompleteRemovals(ctx context.Context, in CompleteRemovalsInput) (CompleteRemovalsResult, error) {
	var out CompleteRemovalsResult
	if in.Limit <= 0 {
		in.Limit = 1000
	}
	t, err := entryFor(offloadName(in.Table), in.Entry)
	if err != nil {
		return out, err
	}
	if t.Seed() && a.Store == nil {
		return out, nil // nothing can have been archived to a bucket without one
	}
	o, err := a.offloadFor(ctx, t)
	if err != nil {
		return out, err
	}
	if archive, err := catalog.Describe(ctx, a.DB, t.Archive); err != nil || !archive.Exists() {
		return out, err // a declared entry's first run: nothing archived yet
	}
	var afterTS *time.Time
	afterID := ""
	for {
		rows, err := a.DB.Query(ctx, fmt.Sprintf(`
			SELECT %[4]s::text, %[1]s::timestamptz FROM %[2]s
			WHERE NOT deleted_locally AND s3_location IS NOT NULL AND NOT COALESCE(%[3]s ? 'kept', false)
			  AND ($2::timestamptz IS NULL OR (%[1]s::timestamptz, %[4]s::text) > ($2::timestamptz, $3::text))
			ORDER BY %[1]s::timestamptz, %[4]s::text LIMIT $1`, catalog.Quote(t.TimeColumn), catalog.QuoteName(t.Archive), o.info(), catalog.Quote(o.key)), in.Limit, afterTS, afterID)
		if err != nil {
			return out, fmt.Errorf("find interrupted removals: %w", err)
		}
		type pending struct {
			id string
			ts time.Time
		}
		page, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (pending, error) {
			var p pending
			return p, r.Scan(&p.id, &p.ts)
		})
		if err != nil {
			return out, fmt.Errorf("find interrupted removals: %w", err)
		}
		for _, p := range page {
			r, err := a.RemoveReportFile(ctx, RemoveReportFileInput{ReportID: p.id, Table: in.Table, Entry: in.Entry})
			switch {
			case err != nil:
				out.Failed++
				if activity.IsActivity(ctx) {
					activity.GetLogger(ctx).Warn("interrupted removal not completed", "report", p.id, "error", err.Error())
				}
			case r.Removed:
				out.Removed++
			default:
				out.Kept++
			}
		}
		if activity.IsActivity(ctx) {
			activity.RecordHeartbeat(ctx, out)
		}
		if len(page) < in.Limit {
			return out, nil
		}
		last := page[len(page)-1]
		afterTS, afterID = &last.ts, last.id
	}
}
