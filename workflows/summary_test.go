package workflows

import (
	"strings"
	"testing"
	"time"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/policy"
)

func TestSummaries(t *testing.T) {
	d := func(y int, m time.Month, dd, h int) time.Time { return time.Date(y, m, dd, h, 0, 0, 0, time.UTC) }
	for _, c := range []struct {
		from, to time.Time
		want     string
	}{
		{d(2024, 2, 7, 0), d(2024, 2, 9, 0), "2024-02-07 → 02-09"},
		{d(2023, 12, 30, 0), d(2024, 1, 2, 0), "2023-12-30 → 2024-01-02"},
		{d(2024, 2, 7, 3), d(2024, 2, 7, 9), "2024-02-07 03:00 → 09:00"},
		{time.Time{}, d(2025, 2, 9, 0), "… → 2025-02-09"},
	} {
		if got := span(c.from, c.to); got != c.want {
			t.Errorf("span(%s, %s) = %q, want %q", c.from, c.to, got, c.want)
		}
	}
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 10000: "10,000", 1234567: "1,234,567", -50000: "-50,000"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}

	logs, _ := policy.Lookup("logs")
	oldest := d(2024, 2, 7, 5)
	b := &branch{table: logs, result: &TableResult{Oldest: &oldest}}
	in := activities.MoveBatchInput{Table: "logs", Cutoff: d(2025, 2, 9, 0), Limit: 10000}
	if got, want := b.batchSummary(in, false), "logs 2024-02-07 → 2025-02-09, up to 10,000 rows"; got != want {
		t.Errorf("batch summary %q, want %q", got, want)
	}
	in.Cursor = &activities.Key{TS: d(2025, 1, 20, 0), ID: "row id stays out"}
	if got, want := b.batchSummary(in, false), "logs 2025-01-20 → 02-09, up to 10,000 rows"; got != want {
		t.Errorf("batch summary after a cursor %q, want %q", got, want)
	}
	in.Cursor = nil
	if got, want := b.batchSummary(in, true), "final sweep: logs 2024-02-07 → 2025-02-09, up to 10,000 rows the batches skipped or that came since"; got != want {
		t.Errorf("the late sweep's summary %q, want %q", got, want)
	}

	asOf := d(2026, 3, 15, 3)
	for in, want := range map[*ArchiveInput]string{
		{Tables: []string{"logs", "metrics"}, AsOf: asOf}:                     "archive logs, metrics as of 2026-03-15 03:00 UTC",
		{Tables: []string{"logs"}}:                                            "archive logs as of the scheduled or start time",
		{Tables: []string{"logs"}, DryRun: true, AsOf: asOf}:                  "archive dry run logs as of 2026-03-15 03:00 UTC",
		{Tables: []string{"logs"}, Window: &Window{Before: d(2025, 1, 1, 0)}}: "archive logs: backfill … → 2025-01-01",
	} {
		if got := ArchiveSummary(*in); got != want {
			t.Errorf("ArchiveSummary = %q, want %q", got, want)
		}
	}
	if det := ArchiveDetails(ArchiveInput{Tables: []string{"logs"}}); !strings.Contains(det, "**logs**: move scenario_logs → scenario_logs_archive, archive after 365 days, keep 2555 days, batch 10,000 rows") {
		t.Errorf("ArchiveDetails = %q", det)
	}
	if got := RestoreSummary(RestoreRequest{Table: "logs", After: d(2024, 1, 1, 0), Before: d(2024, 2, 1, 0)}); got != "restore logs 2024-01-01 → 02-01" {
		t.Errorf("RestoreSummary = %q", got)
	}
	if got := clip(strings.Repeat("é", 200), maxSummary); len(got) > maxSummary+len("…") || !strings.HasSuffix(got, "…") || strings.ContainsRune(got, '\uFFFD') {
		t.Errorf("clip cut a summary to %q", got)
	}
}
