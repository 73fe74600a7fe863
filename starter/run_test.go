package main

import (
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mockupaws/archiver/internal/policy"
)

var now = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func TestRunFlags(t *testing.T) {
	ok := map[string][]string{
		"--all":            {"logs", "metrics", "reports"},
		"--reports --logs": {"logs", "reports"},
		"--logs --dry-run": {"logs"},
		"--logs --as-of 2026-01-01T03:00:00+01:00": {"logs"},
	}
	for args, tables := range ok {
		f, err := parseRunFlags(strings.Fields(args), io.Discard)
		if err != nil {
			t.Fatalf("%s: %v", args, err)
		}
		in, err := f.archiveInput(now, policy.Tables)
		if err != nil || !slices.Equal(in.Tables, tables) {
			t.Fatalf("%s: %v, %v", args, in, err)
		}
		if strings.Contains(args, "--as-of") && !in.AsOf.Equal(time.Date(2026, 1, 1, 2, 0, 0, 0, time.UTC)) {
			t.Fatalf("%s: as-of %v", args, in.AsOf)
		}
	}
	bad := map[string]string{
		"":                                    "choose the tables",
		"--all --logs":                        "cannot be combined",
		"--logs --as-of yesterday":            "not an RFC3339 time",
		"--logs --as-of 2027-01-01T00:00:00Z": "in the future",
		"--logs --batch-size 0x":              "invalid value",
		"--logs --batch-size -3":              "must be at least 1",
		"--logs --batch-size 100000000":       "must be at most",
		"--logs extra":                        "unexpected argument",
	}
	for args, mention := range bad {
		f, err := parseRunFlags(strings.Fields(args), io.Discard)
		if err == nil {
			_, err = f.archiveInput(now, policy.Tables)
		}
		var ee exitError
		if err == nil || !strings.Contains(err.Error(), mention) || !errors.As(err, &ee) || ee.code != 2 {
			t.Errorf("%q: error %v, want a usage error mentioning %q", args, err, mention)
		}
	}
}

func TestParseStopBy(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Skip("no time zone data")
	}
	now := time.Date(2026, 3, 7, 23, 30, 0, 0, ny) // the evening before the spring DST change
	for in, want := range map[string]time.Time{
		"06:00":                time.Date(2026, 3, 8, 6, 0, 0, 0, ny), // next morning, after the clocks moved
		"23:45":                time.Date(2026, 3, 7, 23, 45, 0, 0, ny),
		"23:30":                time.Date(2026, 3, 8, 23, 30, 0, 0, ny), // now is not "next"
		"2026-03-08T11:00:00Z": time.Date(2026, 3, 8, 11, 0, 0, 0, time.UTC),
	} {
		got, err := ParseStopBy(in, now, ny)
		if err != nil || !got.Equal(want) {
			t.Errorf("ParseStopBy(%q) = %s, %v; want %s", in, got, err, want.UTC())
		}
	}
	for _, in := range []string{"6", "6:0", "24:00", "06:60", "", "2026-03-07T23:00:00-05:00", "tomorrow"} {
		if got, err := ParseStopBy(in, now, ny); err == nil {
			t.Errorf("ParseStopBy(%q) = %s, want refused", in, got)
		}
	}
	in, err := runFlags{logs: true, parallel: 1, stopBy: "2026-03-08T11:00:00Z"}.archiveInput(now, policy.Tables)
	if err != nil || !in.Deadline.Equal(time.Date(2026, 3, 8, 11, 0, 0, 0, time.UTC)) {
		t.Fatalf("archiveInput: deadline %s, %v", in.Deadline, err)
	}
}
