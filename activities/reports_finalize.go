package activities

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/mockupaws/archiver/internal/objectstore"
)

// FinalizeReportInput moves one report's metadata under BatchID.
type FinalizeReportInput struct {
	ReportID string
	JobID    string
	BatchID  string
	Object   ReportObject
}

// FinalizeReportResult is what the ledger recorded for the report.
type FinalizeReportResult struct {
	RowsMoved int64
	Bytes     int64
	Replayed  bool
}

// FinalizeReport confirms the object once more (HeadObject: present, same
// server checksum, same source checksum), then in one transaction under the
// ledger protocol inserts the reports_archive row (s3_location, the file's
// size, checksums in extra_data) and deletes the reports row.
func (a *Activities) FinalizeReport(ctx context.Context, in FinalizeReportInput) (FinalizeReportResult, error) {
	t, err := tableFor("reports")
	if err != nil {
		return FinalizeReportResult{}, err
	}
	if err := a.verifyObject(ctx, in.Object.Key, in.Object.SourceSHA256, in.Object.Checksum); err != nil {
		return FinalizeReportResult{}, err
	}
	res, err := a.runBatch(ctx, t, func(ctx context.Context, tx pgx.Tx, _ MoveBatchInput) (moved, error) {
		var m moved
		err := tx.QueryRow(ctx, finalizeReportSQL, in.BatchID, in.ReportID, a.Store.Location(in.Object.Key),
			in.Object.SourceBytes, in.Object.SourceSHA256, in.Object.Size, in.Object.Checksum, in.Object.Compression).
			Scan(&m.inserted, &m.deleted, &m.bytes, &m.minTS, &m.maxTS)
		m.expected = m.deleted
		return m, err
	}, MoveBatchInput{Table: t.Name, JobID: in.JobID, BatchID: in.BatchID, Cutoff: time.Now().UTC(), Limit: 1})
	if err != nil {
		return FinalizeReportResult{}, err
	}
	return FinalizeReportResult{RowsMoved: res.RowsMoved, Bytes: res.Bytes, Replayed: res.Replayed}, nil
}

// finalizeReportSQL: $1 batch, $2 report id, $3 s3 location, $4 original
// bytes, $5 original SHA-256 (hex), $6 object bytes, $7 the server's object
// checksum, $8 compression.
const finalizeReportSQL = `
WITH moved AS (
    DELETE FROM reports r WHERE r.id = $2
    RETURNING r.*
), ins AS (
    INSERT INTO reports_archive
        (id, scenario_id, format, file_path, file_size_bytes, generated_by, extra_data,
         created_at, s3_location, deleted_locally, archive_batch_id)
    SELECT id, scenario_id, format, file_path, $4::bigint, generated_by,
           COALESCE(extra_data, '{}'::jsonb) || jsonb_build_object('archive', jsonb_build_object(
               'source_sha256', $5::text, 'original_bytes', $4::bigint, 'object_bytes', $6::bigint,
               'object_checksum_sha256', $7::text, 'compression', $8::text)),
           created_at, $3, false, $1
    FROM moved
    RETURNING 1
), totals AS (
    SELECT (SELECT count(*) FROM ins) AS inserted, count(*) AS deleted,
           CASE WHEN count(*) > 0 THEN $4::bigint ELSE 0 END AS bytes,
           min(created_at) AS min_ts, max(created_at) AS max_ts
    FROM moved
)
UPDATE archive_batches ab
SET rows_moved = t.inserted, rows_deleted = t.deleted, bytes = t.bytes,
    min_ts = t.min_ts, max_ts = t.max_ts, committed_at = now()
FROM totals t
WHERE ab.batch_id = $1
RETURNING t.inserted, t.deleted, t.bytes, t.min_ts, t.max_ts`

// verifyObject confirms an object exists with the source checksum (and, when
// given, the server checksum) recorded at upload.
func (a *Activities) verifyObject(ctx context.Context, key, sourceSHA256, checksum string) error {
	if a.Store == nil {
		return temporal.NewNonRetryableApplicationError("reports archiving is not configured: set REPORTS_ARCHIVE_BUCKET", ErrStorageConfig, nil)
	}
	obj, err := a.Store.Head(ctx, key)
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
}

// RemoveReportFile removes the local file of an archived report, after
// confirming its object once more, and sets deleted_locally. Idempotent: a
// file already gone is fine; a report already marked is left alone.
func (a *Activities) RemoveReportFile(ctx context.Context, in RemoveReportFileInput) error {
	var filePath, location, sourceSHA string
	var created time.Time
	var deleted bool
	err := a.DB.QueryRow(ctx, `
		SELECT file_path, COALESCE(s3_location, ''), deleted_locally, created_at,
		       COALESCE(extra_data->'archive'->>'source_sha256', '')
		FROM reports_archive WHERE id = $1`, in.ReportID).Scan(&filePath, &location, &deleted, &created, &sourceSHA)
	if errors.Is(err, pgx.ErrNoRows) {
		return temporal.NewNonRetryableApplicationError("report "+in.ReportID+" is not archived: its file is kept", ErrInvalidInput, nil)
	}
	if err != nil {
		return fmt.Errorf("look up archived report %s: %w", in.ReportID, err)
	}
	if deleted {
		return nil
	}
	prefix := "s3://" + a.storeBucket() + "/"
	if !strings.HasPrefix(location, prefix) {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("report %s is archived to %q, not this bucket: its file is kept", in.ReportID, location), ErrStorageConfig, nil)
	}
	if err := a.verifyObject(ctx, strings.TrimPrefix(location, prefix), sourceSHA, ""); err != nil {
		return err
	}
	path, err := ResolveReportPath(a.ReportsDir, filePath)
	switch {
	case err == nil:
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove local file of report %s: %w", in.ReportID, err)
		}
	case err.Error() == "the local file is missing":
		// Removed by an attempt that crashed before recording it.
	default:
		return temporal.NewNonRetryableApplicationError("report "+in.ReportID+": "+err.Error(), ErrReportUnavailable, nil)
	}
	if _, err := a.DB.Exec(ctx, `UPDATE reports_archive SET deleted_locally = true WHERE id = $1 AND created_at = $2`, in.ReportID, created); err != nil {
		return fmt.Errorf("mark report %s removed: %w", in.ReportID, err)
	}
	return nil
}

func (a *Activities) storeBucket() string {
	if a.Store == nil {
		return ""
	}
	return a.Store.Bucket()
}

// CompleteRemovalsInput bounds one sweep.
type CompleteRemovalsInput struct {
	Limit int
}

// CompleteRemovalsResult counts what the sweep did.
type CompleteRemovalsResult struct {
	Removed int
	Failed  int
}

// CompleteRemovals finishes the file removals that a crash interrupted:
// archived reports whose local file is not yet marked removed.
func (a *Activities) CompleteRemovals(ctx context.Context, in CompleteRemovalsInput) (CompleteRemovalsResult, error) {
	var out CompleteRemovalsResult
	if a.Store == nil {
		return out, nil // nothing can have been archived to a bucket without one
	}
	rows, err := a.DB.Query(ctx, `
		SELECT id::text FROM reports_archive
		WHERE NOT deleted_locally AND s3_location IS NOT NULL
		ORDER BY created_at LIMIT $1`, in.Limit)
	if err != nil {
		return out, fmt.Errorf("find interrupted removals: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return out, fmt.Errorf("find interrupted removals: %w", err)
	}
	for _, id := range ids {
		if err := a.RemoveReportFile(ctx, RemoveReportFileInput{ReportID: id}); err != nil {
			out.Failed++
			if activity.IsActivity(ctx) {
				activity.GetLogger(ctx).Warn("interrupted removal not completed", "report", id, "error", err.Error())
			}
			continue
		}
		out.Removed++
	}
	return out, nil
}
