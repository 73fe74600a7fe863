package activities

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/policy"
)

// PreviewInput asks what a run would archive from one table.
type PreviewInput struct {
	Table  string
	Cutoff time.Time
	After  time.Time `json:",omitzero"` // a backfill window's lower bound
	// RetentionLimit, when set, also lists the archive partitions that
	// retention would remove.
	RetentionLimit time.Time
	// Entry is the table's policy entry in force (nil: the built-in table
	// of that name).
	Entry *policy.Table `json:",omitempty"`
}

// PreviewResult is a dry run's answer for one table.
type PreviewResult struct {
	Table              string
	Rows               int64
	Bytes              int64
	Oldest             *time.Time
	Newest             *time.Time
	PartitionsToCreate []string
	PartitionsToDrop   []string `json:",omitempty"`
	// ArchiveToCreate and ArchiveDDL: the archive table a real run would
	// make first (a declared entry's first run).
	ArchiveToCreate string `json:",omitempty"`
	ArchiveDDL      string `json:",omitempty"`
	// PartitionsToExchange are the live partitions a run would move whole;
	// ExchangeSkipped says why others in range would move by batches.
	PartitionsToExchange []string `json:",omitempty"`
	ExchangeSkipped      []string `json:",omitempty"`
}

// Preview reports the eligible rows, their bytes and time range, and the
// partitions a real run would create. It runs in a READ ONLY transaction, so
// a dry run cannot write even by mistake.
func (a *Activities) Preview(ctx context.Context, in PreviewInput) (PreviewResult, error) {
	t, err := entryFor(in.Table, in.Entry)
	if err != nil {
		return PreviewResult{}, err
	}
	out := PreviewResult{Table: t.Name}
	tx, err := a.DB.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return out, fmt.Errorf("preview %s: %w", t.Live, err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	s, err := preflight(ctx, tx, t)
	if err != nil {
		return out, err
	}
	if s.planned {
		stmts, err := createArchiveSQL(t, s.live)
		if err != nil {
			return out, err
		}
		out.ArchiveToCreate, out.ArchiveDDL = t.Archive, stmts[0]
	}
	ex, err := listExchangeable(ctx, tx, t, in.After, in.Cutoff)
	if err != nil {
		return out, err
	}
	for _, c := range ex.Candidates {
		out.PartitionsToExchange = append(out.PartitionsToExchange, c.Partition)
	}
	out.ExchangeSkipped = ex.Skipped
	w := newFilter(t, s.live)
	sql := fmt.Sprintf(`
		SELECT count(*), COALESCE(sum(pg_column_size(l.*)), 0)::bigint, min(l.%[1]s)::timestamptz, max(l.%[1]s)::timestamptz
		FROM %[2]s l WHERE l.%[1]s < $1::timestamptz AND l.%[1]s >= $2::timestamptz%[3]s`,
		catalog.Quote(t.TimeColumn), catalog.QuoteName(t.Live), w.sql("l.", 3))
	if err := tx.QueryRow(ctx, sql, append([]any{in.Cutoff, in.After}, w.args...)...).Scan(&out.Rows, &out.Bytes, &out.Oldest, &out.Newest); err != nil {
		return out, fmt.Errorf("preview %s: %w", t.Live, err)
	}
	out.Oldest, out.Newest = utc(out.Oldest), utc(out.Newest)
	if !in.RetentionLimit.IsZero() {
		expired, err := expiredPartitions(ctx, tx, t, in.RetentionLimit)
		if err != nil {
			return out, err
		}
		for _, p := range expired {
			out.PartitionsToDrop = append(out.PartitionsToDrop, p.name)
		}
	}
	if out.Oldest == nil {
		return out, nil
	}
	existing, err := partitionsByName(ctx, tx, t)
	if err != nil {
		return out, err
	}
	needed, err := periodsWithRows(ctx, tx, t, in.After, in.Cutoff)
	if err != nil {
		return out, err
	}
	for _, m := range needed {
		if name := PartitionName(t, m.start); existing[name].name == "" {
			out.PartitionsToCreate = append(out.PartitionsToCreate, name)
		}
	}
	return out, nil
}
