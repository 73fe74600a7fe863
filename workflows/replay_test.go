package workflows

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

// TestReplay replays every recorded history (testdata/histories, written by
// the e2e tests with ARCHIVER_RECORD_HISTORY=1) against today's workflow
// code. A change that would break a running workflow fails here: guard it
// with workflow.GetVersion and record a new history for the new shape, but
// keep the old ones. A history's .execution file holds its workflow and run
// ids, so that ids derived from them (child workflows) replay as recorded.
func TestReplay(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "testdata", "histories", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 3 {
		t.Fatalf("found %d recorded histories, want at least 3 (archive, dry run, failed run)", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			r := worker.NewWorkflowReplayer()
			r.RegisterWorkflowWithOptions(ArchiveWorkflow, workflow.RegisterOptions{Name: ArchiveWorkflowName})
			r.RegisterWorkflowWithOptions(BackfillWorkflow, workflow.RegisterOptions{Name: BackfillWorkflowName})
			r.RegisterWorkflowWithOptions(RestoreWorkflow, workflow.RegisterOptions{Name: RestoreWorkflowName})
			r.RegisterWorkflowWithOptions(VerifyWorkflow, workflow.RegisterOptions{Name: VerifyWorkflowName})
			fh, err := os.Open(f)
			if err != nil {
				t.Fatal(err)
			}
			defer fh.Close()
			h, err := client.HistoryFromJSON(fh, client.HistoryJSONOptions{})
			if err != nil {
				t.Fatalf("read %s: %v", f, err)
			}
			var opts worker.ReplayWorkflowHistoryOptions
			if b, err := os.ReadFile(strings.TrimSuffix(f, ".json") + ".execution"); err == nil {
				if err := json.Unmarshal(b, &opts.OriginalExecution); err != nil {
					t.Fatalf("read execution ids: %v", err)
				}
			}
			if err := r.ReplayWorkflowHistoryWithOptions(nil, h, opts); err != nil {
				t.Fatalf("replay %s: %v", f, err)
			}
		})
	}
}
