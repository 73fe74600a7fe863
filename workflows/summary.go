package workflows

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.temporal.io/sdk/workflow"

	"github.com/mockupaws/archiver/internal/policy"
)

// Summaries are the one-line texts the Web UI shows for a run (its static
// summary, set by whoever starts it) and for each activity on the run's
// timeline, so that forty batches read "logs 2024-02-07 → 02-09, up to
// 10,000 rows" instead of forty identical "MoveBatch". They hold table
// names, instants, limits and ids only, never row content. The SDK passes
// them through the data converter, so with payload encryption on they are
// ciphertext like the payloads and the codec server decodes them.

// maxSummary keeps a summary within the server's user metadata limit
// (the summary is encrypted with the payloads, which adds some bytes).
const maxSummary = 160

// summarized is ctx with the activity summary s: the summary is user
// metadata on the ScheduleActivityTask command, which replay does not
// compare, so it needs no workflow.GetVersion (TestReplay checks it).
func summarized(ctx workflow.Context, format string, args ...any) workflow.Context {
	o := workflow.GetActivityOptions(ctx)
	o.Summary = clip(fmt.Sprintf(format, args...), maxSummary)
	return workflow.WithActivityOptions(ctx, o)
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && (s[n]&0xC0) == 0x80 { // not inside a UTF-8 sequence
		n--
	}
	return s[:n] + "…"
}

// span is a time range as an operator reads it: "2024-02-07 → 02-09",
// "2023-12-30 → 2024-01-02" across a year, hours within one day, and
// "… → 2025-02-09" without a start.
func span(from, to time.Time) string {
	to = to.UTC()
	if from.IsZero() {
		return "… → " + day(to)
	}
	from = from.UTC()
	switch {
	case day(from) == day(to):
		return from.Format("2006-01-02 15:04") + " → " + to.Format("15:04")
	case from.Year() == to.Year():
		return day(from) + " → " + to.Format("01-02")
	default:
		return day(from) + " → " + day(to)
	}
}

func day(t time.Time) string { return t.UTC().Format("2006-01-02") }

// stamp is an instant to the minute, in UTC.
func stamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") }

// thousands writes n with thousands separators: 10,000.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// ArchiveSummary is a run's static summary in the Web UI: what it archives,
// as of when. The starter, the schedule and the backfill workflow set it.
func ArchiveSummary(in ArchiveInput) string {
	var b strings.Builder
	b.WriteString("archive ")
	if in.DryRun {
		b.WriteString("dry run ")
	}
	b.WriteString(strings.Join(in.Tables, ", "))
	switch {
	case in.Window != nil:
		b.WriteString(fmt.Sprintf(": backfill %s", span(in.Window.After, in.Window.Before)))
		if in.Window.Force {
			b.WriteString(" (forced)")
		}
	case !in.AsOf.IsZero():
		b.WriteString(fmt.Sprintf(" as of %s", stamp(in.AsOf)))
	default:
		b.WriteString(" as of the scheduled or start time")
	}
	return clip(b.String(), maxSummary)
}

// ArchiveDetails is a run's static details: the policy entry of each table
// in force (Markdown, which the Web UI renders).
func ArchiveDetails(in ArchiveInput) string {
	pol := in.Policy
	if len(pol) == 0 {
		pol = policy.Tables
	}
	var b strings.Builder
	for _, name := range in.Tables {
		t, err := policy.Find(pol, name)
		if err != nil {
			continue
		}
		b.WriteString(fmt.Sprintf("- **%s**: %s %s → %s, archive after %d days, keep %d days, batch %s rows\n",
			t.Name, t.ModeOf(), t.Live, t.Archive, t.ArchiveAfter/policy.Day, t.Retention/policy.Day, thousands(int64(t.BatchSize))))
	}
	if in.RetentionMode != "" {
		b.WriteString(fmt.Sprintf("- retention mode: %s\n", in.RetentionMode))
	}
	return b.String()
}

// RestoreSummary is a restore's static summary.
func RestoreSummary(r RestoreRequest) string {
	s := "restore " + r.Table + " " + span(r.After, r.Before)
	if r.DryRun {
		s += " (dry run)"
	}
	return clip(s, maxSummary)
}

// VerifySummary is a verification's static summary.
func VerifySummary(r VerifyRequest) string {
	names := policy.NamesOf(r.Policy)
	if len(r.Policy) == 0 {
		names = policy.BuiltNames()
	}
	s := "verify " + strings.Join(names, ", ")
	if r.Deep {
		s += " (deep: every object downloaded)"
	}
	return clip(s, maxSummary)
}

// BackfillSummary is the backfill queue's static summary.
const BackfillSummary = "backfill queue: manual archive windows, one child run each"
