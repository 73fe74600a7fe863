package estimate

import (
	"context"
	"fmt"
	"time"

	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/policy"
)

// estimateOffload measures an offload entry's files. Sizes come from where
// the archiver records them: each archive row's object record (the built-in
// reports: extra_data->'archive'; a declared entry: archive_info) holds
// original_bytes and object_bytes (compressed); the built-in live table's
// file_size_bytes gives the files not archived yet. An archive row without
// an object record counts its file_size_bytes (uncompressed) instead.
//
// An object's tier is decided by its age since upload (archived_at) against
// the bucket lifecycle in prices, as S3 decides it: Standard, then Glacier
// after GlacierAfterDays, gone after ExpireAfterDays.
func estimateOffload(ctx context.Context, db catalog.Querier, t policy.Table, live, archive catalog.Table, now time.Time, prices Prices, e *Table) (Offload, error) {
	var o Offload
	expireCut := now.Add(-time.Duration(prices.ExpireAfterDays) * policy.Day)
	glacierCut := expireCut
	if prices.GlacierAfterDays > 0 {
		glacierCut = now.Add(-time.Duration(prices.GlacierAfterDays) * policy.Day)
	}

	// The objects already offloaded, and the compression they got.
	var archivedFileBytes float64 // average original size of archived files
	if archive.Exists() {
		info := "NULL::jsonb"
		if _, ok := archive.Column("archive_info"); ok && !t.Seed() {
			info = "a.archive_info::jsonb"
		} else if _, ok := archive.Column("extra_data"); ok {
			info = "a.extra_data::jsonb -> 'archive'"
		}
		fallback := "NULL::int8"
		if _, ok := archive.Column("file_size_bytes"); ok {
			fallback = "a.file_size_bytes::int8"
		}
		uploaded := "a." + catalog.Quote(t.TimeColumn) + "::timestamptz"
		if _, ok := archive.Column("archived_at"); ok {
			uploaded = "a.archived_at"
		}
		located := "true"
		if _, ok := archive.Column("s3_location"); ok {
			located = "a.s3_location IS NOT NULL"
		}
		sql := fmt.Sprintf(`
SELECT count(*) FILTER (WHERE x.uploaded >= $2),
       COALESCE(sum(x.obj) FILTER (WHERE x.uploaded >= $1), 0)::int8,
       COALESCE(sum(x.obj) FILTER (WHERE x.uploaded < $1 AND x.uploaded >= $2), 0)::int8,
       count(*) FILTER (WHERE x.uploaded >= $2 AND x.recorded IS NULL),
       COALESCE(sum(x.recorded) FILTER (WHERE x.original > 0), 0)::float8,
       COALESCE(sum(x.original) FILTER (WHERE x.recorded IS NOT NULL AND x.original > 0), 0)::float8,
       COALESCE(avg(COALESCE(x.original, x.fallback)), 0)::float8
FROM %s a
CROSS JOIN LATERAL (SELECT %s AS uploaded,
                           (%s ->> 'object_bytes')::int8 AS recorded,
                           (%s ->> 'original_bytes')::int8 AS original,
                           %s AS fallback) y
CROSS JOIN LATERAL (SELECT y.uploaded, y.recorded, y.original, y.fallback,
                           COALESCE(y.recorded, y.fallback) AS obj) x
WHERE %s`, catalog.QuoteName(t.Archive), uploaded, info, info, fallback, located)
		var unrecorded int64
		var recordedSum, originalSum float64
		if err := db.QueryRow(ctx, sql, glacierCut, expireCut).Scan(&o.ObjectsNow, &o.S3StandardBytesNow, &o.GlacierBytesNow,
			&unrecorded, &recordedSum, &originalSum, &archivedFileBytes); err != nil {
			return o, fmt.Errorf("read the offloaded objects of %s: %w", t.Archive, err)
		}
		o.OffloadedBytesNow = o.S3StandardBytesNow + o.GlacierBytesNow
		if unrecorded > 0 {
			e.note("%d offloaded objects without an object record: counted at their file size", unrecorded)
		}
		if originalSum > 0 {
			o.CompressionRatio = recordedSum / originalSum
		}
	}
	if o.CompressionRatio == 0 {
		o.CompressionRatio = 1
		if e.RowsPerDay > 0 {
			e.note("no archived object records: objects assumed as large as their files")
		}
	}

	// The files still local: the live rows' file sizes.
	var liveCount, sized int64
	var sizedSum, recentAvg, allAvg float64
	if _, ok := live.Column("file_size_bytes"); ok {
		tc := catalog.Quote(t.TimeColumn)
		sql := fmt.Sprintf(`
SELECT count(*), count(file_size_bytes), COALESCE(sum(file_size_bytes), 0)::float8,
       COALESCE(avg(file_size_bytes) FILTER (WHERE %s >= $1::timestamptz AND %s < $2::timestamptz), 0)::float8,
       COALESCE(avg(file_size_bytes), 0)::float8
FROM %s`, tc, tc, catalog.QuoteName(t.Live))
		if err := db.QueryRow(ctx, sql, now.Add(-WindowDays*policy.Day), now).Scan(&liveCount, &sized, &sizedSum, &recentAvg, &allAvg); err != nil {
			return o, fmt.Errorf("read the file sizes of %s: %w", t.Live, err)
		}
	} else if err := db.QueryRow(ctx, `SELECT count(*) FROM `+catalog.QuoteName(t.Live)).Scan(&liveCount); err != nil {
		return o, fmt.Errorf("count the rows of %s: %w", t.Live, err)
	}
	// The average file: the window's, else all live rows', else the
	// archived files'.
	switch {
	case recentAvg > 0:
		o.FileBytes = recentAvg
	case allAvg > 0:
		o.FileBytes = allAvg
	case archivedFileBytes > 0:
		o.FileBytes = archivedFileBytes
	default:
		if liveCount > 0 || e.RowsPerDay > 0 {
			e.note("file sizes unknown: no file_size_bytes column and nothing archived with a size")
		}
	}
	o.LocalBytesNow = round(sizedSum + float64(liveCount-sized)*o.FileBytes)
	if liveCount > sized && o.FileBytes > 0 {
		e.note("%d local files without a recorded size: counted at the average", liveCount-sized)
	}
	o.ObjectBytes = o.FileBytes * o.CompressionRatio

	// Steady state: a day's files stay local for archive-after days, then
	// as objects in Standard until the Glacier transition and in Glacier
	// until they expire.
	expire := float64(prices.ExpireAfterDays)
	standardDays, glacierDays := expire, 0.0
	if prices.GlacierAfterDays > 0 {
		standardDays, glacierDays = float64(prices.GlacierAfterDays), expire-float64(prices.GlacierAfterDays)
	}
	o.LocalBytesSteady = round(e.RowsPerDay * t.ArchiveAfter.Hours() / 24 * o.FileBytes)
	o.S3StandardBytesSteady = round(e.RowsPerDay * standardDays * o.ObjectBytes)
	o.GlacierBytesSteady = round(e.RowsPerDay * glacierDays * o.ObjectBytes)
	if !t.Seed() {
		e.note("objects assumed under a lifecycle like `starter bucket apply`'s, which covers archived-reports/ only")
	}
	return o, nil
}
