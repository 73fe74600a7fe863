-- The load controller (docs/operating.md, "The application's load"): a run
-- given --critical-load stops when the server's load passes it, and each
-- table it stopped records the signal here ("active 40.0 > 32.0"). Like
-- stopped_at_deadline it is no failure: the job is completed and the next
-- run goes on from where it stopped.
ALTER TABLE archive_jobs ADD COLUMN stopped_at_load TEXT;
