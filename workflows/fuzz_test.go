package workflows

import (
	"testing"
	"time"

	"github.com/mockupaws/archiver/internal/policy"
)

// FuzzValidateBackfill: an accepted request is a well-formed window of a
// known table in the past, overlapping nothing queued.
func FuzzValidateBackfill(f *testing.F) {
	f.Add("logs", int64(1700000000), int64(0))
	f.Add("metrics", int64(1700000000), int64(1690000000))
	f.Add("users", int64(-5), int64(99999999999))
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	queued := []BackfillRequest{{Table: "logs", After: time.Unix(1600000000, 0), Before: time.Unix(1610000000, 0)}}
	f.Fuzz(func(t *testing.T, table string, before, after int64) {
		r := BackfillRequest{Table: table, Before: time.Unix(before, 0).UTC()}
		if after != 0 {
			r.After = time.Unix(after, 0).UTC()
		}
		if ValidateBackfill(r, now, queued) != nil {
			return
		}
		if r.Before.After(now) || !r.After.IsZero() && !r.After.Before(r.Before) {
			t.Fatalf("accepted %s", r)
		}
		if p, _ := policy.Lookup(r.Table); r.Before.After(p.Cutoff(now)) {
			t.Fatalf("accepted %s, which reaches past the policy's cut-off %s without --force", r, p.Cutoff(now))
		}
		q := queued[0]
		if r.Table == q.Table && (r.After.IsZero() || r.After.Before(q.Before)) && q.After.Before(r.Before) {
			t.Fatalf("accepted %s overlapping %s", r, q)
		}
	})
}
