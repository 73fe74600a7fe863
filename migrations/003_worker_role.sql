-- The worker's least-privilege role. Logins for workers are members of it:
--     CREATE ROLE archiver_worker_login LOGIN PASSWORD '...' IN ROLE archiver_worker;
-- It can do exactly what archiving needs:
--   live tables       SELECT and DELETE the rows it archives; UPDATE on the id
--                     column only, because PostgreSQL requires UPDATE
--                     privilege for the row locks of SELECT ... FOR UPDATE
--                     SKIP LOCKED (the archiver never updates a live row);
--   archive tables    owns them: insert, merge aggregates, mark reports,
--                     and create, detach and drop their monthly partitions
--                     (PostgreSQL requires ownership of the partitioned table);
--   archive_jobs, archive_batches   SELECT, INSERT, UPDATE;
--   schema public     USAGE, and CREATE for the partitions;
--   pg_monitor        to read replicas' replay lag in pg_stat_replication.
-- Nothing else: no other table, no INSERT or UPDATE of live rows, no TRUNCATE,
-- no DROP of live tables, no roles. Running this needs a superuser or a
-- role with CREATEROLE that owns the tables.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'archiver_worker') THEN
        CREATE ROLE archiver_worker NOLOGIN;
    END IF;
END
$$;

GRANT USAGE, CREATE ON SCHEMA public TO archiver_worker;
GRANT SELECT, DELETE ON scenario_logs, scenario_metrics, reports TO archiver_worker;
GRANT UPDATE (id) ON scenario_logs, scenario_metrics, reports TO archiver_worker;
GRANT SELECT, INSERT, UPDATE ON archive_jobs, archive_batches TO archiver_worker;
GRANT pg_monitor TO archiver_worker;

DO $$
DECLARE
    t regclass;
BEGIN
    FOR t IN
        SELECT c.oid::regclass FROM pg_class c
        WHERE c.oid IN ('scenario_logs_archive'::regclass, 'scenario_metrics_archive'::regclass, 'reports_archive'::regclass)
           OR c.oid IN (SELECT inhrelid FROM pg_inherits
                        WHERE inhparent IN ('scenario_logs_archive'::regclass, 'scenario_metrics_archive'::regclass, 'reports_archive'::regclass))
    LOOP
        EXECUTE format('ALTER TABLE %s OWNER TO archiver_worker', t);
    END LOOP;
END
$$;

-- The views read the archive tables with their owner's rights: the
-- migrating role keeps SELECT on the tables it handed over.
GRANT SELECT ON scenario_logs_archive, scenario_metrics_archive, reports_archive TO CURRENT_USER;
