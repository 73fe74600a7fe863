package workflows

import (
	"strings"
	"testing"
	"time"

	"github.com/mockupaws/archiver/internal/policy"
)

func TestValidateBackfill(t *testing.T) {
	shortLogs, _ := policy.Lookup("logs")
	shortLogs.ArchiveAfter = 30 * policy.Day
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	day := func(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }
	queued := []BackfillRequest{{Table: "logs", After: day(2024, 1, 1), Before: day(2024, 2, 1)}}
	ok := []BackfillRequest{
		{Table: "logs", Before: day(2023, 12, 31)},                                            // open start, before the queued one
		{Table: "logs", After: day(2024, 2, 1), Before: day(2024, 3, 1)},                      // adjacent, not overlapping
		{Table: "metrics", After: day(2024, 1, 1), Before: day(2024, 2, 1)},                   // another table
		{Table: "logs", After: day(2026, 9, 1), Before: day(2026, 10, 1), Force: true},        // younger than the cut-off, forced
		{Table: "logs", After: day(2025, 11, 1), Before: day(2025, 11, 24)},                   // up to the cut-off
		{Table: "logs", After: day(2026, 9, 1), Before: day(2026, 10, 1), Policy: &shortLogs}, // a policy in force that archives after 30 days
	}
	for _, r := range ok {
		if err := ValidateBackfill(r, now, queued); err != nil {
			t.Errorf("%s refused: %v", r, err)
		}
	}
	bad := map[string]BackfillRequest{
		"unknown table":        {Table: "users", Before: day(2024, 1, 1)},
		"--before is required": {Table: "logs"},
		"in the future":        {Table: "logs", Before: now.Add(time.Hour)},
		"is not before":        {Table: "logs", After: day(2024, 5, 1), Before: day(2024, 4, 1)},
		"00:00 UTC":            {Table: "metrics", Before: day(2024, 4, 1).Add(time.Hour)},
		"the window ends at 2025-11-25T00:00:00Z, after the policy's cut-off 2025-11-24T12:00:00Z (logs rows younger than 365 days stay live): check --before, or pass --force": {
			Table: "logs", After: day(2025, 11, 1), Before: day(2025, 11, 25)},
		"overlaps a request": {Table: "logs", After: day(2024, 1, 15), Before: day(2024, 3, 1)},
	}
	bad["overlaps a request already queued"] = BackfillRequest{Table: "logs", Before: day(2024, 1, 2)} // open start reaching into it
	for want, r := range bad {
		if err := ValidateBackfill(r, now, queued); err == nil || !strings.Contains(err.Error(), strings.TrimSuffix(want, " already queued")) {
			t.Errorf("%s: error %v, want one mentioning %q", r, err, want)
		}
	}
}
