-- One daily aggregate per (scenario, metric type, name, unit, day): the key
-- that late samples for an already aggregated day merge into
-- (INSERT ... ON CONFLICT DO UPDATE). Raw rows, were any archived, have a
-- NULL aggregation_period and so never conflict. The partition key
-- ("timestamp") is part of the key, as PostgreSQL requires.
CREATE UNIQUE INDEX scenario_metrics_archive_group_day_key
    ON scenario_metrics_archive (scenario_id, metric_type, metric_name, unit, aggregation_period, timestamp);

-- Metrics are archived a whole UTC day at a time, read by day range.
-- (scenario_metrics_timestamp_id_idx from 001 serves the range scans.)

-- Aggregates a batch merged into (late samples for a day archived before)
-- keep the batch id that created them; the ledger counts them apart, so that
-- rows_moved stays equal to the rows carrying the batch's id.
ALTER TABLE archive_batches ADD COLUMN rows_merged BIGINT NOT NULL DEFAULT 0;
