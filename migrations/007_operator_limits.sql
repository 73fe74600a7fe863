-- Operator limits (README "Operator limits"). A run given a deadline
-- (`starter run --stop-by`, `schedule apply --stop-by`) starts no new batch
-- once it has passed; a table it stopped records that here. It is no
-- failure: the job is completed, and the next run goes on from where it
-- stopped. `vacuum` is the outcome of the VACUUM (ANALYZE) step after a
-- large delete: ran, skipped and why (the worker role must own the table),
-- or failed.
ALTER TABLE archive_jobs ADD COLUMN stopped_at_deadline BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE archive_jobs ADD COLUMN vacuum TEXT;
