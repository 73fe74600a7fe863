-- A batch's last key, so that a batch answered from the ledger (a retry
-- after its commit) returns the cursor its loop goes on from, instead of
-- sending the loop back to a rescan from the start.
ALTER TABLE archive_batches ADD COLUMN last_ts TIMESTAMPTZ;
ALTER TABLE archive_batches ADD COLUMN last_key TEXT;

-- A backfill window that reaches into rows younger than the policy's
-- cut-off runs only when the operator forces it; the job row says so.
ALTER TABLE archive_jobs ADD COLUMN forced BOOLEAN NOT NULL DEFAULT false;
