package realdb

import (
	"strings"
	"testing"
	"time"

	"github.com/mockupaws/archiver/workflows"
)

// TestRefusedStatementsAreNotRetried: a statement PostgreSQL refuses for a
// reason no retry changes fails its activity at once, naming the table,
// the step and the SQLSTATE, instead of being retried until the activity's
// schedule-to-close timeout (30 minutes; the wait here is 3).
func TestRefusedStatementsAreNotRetried(t *testing.T) {
	t.Run("an archive CHECK that refuses some rows fails the run at once", func(t *testing.T) {
		d := newRealDB(t, logsDDL(", PRIMARY KEY (id)", ""))
		d.insertLogs("scenario_logs", 3000, asOf, 7*time.Hour)
		d.migrate()
		// A CHECK the preflight cannot judge without reading every row:
		// the batch holding a row over it is refused.
		d.exec(`ALTER TABLE scenario_logs_archive ADD CONSTRAINT archive_small_rows CHECK (size_bytes < 2500)`)
		wantN, want := d.columns("scenario_logs", logColumns, "")
		res, err := d.run(workflows.ArchiveInput{Tables: []string{"logs"}, BatchSize: 500, MinBatch: 500, MaxBatch: 500})
		if err == nil {
			t.Fatalf("the run completed: %+v", res.Tables)
		}
		msg := res.Tables[0].Error
		for _, want := range []string{"MoveBatch of logs", "scenario_logs", "archive_small_rows", "SQLSTATE 23514", "not retried"} {
			if !strings.Contains(msg, want) {
				t.Fatalf("the table's error %q does not name %q", msg, want)
			}
		}
		// The refused batch rolled back; the batches before it committed.
		n, sum := d.columns(`(SELECT `+logColumns+` FROM scenario_logs UNION ALL SELECT `+logColumns+` FROM scenario_logs_archive) u`, logColumns, "")
		if n != wantN || sum != want {
			t.Fatalf("live ∪ archive holds %d rows, want the original %d", n, wantN)
		}
		if k := d.count(`SELECT count(*) FROM archive_jobs WHERE status = 'failed' AND error_message LIKE '%archive_small_rows%'`); k != 1 {
			t.Fatalf("%d failed archive_jobs rows naming the constraint, want 1", k)
		}
	})
}
