package activities_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mockupaws/archiver/activities"
)

// FuzzResolveReportPath: whatever file_path a row holds, an accepted path
// is a regular file inside REPORTS_DIR.
func FuzzResolveReportPath(f *testing.F) {
	root := f.TempDir()
	outside := f.TempDir()
	_ = os.MkdirAll(filepath.Join(root, "a"), 0o755)
	_ = os.WriteFile(filepath.Join(root, "a", "r.csv"), []byte("x"), 0o644)
	_ = os.WriteFile(filepath.Join(outside, "s.csv"), []byte("x"), 0o644)
	_ = os.Symlink(filepath.Join(outside, "s.csv"), filepath.Join(root, "link.csv"))
	_ = os.Symlink(outside, filepath.Join(root, "dirlink"))
	for _, s := range []string{"a/r.csv", "../x", "link.csv", "dirlink/s.csv", "/etc/passwd", "a/../a/r.csv", "a/./r.csv", "", "a\x00b"} {
		f.Add(s)
	}
	realRoot, _ := filepath.EvalSymlinks(root)
	f.Fuzz(func(t *testing.T, p string) {
		got, err := activities.ResolveReportPath(root, p)
		if err != nil {
			return
		}
		rel, rerr := filepath.Rel(realRoot, got)
		if rerr != nil || strings.HasPrefix(rel, "..") {
			t.Fatalf("%q resolved to %s, outside %s", p, got, realRoot)
		}
		if st, err := os.Stat(got); err != nil || !st.Mode().IsRegular() {
			t.Fatalf("%q resolved to %s, not a regular file", p, got)
		}
	})
}
