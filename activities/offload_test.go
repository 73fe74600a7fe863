package activities_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/policy"
)

// An offload entry passed as an activity's input is checked as the policy
// file's loader checks it: whoever can start a workflow must not be able to
// point offload's read-and-delete at / or outside a directory, or its
// uploads at a bucket name that is none.
func TestOffloadEntryInputChecked(t *testing.T) {
	b := setup(t)
	victim := filepath.Join(t.TempDir(), "victim.txt")
	if err := os.WriteFile(victim, []byte("not the archiver's"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := b.db.Exec(context.Background(), `CREATE TABLE uploads (id bigint PRIMARY KEY, uploaded_at timestamptz NOT NULL, path text NOT NULL);
		GRANT SELECT, DELETE, UPDATE (id) ON uploads TO archiver_worker;
		INSERT INTO uploads VALUES (1, '2024-01-01', '`+victim+`')`); err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Parse("p.yaml", []byte(`
tables:
  - name: uploads
    table: uploads
    time_column: uploaded_at
    mode: offload
    archive_after_days: 30
    retention_days: 400
    offload: {path_column: path, root: `+filepath.Dir(victim)+`, prefix: uploads/}
`))
	if err != nil {
		t.Fatal(err)
	}
	cutoff := pol[0].Cutoff(asOf)
	for _, tc := range []struct {
		name   string
		change func(*policy.Table)
		want   string
	}{
		{"root /", func(e *policy.Table) { e.Root = "/" }, `uploads: offload.root: "/" is the root directory`},
		{"root with ..", func(e *policy.Table) { e.Root = filepath.Dir(victim) + "/../.." }, `offload.root: "` + filepath.Dir(victim) + `/../..": want a directory without ..`},
		{"bucket", func(e *policy.Table) { e.ObjectBucket = "Not_A_Bucket" }, `uploads: offload.bucket: "Not_A_Bucket" is not an S3 bucket name`},
		{"prefix", func(e *policy.Table) { e.ObjectPrefix = "../elsewhere/" }, `uploads: offload.prefix: "../elsewhere/"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := pol[0]
			tc.change(&e)
			ctx := context.Background()
			_, err := b.acts.ListReports(ctx, activities.ListReportsInput{Table: e.Name, Entry: &e, Cutoff: cutoff, Limit: 10})
			refused(t, "ListReports", err, tc.want)
			_, err = b.acts.CompleteRemovals(ctx, activities.CompleteRemovalsInput{Table: e.Name, Entry: &e, Limit: 10})
			refused(t, "CompleteRemovals", err, tc.want)
			_, err = b.acts.RemoveReportFile(ctx, activities.RemoveReportFileInput{ReportID: "1", Table: e.Name, Entry: &e})
			refused(t, "RemoveReportFile", err, tc.want)
			_, err = b.acts.EnsurePartitions(ctx, activities.EnsurePartitionsInput{Table: e.Name, Entry: &e, Cutoff: cutoff})
			refused(t, "EnsurePartitions", err, tc.want)
			if _, err := os.Stat(victim); err != nil {
				t.Fatalf("the file outside the entry's root: %v", err)
			}
		})
	}
	// The entry as loaded is accepted.
	e := pol[0]
	if _, err := b.acts.ListReports(context.Background(), activities.ListReportsInput{Table: e.Name, Entry: &e, Cutoff: cutoff, Limit: 10}); err != nil {
		t.Fatalf("the loaded entry: %v", err)
	}
}

func refused(t *testing.T, step string, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s accepted the entry; want a refusal naming %q", step, want)
	}
	assertNonRetryable(t, err)
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("%s: %v\nwant it to name %q", step, err, want)
	}
}
