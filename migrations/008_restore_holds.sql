-- A hold belongs to the window a restore brought back, not to the restore's
-- workflow id alone: that id is restore-<table> for every restore of a
-- table, so keyed on it a second restore of another window replaced the
-- first one's hold, and the next archive run took the first window's rows
-- back into the archive. A retried hold of the same window still finds its
-- row; every other window adds its own. The rows already there were unique
-- on the narrower key, so they are on this one.
ALTER TABLE archive_holds DROP CONSTRAINT archive_holds_workflow_id_table_name_key;
ALTER TABLE archive_holds ADD CONSTRAINT archive_holds_window_key
    UNIQUE (workflow_id, table_name, after_ts, before_ts);
