package policy

import (
	"strings"
	"testing"
	"time"
)

func TestParseLoad(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Load
		err  string
	}{
		{in: "", want: Load{}},
		{in: "off", want: Load{}},
		{in: "active=8", want: Load{Active: 8}},
		{in: "active=120%", want: Load{ActivePercent: 120}},
		{in: " active = 2.5 , xact_age=5m,replica_lag=10s", want: Load{Active: 2.5, XactAge: 5 * time.Minute, ReplicaLag: 10 * time.Second}},
		{in: "active=0", err: "from 1"},
		{in: "active=50%", err: "from 100%"},
		{in: "active=8,active=9", err: "given twice"},
		{in: "threads_running=25", err: "no such signal"},
		{in: "xact_age=5", err: "want a duration"},
		{in: "xact_age=500ms", err: "from 1s"},
		{in: "active", err: "want signal=value"},
	} {
		got, err := ParseLoad(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseLoad(%q) = %+v, %v; want an error containing %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseLoad(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
			continue
		}
		// String writes what ParseLoad reads back.
		if again, err := ParseLoad(got.String()); err != nil || again != got {
			t.Errorf("ParseLoad(%q) of String() = %+v, %v; want %+v", got.String(), again, err, got)
		}
	}
	if _, err := ParseLoad(DefaultMaxLoad); err != nil {
		t.Fatalf("the default max load %q: %v", DefaultMaxLoad, err)
	}
}

func TestLoadResolveAndExceeded(t *testing.T) {
	rel := Load{ActivePercent: 120, XactAge: time.Minute}
	if got := rel.Resolve(2.5); got.Active != 3 || got.ActivePercent != 0 || got.XactAge != time.Minute {
		t.Fatalf("120%% of 2.5 resolved to %+v, want active 3, xact_age kept", got)
	}
	if got := rel.Resolve(0); got.Active != 1 {
		t.Fatalf("a relative threshold over an idle server resolved to %+v, want at least one statement", got)
	}
	abs := Load{Active: 8}
	if got := abs.Resolve(20); got != abs {
		t.Fatalf("an absolute threshold changed with the baseline: %+v", got)
	}
	l := Load{Active: 3, XactAge: time.Minute, ReplicaLag: 5 * time.Second}
	for _, c := range []struct {
		s    LoadSample
		want string
	}{
		{LoadSample{Active: 3}, ""},
		{LoadSample{Active: 3.2}, "active 3.2 > 3.0"},
		{LoadSample{XactAge: 2 * time.Minute}, "xact_age 2m0s > 1m0s"},
		{LoadSample{ReplicaLag: 6 * time.Second}, "replica_lag 6s > 5s"},
	} {
		if got := l.Exceeded(c.s); got != c.want {
			t.Errorf("Exceeded(%+v) = %q, want %q", c.s, got, c.want)
		}
	}
}
