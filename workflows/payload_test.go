package workflows

import (
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/converter"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/policy"
)

// What the Web UI shows of a run's input: no year-1 instant for an unset
// as-of or window start, readable policy durations; and inputs recorded
// before (year 1, nanosecond integers) still decode to the same values.
func TestPayloadsReadable(t *testing.T) {
	dc := converter.GetDefaultDataConverter()
	show := func(v any) string {
		t.Helper()
		p, err := dc.ToPayload(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(p.Data)
	}
	in := ArchiveInput{Tables: []string{"logs"}, Policy: policy.Tables, Window: &Window{Before: time.Date(2025, 2, 9, 0, 0, 0, 0, time.UTC)}}
	s := show(in)
	if strings.Contains(s, "0001-01-01") || strings.Contains(s, `"AsOf"`) {
		t.Fatalf("a zero as-of or window start is in the payload: %s", s)
	}
	if !strings.Contains(s, `"ArchiveAfter":"8760h"`) || strings.Contains(s, "31536000000000000") {
		t.Fatalf("the policy's durations are not readable: %s", s)
	}
	for _, v := range []any{
		activities.MoveBatchInput{Table: "logs", Cutoff: in.Window.Before},
		BackfillRequest{Table: "logs", Before: in.Window.Before},
	} {
		if s := show(v); strings.Contains(s, "0001-01-01") {
			t.Fatalf("%T shows a year-1 instant: %s", v, s)
		}
	}
	asOf := time.Date(2026, 3, 15, 3, 0, 0, 0, time.UTC)
	if s := show(ArchiveInput{Tables: []string{"logs"}, AsOf: asOf}); !strings.Contains(s, `"AsOf":"2026-03-15T03:00:00Z"`) {
		t.Fatalf("a set as-of is not in the payload: %s", s)
	}

	old := `{"Tables":["logs"],"DryRun":false,"AsOf":"0001-01-01T00:00:00Z","BatchSize":0,` +
		`"Policy":[{"Name":"logs","Live":"scenario_logs","Archive":"scenario_logs_archive","TimeColumn":"received_at","ArchiveAfter":31536000000000000,"Retention":220752000000000000,"BatchSize":10000,"DayAligned":false,"Built":true}],` +
		`"Window":{"After":"0001-01-01T00:00:00Z","Before":"2025-02-09T00:00:00Z"}}`
	var got ArchiveInput
	p, _ := dc.ToPayload(old)
	p.Data = []byte(old)
	if err := dc.FromPayload(p, &got); err != nil {
		t.Fatal(err)
	}
	if !got.AsOf.IsZero() || !got.Window.After.IsZero() || got.Policy[0].ArchiveAfter != 365*policy.Day || got.Policy[0].Retention != 7*365*policy.Day {
		t.Fatalf("the old form decoded as %+v", got)
	}
}
