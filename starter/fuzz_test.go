package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/mockupaws/archiver/internal/policy"
)

// FuzzParseAsOf: never panics; what it accepts is in UTC, not in the future.
func FuzzParseAsOf(f *testing.F) {
	for _, s := range []string{"2025-01-31T03:00:00Z", "2025-01-31T03:00:00+01:00", "yesterday", "", "2099-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "2025-13-40T99:99:99Z"} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseAsOf(s, now)
		if err != nil {
			return
		}
		if got.Location() != time.UTC || got.After(now.Add(time.Minute)) || got.Year() < 1970 {
			t.Fatalf("ParseAsOf(%q) accepted %v", s, got)
		}
	})
}

// FuzzRunFlags: any command line is either refused with a usage error or
// gives a valid workflow input.
func FuzzRunFlags(f *testing.F) {
	for _, s := range []string{"--all", "--logs --dry-run", "--metrics --reports --batch-size 5", "--all --logs", "--parallel 99 --logs", "--as-of x"} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, line string) {
		fl, err := parseRunFlags(strings.Fields(line), io.Discard)
		if err != nil {
			return
		}
		in, err := fl.archiveInput(now, policy.Tables)
		if err != nil {
			return
		}
		if len(in.Tables) == 0 || in.BatchSize < 0 || in.Parallel < 1 || in.Parallel > 16 || in.AsOf.After(now.Add(time.Minute)) {
			t.Fatalf("%q gave an invalid input %+v", line, in)
		}
	})
}

// FuzzParseTime: never panics; accepted times are UTC.
func FuzzParseTime(f *testing.F) {
	for _, s := range []string{"2024-01-01", "2024-01-01T00:00:00Z", "2024-02-30", "tomorrow"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, err := ParseTime("--x", s); err == nil && got.Location() != time.UTC {
			t.Fatalf("%q gave %v, not UTC", s, got)
		}
	})
}
