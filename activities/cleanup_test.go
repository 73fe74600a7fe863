package activities_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mockupaws/archiver/activities"
)

// TestCleanExportDir removes only the archiver's own files, and only old ones.
func TestCleanExportDir(t *testing.T) {
	dir := t.TempDir()
	old := time.Now().Add(-48 * time.Hour)
	for name, age := range map[string]time.Time{
		"archiver-export-p1-123.parquet": old, "archiver-restore-9": old, "archiver-verify-3": old,
		"archiver-export-p2-456.parquet": time.Now(), "someone-elses.parquet": old,
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, age, age); err != nil {
			t.Fatal(err)
		}
	}
	n, err := activities.CleanExportDir(dir, 24*time.Hour)
	if err != nil || n != 3 {
		t.Fatalf("removed %d (%v), want the 3 old files of the archiver", n, err)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(left) != 2 {
		t.Fatalf("left %v", left)
	}
}
