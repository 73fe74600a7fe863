-- Partition exchange: a whole live partition older than the cut-off moves to
-- the archive as one unit, recorded as one ledger row of kind 'partition'.
-- Its steps (detach, add the archive columns, attach) are each recognisable
-- from the catalogue, so a retry resumes from the partition's state; the
-- partition is followed by its oid, which survives renames.
ALTER TABLE archive_batches ADD COLUMN kind TEXT NOT NULL DEFAULT 'rows'
    CHECK (kind IN ('rows', 'partition'));
ALTER TABLE archive_batches ADD COLUMN state TEXT NOT NULL DEFAULT 'done'
    CHECK (state IN ('exchanging', 'done'));
ALTER TABLE archive_batches ADD COLUMN partition_oid OID;
ALTER TABLE archive_batches ADD COLUMN partition_name TEXT;
-- The longest a step held its lock, for the operator and the bench.
ALTER TABLE archive_batches ADD COLUMN lock_ms BIGINT;
