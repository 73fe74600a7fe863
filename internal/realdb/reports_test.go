package realdb

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/workflows"
)

func TestReportFiles(t *testing.T) {
	t.Run("shared files stay while a live row uses them; a file rewritten after its upload is never removed", func(t *testing.T) {
		d := newRealDB(t, `CREATE TABLE reports (
		    id              UUID PRIMARY KEY,
		    scenario_id     UUID NOT NULL,
		    format          VARCHAR(10) NOT NULL,
		    file_path       VARCHAR(500) NOT NULL,
		    file_size_bytes INTEGER,
		    generated_by    VARCHAR(100),
		    extra_data      JSONB DEFAULT '{}',
		    created_at      TIMESTAMPTZ NOT NULL,
		    department      TEXT NOT NULL DEFAULT 'ops'
		)`)
		d.migrate()
		d.exec(`ALTER TABLE reports_archive ADD COLUMN department TEXT NOT NULL DEFAULT 'ops'`)
		dir := t.TempDir()
		store := testenv.Store(t)
		old := reportsCutoff.Add(-30 * 24 * time.Hour)
		young := reportsCutoff.Add(24 * time.Hour)
		write := func(name string, content []byte) {
			p := filepath.Join(dir, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, content, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		shared, oneOff, rewritten := testenv.CSV(31, 40000), testenv.CSV(32, 40000), testenv.CSV(33, 40000)
		write("shared/template.csv", shared)
		write("one-off.csv", oneOff)
		write("rewritten.csv", rewritten)
		ids := map[string]uuid.UUID{}
		add := func(name, path string, created time.Time, dept string) {
			ids[name] = uuid.New()
			d.exec(`INSERT INTO reports (id, scenario_id, format, file_path, file_size_bytes, generated_by, created_at, department)
				VALUES ('` + ids[name].String() + `', gen_random_uuid(), 'csv', '` + path + `', 40000, 'app', '` + created.Format(time.RFC3339) + `', '` + dept + `')`)
		}
		add("shared-old", "shared/template.csv", old, "finance")
		add("shared-old-2", "./shared/template.csv", old.Add(time.Hour), "finance")
		add("shared-young", "shared//template.csv", young, "finance") // not due: keeps the file
		add("one-off", "one-off.csv", old, "legal")
		add("rewritten", "rewritten.csv", old, "legal")
		// The application rewrites rewritten.csv right after its row is
		// finalized, before the file's removal.
		d.worker(func(a *activities.Activities) {
			a.Store, a.ReportsDir = store, dir
			a.AfterCommit = func(ctx context.Context, r activities.MoveBatchResult) error {
				var id string
				if err := d.db.QueryRow(ctx, `SELECT id::text FROM reports_archive WHERE archive_batch_id = $1`, r.BatchID).Scan(&id); err == nil && id == ids["rewritten"].String() {
					write("rewritten.csv", []byte("the application wrote this later"))
				}
				return nil
			}
		})
		liveCols := "id, scenario_id, format, file_path, generated_by, created_at, department"
		wantN, want := d.columns("reports", liveCols, "")
		res, err := d.run(workflows.ArchiveInput{Tables: []string{"reports"}})
		if err == nil || !strings.Contains(err.Error(), "the file changed since it was archived") {
			t.Fatalf("run: %v; want the rewritten report's removal refused", err)
		}
		if tr := res.Tables[0]; tr.Failures != 1 || tr.RowsArchived != 4 {
			t.Fatalf("summary %+v: want 4 archived, 1 failure (the kept file)", tr)
		}
		// Nothing lost: live ∪ archive are the original rows.
		n, sum := d.columns(`(SELECT `+liveCols+` FROM reports UNION ALL SELECT `+liveCols+` FROM reports_archive) u`, liveCols, "")
		if n != wantN || sum != want {
			t.Fatalf("live ∪ archive: %d rows, want the original %d", n, wantN)
		}
		if k := d.count(`SELECT count(*) FROM reports_archive WHERE created_at >= $1`, reportsCutoff); k != 0 {
			t.Fatalf("%d archived reports are younger than the cut-off", k)
		}
		// The shared file is still there for the young report; the
		// rewritten one keeps the application's content; the one-off went.
		if b, err := os.ReadFile(filepath.Join(dir, "shared/template.csv")); err != nil || !bytes.Equal(b, shared) {
			t.Fatalf("the file a live report uses was removed or changed: %v", err)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "rewritten.csv")); err != nil || string(b) != "the application wrote this later" {
			t.Fatalf("the rewritten file was removed or changed: %v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "one-off.csv")); !os.IsNotExist(err) {
			t.Fatal("the one-off report's file was not removed")
		}
		// Every archived report's object holds its file as it was uploaded.
		for name, content := range map[string][]byte{"shared-old": shared, "shared-old-2": shared, "one-off": oneOff, "rewritten": rewritten} {
			var loc, comp string
			if err := d.db.QueryRow(context.Background(), `SELECT s3_location, extra_data->'archive'->>'compression' FROM reports_archive WHERE id = $1`, ids[name]).Scan(&loc, &comp); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if !bytes.Equal(testenv.Restore(t, store, loc, comp), content) {
				t.Fatalf("%s: the object does not restore the file as uploaded", name)
			}
		}
		if k := d.count(`SELECT count(*) FROM reports_archive WHERE department = 'finance'`); k != 2 {
			t.Fatalf("%d archived finance reports, want 2: the extra column was not copied", k)
		}
	})
}
