package main

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// clientBatch is the batch size of the hand-written loop: the size ours
// uses for logs, and pt-archiver's usual --limit range.
const clientBatch = 10_000

// logsClientLoop is what people write instead of an archiver, the shape
// pt-archiver runs: select a batch of rows into the client in key order,
// COPY them into the archive, DELETE them by key, commit; repeat from the
// last key. It is the bound_client of the logs workload, and it checks what
// it did: every row moved once.
func logsClientLoop(ctx context.Context, pool *pgxpool.Pool, cutoff time.Time) (int64, error) {
	cols := []string{"id", "scenario_id", "received_at", "message_hash", "message_preview", "source", "size_bytes", "has_pii", "token_count", "sqs_blocks", "archive_batch_id"}
	lastTS := time.Time{}
	lastID := uuid.Nil
	var total int64
	for {
		var n int64
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			batchID := uuid.New()
			rows, err := tx.Query(ctx, `SELECT `+logColumns+` FROM scenario_logs
				WHERE received_at < $1 AND (received_at, id) > ($2, $3)
				ORDER BY received_at, id LIMIT $4 FOR UPDATE`, cutoff, lastTS, lastID, clientBatch)
			if err != nil {
				return err
			}
			var batch [][]any
			var ids []uuid.UUID
			for rows.Next() {
				v, err := rows.Values()
				if err != nil {
					rows.Close()
					return err
				}
				id, ok := v[0].([16]byte)
				if !ok {
					rows.Close()
					return fmt.Errorf("id is %T", v[0])
				}
				ids = append(ids, uuid.UUID(id))
				lastTS, lastID = v[2].(time.Time), uuid.UUID(id)
				batch = append(batch, append(v, batchID))
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			if len(batch) == 0 {
				return nil
			}
			copied, err := tx.CopyFrom(ctx, pgx.Identifier{"scenario_logs_archive"}, cols, pgx.CopyFromRows(batch))
			if err != nil {
				return fmt.Errorf("copy: %w", err)
			}
			tag, err := tx.Exec(ctx, `DELETE FROM scenario_logs WHERE id = ANY($1)`, ids)
			if err != nil {
				return fmt.Errorf("delete: %w", err)
			}
			if copied != int64(len(batch)) || tag.RowsAffected() != copied {
				return fmt.Errorf("batch of %d rows: copied %d, deleted %d", len(batch), copied, tag.RowsAffected())
			}
			n = copied
			return nil
		})
		if err != nil {
			return total, err
		}
		total += n
		if n < clientBatch {
			return total, nil
		}
	}
}
