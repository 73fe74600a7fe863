package policy

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSelect(t *testing.T) {
	got, err := Select([]string{"logs"})
	if err != nil || !slices.Equal(got, []string{"logs"}) {
		t.Fatalf("Select(logs) = %v, %v", got, err)
	}
	for _, tc := range []struct {
		in      []string
		mention string
	}{
		{nil, "no table selected"},
		{[]string{"users"}, `unknown table "users"`},
		{[]string{"logs", "logs"}, "selected twice"},
	} {
		if _, err := Select(tc.in); err == nil || !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("Select(%v) error %v, want %q", tc.in, err, tc.mention)
		}
	}
}

func TestCutoff(t *testing.T) {
	logs, _ := Lookup("logs")
	asOf := time.Date(2026, 3, 1, 3, 0, 0, 0, time.FixedZone("CET", 3600))
	if got, want := logs.Cutoff(asOf), time.Date(2025, 3, 1, 2, 0, 0, 0, time.UTC); !got.Equal(want) || got.Location() != time.UTC {
		t.Fatalf("cut-off %v, want %v in UTC", got, want)
	}
}

func TestValidateBatchSize(t *testing.T) {
	for _, n := range []int{0, -1, MaxBatchSize + 1} {
		if ValidateBatchSize(n) == nil {
			t.Errorf("batch size %d accepted", n)
		}
	}
	for _, n := range []int{1, 10000, MaxBatchSize} {
		if err := ValidateBatchSize(n); err != nil {
			t.Errorf("batch size %d refused: %v", n, err)
		}
	}
}

func TestPolicyDefaultsAreTheSeeds(t *testing.T) {
	want := map[string][2]time.Duration{
		"logs":    {365 * Day, 7 * 365 * Day},
		"metrics": {730 * Day, 5 * 365 * Day},
		"reports": {180 * Day, 5 * 365 * Day},
	}
	for _, tb := range Tables {
		w := want[tb.Name]
		if tb.ArchiveAfter != w[0] || tb.Retention != w[1] {
			t.Errorf("%s: archive after %v, retention %v; seed says %v, %v", tb.Name, tb.ArchiveAfter, tb.Retention, w[0], w[1])
		}
		if tb.Retention <= tb.ArchiveAfter {
			t.Errorf("%s: retention not longer than archive-after", tb.Name)
		}
	}
}
