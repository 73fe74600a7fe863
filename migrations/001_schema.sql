-- The archiver's schema. The live tables belong to the application and are
-- created here only when absent (same columns as the seed), so the archiver
-- can run and be tested on its own.

-- Live tables --------------------------------------------------------------

CREATE TABLE IF NOT EXISTS scenario_logs (
    id              UUID PRIMARY KEY,
    scenario_id     UUID NOT NULL,
    received_at     TIMESTAMPTZ NOT NULL,
    message_hash    VARCHAR(64) NOT NULL,
    message_preview VARCHAR(500),
    source          VARCHAR(100) NOT NULL,
    size_bytes      INTEGER NOT NULL,
    has_pii         BOOLEAN NOT NULL,
    token_count     INTEGER NOT NULL,
    sqs_blocks      INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS scenario_metrics (
    id          UUID PRIMARY KEY,
    scenario_id UUID NOT NULL,
    timestamp   TIMESTAMPTZ NOT NULL,
    metric_type VARCHAR(50) NOT NULL,
    metric_name VARCHAR(100) NOT NULL,
    value       DECIMAL(15,6) NOT NULL,
    unit        VARCHAR(20) NOT NULL,
    extra_data  JSONB DEFAULT '{}'
);

CREATE TABLE IF NOT EXISTS reports (
    id              UUID PRIMARY KEY,
    scenario_id     UUID NOT NULL,
    format          VARCHAR(10) NOT NULL,
    file_path       VARCHAR(500) NOT NULL,
    file_size_bytes INTEGER,
    generated_by    VARCHAR(100),
    extra_data      JSONB DEFAULT '{}',
    created_at      TIMESTAMPTZ NOT NULL
);

-- The archiver walks each live table in (time, id) order below a cut-off.
-- Those indexes are not made here: a plain CREATE INDEX in this transaction
-- would stop the application's writes for the whole build. migrations.Up
-- builds them after the migrations, with CREATE INDEX CONCURRENTLY outside a
-- transaction, reusing an equivalent index whatever its name
-- (EnsureLiveIndexes in live_indexes.go). Installs migrated before this
-- change already have them, under the same names.

-- Archive tables -----------------------------------------------------------
-- Partitioned by RANGE on the timestamp column itself (monthly partitions
-- named <table>_yYYYYmMM, created by the archiver before it inserts).
-- PostgreSQL requires the partition key in every unique constraint, hence the
-- composite primary keys; the seed's PARTITION BY RANGE (DATE_TRUNC(...)) with
-- "id UUID PRIMARY KEY" is rejected by PostgreSQL.

CREATE TABLE scenario_logs_archive (
    id               UUID NOT NULL,
    scenario_id      UUID NOT NULL,
    received_at      TIMESTAMPTZ NOT NULL,
    message_hash     VARCHAR(64) NOT NULL,
    message_preview  VARCHAR(500),
    source           VARCHAR(100) NOT NULL,
    size_bytes       INTEGER NOT NULL,
    has_pii          BOOLEAN NOT NULL,
    token_count      INTEGER NOT NULL,
    sqs_blocks       INTEGER NOT NULL,
    archived_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    archive_batch_id UUID NOT NULL,
    PRIMARY KEY (id, received_at)
) PARTITION BY RANGE (received_at);
CREATE INDEX scenario_logs_archive_scenario_idx ON scenario_logs_archive (scenario_id, received_at);

CREATE TABLE scenario_metrics_archive (
    id                 UUID NOT NULL,
    scenario_id        UUID NOT NULL,
    timestamp          TIMESTAMPTZ NOT NULL,
    metric_type        VARCHAR(50) NOT NULL,
    metric_name        VARCHAR(100) NOT NULL,
    value              DECIMAL(15,6) NOT NULL,
    unit               VARCHAR(20) NOT NULL,
    extra_data         JSONB DEFAULT '{}',
    archived_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    archive_batch_id   UUID NOT NULL,
    is_aggregated      BOOLEAN NOT NULL DEFAULT false,
    aggregation_period VARCHAR(20),
    sample_count       INTEGER,
    PRIMARY KEY (id, timestamp)
) PARTITION BY RANGE (timestamp);
CREATE INDEX scenario_metrics_archive_scenario_idx ON scenario_metrics_archive (scenario_id, timestamp);

CREATE TABLE reports_archive (
    id               UUID NOT NULL,
    scenario_id      UUID NOT NULL,
    format           VARCHAR(10) NOT NULL,
    file_path        VARCHAR(500) NOT NULL,
    file_size_bytes  BIGINT,
    generated_by     VARCHAR(100),
    extra_data       JSONB DEFAULT '{}',
    created_at       TIMESTAMPTZ NOT NULL,
    archived_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    s3_location      VARCHAR(500),
    deleted_locally  BOOLEAN NOT NULL DEFAULT false,
    archive_batch_id UUID NOT NULL,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE INDEX reports_archive_scenario_idx ON reports_archive (scenario_id, created_at);

-- Run tracking -------------------------------------------------------------

-- One row per table per run. The id is derived from the workflow run, so a
-- retried StartJob finds its own row.
CREATE TABLE archive_jobs (
    id                UUID PRIMARY KEY,
    job_type          VARCHAR(50) NOT NULL,
    status            VARCHAR(50) NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    workflow_id       TEXT NOT NULL,
    run_id            TEXT NOT NULL,
    dry_run           BOOLEAN NOT NULL DEFAULT false,
    as_of             TIMESTAMPTZ NOT NULL,
    cutoff            TIMESTAMPTZ NOT NULL,
    started_at        TIMESTAMPTZ,
    completed_at      TIMESTAMPTZ,
    batches           INTEGER NOT NULL DEFAULT 0,
    records_processed BIGINT NOT NULL DEFAULT 0,
    records_archived  BIGINT NOT NULL DEFAULT 0,
    records_deleted   BIGINT NOT NULL DEFAULT 0,
    bytes_archived    BIGINT NOT NULL DEFAULT 0,
    error_message     TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX archive_jobs_started_at_idx ON archive_jobs (started_at DESC);

-- The exactly-once ledger: one row per committed batch, written in the same
-- transaction that moves the rows. A retried batch finds its row and returns
-- the recorded result instead of moving anything again.
CREATE TABLE archive_batches (
    batch_id     UUID PRIMARY KEY,
    job_id       UUID NOT NULL REFERENCES archive_jobs (id),
    table_name   TEXT NOT NULL,
    cutoff       TIMESTAMPTZ NOT NULL,
    batch_limit  INTEGER NOT NULL,
    rows_moved   BIGINT NOT NULL DEFAULT 0,
    rows_deleted BIGINT NOT NULL DEFAULT 0,
    bytes        BIGINT NOT NULL DEFAULT 0,
    min_ts       TIMESTAMPTZ,
    max_ts       TIMESTAMPTZ,
    committed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX archive_batches_job_idx ON archive_batches (job_id);

-- Views --------------------------------------------------------------------

CREATE VIEW v_scenario_logs_all AS
SELECT id, scenario_id, received_at, message_hash, message_preview,
       source, size_bytes, has_pii, token_count, sqs_blocks,
       NULL::timestamptz AS archived_at,
       false AS is_archived
FROM scenario_logs
UNION ALL
SELECT id, scenario_id, received_at, message_hash, message_preview,
       source, size_bytes, has_pii, token_count, sqs_blocks,
       archived_at,
       true AS is_archived
FROM scenario_logs_archive;

-- Live samples and archived daily aggregates side by side. sample_count is 1
-- for a live sample, so SUM(sample_count) counts samples across both.
CREATE VIEW v_scenario_metrics_all AS
SELECT id, scenario_id, timestamp, metric_type, metric_name,
       value, unit, extra_data,
       NULL::timestamptz AS archived_at,
       false AS is_aggregated,
       NULL::varchar(20) AS aggregation_period,
       1 AS sample_count,
       false AS is_archived
FROM scenario_metrics
UNION ALL
SELECT id, scenario_id, timestamp, metric_type, metric_name,
       value, unit, extra_data,
       archived_at,
       is_aggregated,
       aggregation_period,
       sample_count,
       true AS is_archived
FROM scenario_metrics_archive;

-- total_bytes is the on-disk size of the archived rows (the seed reported 0
-- for metrics) and, for reports, the size of the archived files.
CREATE VIEW v_archive_statistics AS
SELECT 'logs'::text AS archive_type,
       COUNT(*) AS total_records,
       MIN(received_at) AS oldest_record,
       MAX(received_at) AS newest_record,
       COALESCE(SUM(pg_column_size(a.*)), 0)::bigint AS total_bytes
FROM scenario_logs_archive a
UNION ALL
SELECT 'metrics'::text,
       COUNT(*),
       MIN(timestamp),
       MAX(timestamp),
       COALESCE(SUM(pg_column_size(a.*)), 0)::bigint
FROM scenario_metrics_archive a
UNION ALL
SELECT 'reports'::text,
       COUNT(*),
       MIN(created_at),
       MAX(created_at),
       COALESCE(SUM(file_size_bytes), 0)::bigint
FROM reports_archive;

-- Archive growth by the month rows were archived in. The seed's growth query
-- grouped v_archive_statistics by archived_at, a column that view lacks; this
-- reads the ledger instead, which is small.
CREATE VIEW v_archive_growth AS
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
GROUP BY 1, 2;
