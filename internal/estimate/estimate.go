// Package estimate computes the seed's storage estimate (daily volume, size
// before and after archiving, savings, monthly cost per tier) from the
// database itself instead of a hand-made table: for each policy entry the
// ingest rate of the last 30 days, the bytes a row takes, the hot and
// archive sizes now and at the steady state the policy leads to, the files
// offloaded to S3 and the partitions exported, priced per tier.
//
// It only reads. Every identifier in its SQL comes from a policy entry
// (checked by policy.Table.CheckNames) and is quoted; every value is a
// parameter.
//
// How bytes per row are measured: the average pg_column_size of whole rows
// (the tuple as stored: header, null bitmap, data, TOASTed values at their
// compressed size) over a block sample (TABLESAMPLE SYSTEM, about
// SampleRows rows, REPEATABLE so that two runs agree) or, for a small
// table, over up to SampleRows rows; each row rounded up to the 8-byte
// alignment tuples are stored at, plus its 4-byte line pointer, scaled by
// the page header's share of a page. Indexes add the table's ratio of
// index to heap bytes. Not pg_total_relation_size / reltuples: after an
// archive run the live table keeps its pages (until VACUUM FULL or
// pg_repack) while its rows are gone, and that ratio would then count the
// emptied pages as the size of every remaining row.
package estimate

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/policy"
)

// WindowDays is the span the ingest rate is measured over, ending at now.
const WindowDays = 30

// SampleRows is about how many rows the bytes per row are averaged over.
const SampleRows = 10000

// Report is the estimate for a policy.
type Report struct {
	AsOf time.Time `json:"as_of"`
	// The ingest rate is measured over [WindowStart, AsOf).
	WindowStart time.Time `json:"window_start"`
	WindowDays  int       `json:"window_days"`
	Tables      []Table   `json:"tables"`
	Totals      Totals    `json:"totals"`
	// Costs has one entry per storage tier, in a fixed order.
	Costs  []TierCost `json:"monthly_cost"`
	Prices Prices     `json:"prices"`
}

// Table is one policy entry's estimate. "Now" is what the database holds;
// "steady" is what it holds once the policy has run for longer than the
// entry's retention at the current ingest rate. Sizes are bytes.
type Table struct {
	Name             string `json:"name"`
	Mode             string `json:"mode"`
	Live             string `json:"live_table"`
	Archive          string `json:"archive_table"`
	ArchiveAfterDays int    `json:"archive_after_days"`
	RetentionDays    int    `json:"retention_days"`

	// RecentRows are the live rows whose time column is in the window;
	// RowsPerDay is RecentRows / WindowDays. NoRecentRows: none.
	RecentRows   int64   `json:"recent_rows"`
	RowsPerDay   float64 `json:"rows_per_day"`
	NoRecentRows bool    `json:"no_recent_rows"`

	// RowBytes is a live row's heap bytes, IndexBytesPerRow its share of
	// the live indexes, BytesPerRow their sum; SampledRows says how many
	// rows RowBytes is the average of.
	RowBytes         float64 `json:"row_bytes"`
	IndexBytesPerRow float64 `json:"index_bytes_per_row"`
	BytesPerRow      float64 `json:"bytes_per_row"`
	SampledRows      int64   `json:"sampled_rows"`

	// Hot: the live table with its indexes (pg_total_relation_size,
	// summed over partitions or inheritance children). HotRowsSteady is
	// RowsPerDay × ArchiveAfterDays.
	HotBytesNow    int64   `json:"hot_bytes_now"`
	HotRowsSteady  float64 `json:"hot_rows_steady"`
	HotBytesSteady int64   `json:"hot_bytes_steady"`

	// Archive: the archive table with its indexes, summed over its
	// partitions. ArchiveRowsPerDay is RowsPerDay, or for a downsample the
	// aggregates a day makes (distinct groups per bucket over the window);
	// ArchiveRowsSteady is that × (RetentionDays − ArchiveAfterDays).
	ArchiveRowsPerDay  float64 `json:"archive_rows_per_day"`
	ArchiveBytesPerRow float64 `json:"archive_bytes_per_row"`
	ArchiveBytesNow    int64   `json:"archive_bytes_now"`
	ArchiveRowsSteady  float64 `json:"archive_rows_steady"`
	ArchiveBytesSteady int64   `json:"archive_bytes_steady"`

	// Offload holds the files of an offload entry (nil for the others).
	Offload *Offload `json:"offload,omitempty"`

	// ExportedBytes and ExportedRows are the entry's rows in
	// archive_exports (0 when that table does not exist).
	ExportedBytes int64 `json:"exported_bytes"`
	ExportedRows  int64 `json:"exported_rows"`

	// SavingsPercent compares the hot footprint (live table plus local
	// files) now with the steady state; nil when nothing is hot now.
	SavingsPercent *float64 `json:"savings_percent"`

	// Notes say what was assumed or could not be measured.
	Notes []string `json:"notes,omitempty"`
}

// Offload is an offload entry's files: on the local disk while their rows
// are live, then compressed objects in S3 Standard, then in Glacier, until
// the bucket's lifecycle expires them.
type Offload struct {
	// FileBytes is the average file's size; CompressionRatio the average
	// object's size over its file's (1 when nothing is archived yet);
	// ObjectBytes their product.
	FileBytes        float64 `json:"file_bytes"`
	CompressionRatio float64 `json:"compression_ratio"`
	ObjectBytes      float64 `json:"object_bytes"`

	LocalBytesNow    int64 `json:"local_bytes_now"`
	LocalBytesSteady int64 `json:"local_bytes_steady"`

	// Objects now (not yet expired): from the archive rows' object
	// records (object_bytes), or their file sizes where a row has none.
	ObjectsNow            int64 `json:"objects_now"`
	OffloadedBytesNow     int64 `json:"offloaded_bytes_now"`
	S3StandardBytesNow    int64 `json:"s3_standard_bytes_now"`
	GlacierBytesNow       int64 `json:"glacier_bytes_now"`
	S3StandardBytesSteady int64 `json:"s3_standard_bytes_steady"`
	GlacierBytesSteady    int64 `json:"glacier_bytes_steady"`
}

// Totals sums the tables.
type Totals struct {
	HotBytesNow           int64    `json:"hot_bytes_now"`
	HotBytesSteady        int64    `json:"hot_bytes_steady"`
	ArchiveBytesNow       int64    `json:"archive_bytes_now"`
	ArchiveBytesSteady    int64    `json:"archive_bytes_steady"`
	LocalBytesNow         int64    `json:"local_bytes_now"`
	LocalBytesSteady      int64    `json:"local_bytes_steady"`
	S3StandardBytesNow    int64    `json:"s3_standard_bytes_now"`
	S3StandardBytesSteady int64    `json:"s3_standard_bytes_steady"`
	GlacierBytesNow       int64    `json:"glacier_bytes_now"`
	GlacierBytesSteady    int64    `json:"glacier_bytes_steady"`
	ExportedBytes         int64    `json:"exported_bytes"`
	SavingsPercent        *float64 `json:"savings_percent"`
	MonthlyNow            float64  `json:"monthly_usd_now"`
	MonthlySteady         float64  `json:"monthly_usd_steady"`
}

// The storage tiers, in the order Costs lists them.
const (
	TierPGHot      = "postgresql_hot"
	TierPGArchive  = "postgresql_archive"
	TierLocalFiles = "local_files"
	TierS3Standard = "s3_standard"
	TierS3Glacier  = "s3_glacier"
)

// TierCost is one storage tier's bytes and monthly cost (US dollars), now
// and at the steady state.
type TierCost struct {
	Tier          string  `json:"tier"`
	BytesNow      int64   `json:"bytes_now"`
	BytesSteady   int64   `json:"bytes_steady"`
	USDPerGBMonth float64 `json:"usd_per_gb_month"`
	PriceEnv      string  `json:"price_env"`
	PriceAssumed  bool    `json:"price_assumed"`
	MonthlyNow    float64 `json:"monthly_usd_now"`
	MonthlySteady float64 `json:"monthly_usd_steady"`
}

// Compute measures every entry of tables in db as of now. Nothing is
// written.
func Compute(ctx context.Context, db catalog.Querier, tables []policy.Table, now time.Time, prices Prices) (Report, error) {
	now = now.UTC()
	if prices.ExpireAfterDays <= 0 {
		prices.ExpireAfterDays = DefaultExpireAfterDays
	}
	if prices.GlacierAfterDays < 0 || prices.GlacierAfterDays >= prices.ExpireAfterDays {
		prices.GlacierAfterDays = 0
	}
	r := Report{AsOf: now, WindowStart: now.Add(-WindowDays * policy.Day), WindowDays: WindowDays, Prices: prices, Tables: []Table{}}
	exports, err := findExports(ctx, db)
	if err != nil {
		return r, err
	}
	for _, t := range tables {
		e, err := estimateTable(ctx, db, t, now, prices, exports)
		if err != nil {
			return r, fmt.Errorf("estimate %s: %w", t.Name, err)
		}
		r.Tables = append(r.Tables, e)
	}
	r.total()
	return r, nil
}

func estimateTable(ctx context.Context, db catalog.Querier, t policy.Table, now time.Time, prices Prices, exports exportsTable) (Table, error) {
	t = policy.Normalize(t)
	e := Table{Name: t.Name, Mode: t.ModeOf(), Live: t.Live, Archive: t.Archive,
		ArchiveAfterDays: int(t.ArchiveAfter / policy.Day), RetentionDays: int(t.Retention / policy.Day)}
	if err := t.CheckNames(); err != nil {
		return e, err
	}
	var err error
	if e.ExportedBytes, e.ExportedRows, err = exports.of(ctx, db, t); err != nil {
		return e, err
	}
	live, err := catalog.Describe(ctx, db, t.Live)
	if err != nil {
		return e, err
	}
	archive, err := catalog.Describe(ctx, db, t.Archive)
	if err != nil {
		return e, err
	}
	var liveSize, archiveSize relSize
	if archive.Exists() {
		if archiveSize, err = sizeOf(ctx, db, archive); err != nil {
			return e, err
		}
		e.ArchiveBytesNow = archiveSize.total
	} else {
		e.note("archive table %s does not exist yet", t.Archive)
	}
	if !live.Exists() {
		e.note("live table %s does not exist", t.Live)
		e.NoRecentRows = true
		return e, nil
	}
	if liveSize, err = sizeOf(ctx, db, live); err != nil {
		return e, err
	}
	e.HotBytesNow = liveSize.total
	if _, ok := live.Column(t.TimeColumn); !ok {
		e.note("live table %s has no column %s: no rate", t.Live, t.TimeColumn)
		e.NoRecentRows = true
		return e, nil
	}

	// Ingest rate over the window.
	windowStart := now.Add(-WindowDays * policy.Day)
	if err := db.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s WHERE %s >= $1::timestamptz AND %s < $2::timestamptz`,
		catalog.QuoteName(t.Live), catalog.Quote(t.TimeColumn), catalog.Quote(t.TimeColumn)), windowStart, now).Scan(&e.RecentRows); err != nil {
		return e, fmt.Errorf("count the rows of %s since %s: %w", t.Live, windowStart.Format(time.RFC3339), err)
	}
	e.RowsPerDay = float64(e.RecentRows) / WindowDays
	e.NoRecentRows = e.RecentRows == 0
	if e.NoRecentRows {
		e.note("no recent rows: nothing in %s since %s", t.Live, windowStart.Format(time.DateOnly))
	}
	if len(t.Where) > 0 {
		e.note("where conditions not applied: assumes every row ages out")
	}

	// Bytes per live row.
	heap, n, err := sampleRowBytes(ctx, db, t.Live, liveSize.tuples)
	if err != nil {
		return e, err
	}
	e.SampledRows = n
	e.RowBytes = heap
	e.IndexBytesPerRow = heap * liveSize.indexRatio()
	e.BytesPerRow = e.RowBytes + e.IndexBytesPerRow
	if n == 0 {
		e.note("no live rows to measure bytes per row")
	}
	archiveAfterDays := t.ArchiveAfter.Hours() / 24
	archivedDays := (t.Retention - t.ArchiveAfter).Hours() / 24
	e.HotRowsSteady = e.RowsPerDay * archiveAfterDays
	e.HotBytesSteady = round(e.HotRowsSteady * e.BytesPerRow)

	// The archive: its rows a day and bytes per row.
	e.ArchiveRowsPerDay = e.RowsPerDay
	if e.Mode == policy.ModeDownsample {
		if e.ArchiveRowsPerDay, err = aggregatesPerDay(ctx, db, t, now); err != nil {
			return e, err
		}
	}
	var archiveHeap float64
	var archiveSampled int64
	if archive.Exists() {
		if archiveHeap, archiveSampled, err = sampleRowBytes(ctx, db, t.Archive, archiveSize.tuples); err != nil {
			return e, err
		}
	}
	if archiveSampled > 0 {
		e.ArchiveBytesPerRow = archiveHeap * (1 + archiveSize.indexRatio())
	} else if e.RowBytes > 0 {
		// Nothing archived to measure: a live row plus the archive's own
		// columns (archived_at, archive_batch_id: 24 bytes), indexed like
		// the live table.
		e.ArchiveBytesPerRow = (e.RowBytes + 24) * (1 + liveSize.indexRatio())
		what := "an archived row"
		if e.Mode == policy.ModeDownsample {
			what = "an aggregate"
		}
		e.note("nothing archived yet: %s assumed to take a live row's bytes plus 24", what)
	}
	e.ArchiveRowsSteady = e.ArchiveRowsPerDay * archivedDays
	e.ArchiveBytesSteady = round(e.ArchiveRowsSteady * e.ArchiveBytesPerRow)

	if t.Export != nil && e.ArchiveRowsPerDay > 0 {
		// Exports are not projected: they keep what retention passes on,
		// with no end.
		if e.ExportedRows > 0 {
			perRow := float64(e.ExportedBytes) / float64(e.ExportedRows)
			e.note("exports grow by about %.0f bytes a day (%.1f rows at %.0f B each) once retention reaches the rows; counted at their present size",
				e.ArchiveRowsPerDay*perRow, e.ArchiveRowsPerDay, perRow)
		} else {
			e.note("exports grow by about %.1f rows a day once retention reaches the rows; counted at their present size", e.ArchiveRowsPerDay)
		}
	}

	if e.Mode == policy.ModeOffload {
		o, err := estimateOffload(ctx, db, t, live, archive, now, prices, &e)
		if err != nil {
			return e, err
		}
		e.Offload = &o
	}
	hotNow, hotSteady := e.HotBytesNow, e.HotBytesSteady
	if e.Offload != nil {
		hotNow += e.Offload.LocalBytesNow
		hotSteady += e.Offload.LocalBytesSteady
	}
	e.SavingsPercent = savings(hotNow, hotSteady)
	return e, nil
}

func (e *Table) note(format string, args ...any) {
	e.Notes = append(e.Notes, fmt.Sprintf(format, args...))
}

// savings is the share of now that the steady state does without, in
// percent (negative when the steady state is larger); nil when now is 0.
func savings(now, steady int64) *float64 {
	if now <= 0 {
		return nil
	}
	s := 100 * float64(now-steady) / float64(now)
	return &s
}

func round(f float64) int64 {
	if f <= 0 || math.IsNaN(f) {
		return 0
	}
	return int64(math.Round(f))
}

// total fills the totals and the per-tier costs.
func (r *Report) total() {
	tt := &r.Totals
	for _, e := range r.Tables {
		tt.HotBytesNow += e.HotBytesNow
		tt.HotBytesSteady += e.HotBytesSteady
		tt.ArchiveBytesNow += e.ArchiveBytesNow
		tt.ArchiveBytesSteady += e.ArchiveBytesSteady
		tt.ExportedBytes += e.ExportedBytes
		if o := e.Offload; o != nil {
			tt.LocalBytesNow += o.LocalBytesNow
			tt.LocalBytesSteady += o.LocalBytesSteady
			tt.S3StandardBytesNow += o.S3StandardBytesNow
			tt.S3StandardBytesSteady += o.S3StandardBytesSteady
			tt.GlacierBytesNow += o.GlacierBytesNow
			tt.GlacierBytesSteady += o.GlacierBytesSteady
		}
	}
	tt.SavingsPercent = savings(tt.HotBytesNow+tt.LocalBytesNow, tt.HotBytesSteady+tt.LocalBytesSteady)
	// Exported partitions are S3 Standard objects (the lifecycle rule
	// covers the offloaded reports only); they are counted at their
	// present size in the steady state too.
	tiers := []struct {
		tier        string
		now, steady int64
		price       Price
	}{
		{TierPGHot, tt.HotBytesNow, tt.HotBytesSteady, r.Prices.PG},
		{TierPGArchive, tt.ArchiveBytesNow, tt.ArchiveBytesSteady, r.Prices.PG},
		{TierLocalFiles, tt.LocalBytesNow, tt.LocalBytesSteady, r.Prices.Local},
		{TierS3Standard, tt.S3StandardBytesNow + tt.ExportedBytes, tt.S3StandardBytesSteady + tt.ExportedBytes, r.Prices.S3},
		{TierS3Glacier, tt.GlacierBytesNow, tt.GlacierBytesSteady, r.Prices.Glacier},
	}
	r.Costs = r.Costs[:0]
	for _, x := range tiers {
		c := TierCost{Tier: x.tier, BytesNow: x.now, BytesSteady: x.steady,
			USDPerGBMonth: x.price.USDPerGBMonth, PriceEnv: x.price.Env, PriceAssumed: x.price.Assumed,
			MonthlyNow: MonthlyCost(x.now, x.price.USDPerGBMonth), MonthlySteady: MonthlyCost(x.steady, x.price.USDPerGBMonth)}
		tt.MonthlyNow += c.MonthlyNow
		tt.MonthlySteady += c.MonthlySteady
		r.Costs = append(r.Costs, c)
	}
}
