-- A partition exchange that cannot complete puts the partition back into the
-- live table: its ledger row is then 'returned' (nothing moved; the note
-- says why), so that later runs are not blocked behind it and move the
-- partition's rows by batches instead.
ALTER TABLE archive_batches DROP CONSTRAINT archive_batches_state_check;
ALTER TABLE archive_batches ADD CONSTRAINT archive_batches_state_check
    CHECK (state IN ('exchanging', 'done', 'returned'));
ALTER TABLE archive_batches ADD COLUMN note TEXT;
-- Where the live partition was ({schema, name}), to put it back there.
ALTER TABLE archive_batches ADD COLUMN partition_origin TEXT[];
-- The foreign keys the partition declared (the live table's, kept by the
-- detach) that the exchange dropped before the attach: an archived row
-- neither follows a cascade nor holds back the application's deletes.
ALTER TABLE archive_batches ADD COLUMN dropped_constraints TEXT[];

-- Archive growth counts what was archived: not restores, nor exchanges
-- that put their partition back.
CREATE OR REPLACE VIEW v_archive_growth AS
SELECT date_trunc('month', b.committed_at, 'UTC') AS archive_month,
       CASE b.table_name
           WHEN 'scenario_logs' THEN 'logs'
           WHEN 'scenario_metrics' THEN 'metrics'
           WHEN 'reports' THEN 'reports'
           ELSE b.table_name
       END AS archive_type,
       COUNT(*) AS batches,
       SUM(b.rows_moved)::bigint AS records_archived,
       SUM(b.bytes)::bigint AS bytes_archived
FROM archive_batches b
WHERE b.kind <> 'restore' AND b.state <> 'returned'
GROUP BY 1, 2;
