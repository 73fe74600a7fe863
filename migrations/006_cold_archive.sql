-- The cold archive (README "The cold archive"): every archive partition
-- past retention is exported to S3 and verified before it is dropped. A
-- manifest row is committed before the upload (state 'uploading', with the
-- object's key, size and SHA-256 and the rows' count and content checksum),
-- marked 'verified' once the object read back from S3 matches, and
-- 'dropped' once the partition is gone; a crash anywhere in between
-- resumes from this row: the object is reused, never uploaded twice, and
-- the partition never dropped unverified. A restore brings an export's
-- rows back to the live table and marks it 'restored'.
CREATE TABLE archive_exports (
    id               BIGSERIAL PRIMARY KEY,
    table_name       TEXT NOT NULL,          -- the archive table
    partition_name   TEXT NOT NULL,
    lower_bound      TIMESTAMPTZ NOT NULL,
    upper_bound      TIMESTAMPTZ NOT NULL,
    format           TEXT NOT NULL CHECK (format IN ('parquet', 'csv')),
    bucket           TEXT NOT NULL,
    object_key       TEXT NOT NULL,
    rows             BIGINT NOT NULL,
    bytes            BIGINT NOT NULL,
    sha256           TEXT NOT NULL,          -- hex, of the whole object
    content_checksum TEXT NOT NULL,          -- order-independent, of the rows (see activities/export.go)
    columns          JSONB NOT NULL,         -- [{name, type}] as exported
    batches          JSONB,                  -- {archive batch id: rows} in the export
    state            TEXT NOT NULL DEFAULT 'uploading'
                     CHECK (state IN ('uploading', 'verified', 'dropped', 'restored')),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    verified_at      TIMESTAMPTZ,
    dropped_at       TIMESTAMPTZ,
    restored_at      TIMESTAMPTZ
);
-- One live export per partition; a partition made again later (rows
-- restored and archived anew) gets a new one.
CREATE UNIQUE INDEX archive_exports_partition_idx ON archive_exports (table_name, partition_name)
    WHERE state IN ('uploading', 'verified');
CREATE INDEX archive_exports_bounds_idx ON archive_exports (table_name, lower_bound);

-- A restore moves rows back under the same ledger protocol as a batch:
-- kind 'restore' (rows from archive partitions or from an export).
ALTER TABLE archive_batches DROP CONSTRAINT archive_batches_kind_check;
ALTER TABLE archive_batches ADD CONSTRAINT archive_batches_kind_check
    CHECK (kind IN ('rows', 'partition', 'restore'));
-- The export a restore read from, and how many rows of each archive batch
-- a restore took back ({batch id: rows}), so that `starter verify` can still
-- account for every batch's rows.
ALTER TABLE archive_batches ADD COLUMN export_id BIGINT REFERENCES archive_exports (id);
ALTER TABLE archive_batches ADD COLUMN restored_from JSONB;

GRANT SELECT, INSERT, UPDATE ON archive_exports TO archiver_worker;
GRANT USAGE ON SEQUENCE archive_exports_id_seq TO archiver_worker;

-- A restore holds its window: archive runs leave the live rows of an active
-- hold where they are until it ends, so rows brought back stay back.
CREATE TABLE archive_holds (
    id           BIGSERIAL PRIMARY KEY,
    table_name   TEXT NOT NULL,              -- the live table
    after_ts     TIMESTAMPTZ NOT NULL,
    before_ts    TIMESTAMPTZ NOT NULL,
    hold_until   TIMESTAMPTZ NOT NULL,
    workflow_id  TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (workflow_id, table_name),
    CHECK (after_ts < before_ts)
);
CREATE INDEX archive_holds_table_idx ON archive_holds (table_name, hold_until);
GRANT SELECT, INSERT, UPDATE ON archive_holds TO archiver_worker;
GRANT USAGE ON SEQUENCE archive_holds_id_seq TO archiver_worker;

-- Archive growth counts what was archived, not what restores took back.
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
WHERE b.kind <> 'restore'
GROUP BY 1, 2;
