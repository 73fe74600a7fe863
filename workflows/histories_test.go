package workflows

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRecordedHistoriesUnchanged holds every recorded history to its line
// in testdata/histories/SHA256SUMS. A recorded history is never recorded
// over: a run in flight under an older build replays against it, so a
// changed file would hide exactly the nondeterminism TestReplay is there to
// catch. testenv.RecordHistory writes new files only and adds their lines;
// editing a line is a deliberate act a reviewer sees.
func TestRecordedHistoriesUnchanged(t *testing.T) {
	dir := filepath.Join("..", "testdata", "histories")
	f, err := os.Open(filepath.Join(dir, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	listed := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok || len(sum) != 64 || name == "" {
			t.Fatalf("SHA256SUMS line %d: %q is not `<sha256>  <file>`", n, sc.Text())
		}
		if _, dup := listed[name]; dup {
			t.Fatalf("SHA256SUMS lists %s twice", name)
		}
		listed[name] = sum
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	files, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range files {
		name := e.Name()
		if name == "SHA256SUMS" {
			continue
		}
		seen[name] = true
		want, ok := listed[name]
		if !ok {
			t.Errorf("%s is not in SHA256SUMS: record histories with `make record-histories` (it adds the line)", name)
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		if got := hex.EncodeToString(sum[:]); got != want {
			t.Errorf("%s changed (SHA-256 %s, recorded %s): a recorded history is never recorded over; restore it (git checkout) and record the new shape to a new file behind its own workflow.GetVersion", name, got[:12], want[:12])
		}
	}
	for name := range listed {
		if !seen[name] {
			t.Errorf("%s is listed in SHA256SUMS but gone: a recorded history is never removed while a run of its shape may be in flight", name)
		}
	}
}
