package testenv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"

	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"google.golang.org/protobuf/encoding/protojson"
)

// RecordHistory writes the run's history to testdata/histories when
// ARCHIVER_RECORD_HISTORY is set, for the replay tests. Recorded histories
// are committed and never overwritten: each released workflow shape keeps
// its file, and a new shape gets a new name (bump the -vN suffix). The new
// files' SHA-256 lines are added to testdata/histories/SHA256SUMS, which
// TestRecordedHistoriesUnchanged holds every file to.
func RecordHistory(t *testing.T, c client.Client, run client.WorkflowRun, name string) {
	t.Helper()
	if os.Getenv("ARCHIVER_RECORD_HISTORY") == "" {
		return
	}
	iter := c.GetWorkflowHistory(context.Background(), run.GetID(), run.GetRunID(), false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	var h historypb.History
	for iter.HasNext() {
		e, err := iter.Next()
		if err != nil {
			t.Fatalf("read history: %v", err)
		}
		h.Events = append(h.Events, e)
	}
	b, err := protojson.MarshalOptions{Indent: "  "}.Marshal(&h)
	if err != nil {
		t.Fatal(err)
	}
	_, self, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(self), "..", "..", "testdata", "histories", name)
	if _, err := os.Stat(path); err == nil {
		t.Logf("%s exists: kept (histories are never overwritten)", path)
		return
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	// The execution's ids: ids derived from them (child workflows) must
	// replay as they were.
	meta := fmt.Sprintf("{\"ID\": %q, \"RunID\": %q}\n", run.GetID(), run.GetRunID())
	execPath := strings.TrimSuffix(path, ".json") + ".execution"
	if err := os.WriteFile(execPath, []byte(meta), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := addSums(filepath.Join(filepath.Dir(path), "SHA256SUMS"), map[string][]byte{filepath.Base(path): b, filepath.Base(execPath): []byte(meta)}); err != nil {
		t.Fatal(err)
	}
	t.Logf("recorded %s (%d events)", path, len(h.Events))
}

// historySums guards SHA256SUMS against parallel tests recording at once.
var historySums sync.Mutex

// addSums appends the SHA-256 lines of newly recorded files to sums.
func addSums(sums string, files map[string][]byte) error {
	historySums.Lock()
	defer historySums.Unlock()
	f, err := os.OpenFile(sums, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		sum := sha256.Sum256(files[name])
		if _, err := fmt.Fprintf(f, "%s  %s\n", hex.EncodeToString(sum[:]), name); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}
