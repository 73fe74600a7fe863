package policy

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Load is a threshold on the database server's own signals, the way
// gh-ost's and pt-online-schema-change's --max-load and --critical-load
// read MySQL's status: past --max-load a batch rests and the batch size
// shrinks; past --critical-load the run stops, to go on with the next one.
// A zero field is no threshold on that signal.
type Load struct {
	// Active is the number of the application's sessions running a
	// statement (pg_stat_activity, state active, the archiver's own
	// sessions left out), averaged over the last second. ActivePercent,
	// when set instead, is relative: that share of the average the run
	// measured before its first batch (at least one statement).
	Active        float64 `json:",omitempty"`
	ActivePercent float64 `json:",omitempty"`
	// XactAge is the age of the application's oldest open transaction.
	XactAge time.Duration `json:",omitempty"`
	// ReplicaLag is the largest replay lag of the streaming replicas.
	ReplicaLag time.Duration `json:",omitempty"`
}

// DefaultMaxLoad is --max-load's default: rest while the application runs
// a fifth more statements at once than it did before the run began, which
// is what the run's own work does to it when the two compete for the
// server (docs/operating.md, "The application's load", has the
// measurements).
const DefaultMaxLoad = "active=120%"

// LoadSample is one reading of the signals a Load is a threshold on.
type LoadSample struct {
	Active     float64       `json:",omitempty"`
	XactAge    time.Duration `json:",omitempty"`
	ReplicaLag time.Duration `json:",omitempty"`
}

// ParseLoad reads a threshold such as "active=8,xact_age=5m,replica_lag=10s"
// or "active=150%". "" and "off" are no threshold.
func ParseLoad(s string) (Load, error) {
	var l Load
	s = strings.TrimSpace(s)
	if s == "" || s == "off" {
		return l, nil
	}
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		name, value, ok := strings.Cut(strings.TrimSpace(part), "=")
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		if !ok || value == "" {
			return Load{}, fmt.Errorf("%q: want signal=value, such as active=8 or xact_age=5m", part)
		}
		if seen[name] {
			return Load{}, fmt.Errorf("%s given twice", name)
		}
		seen[name] = true
		switch name {
		case "active":
			if pct, ok := strings.CutSuffix(value, "%"); ok {
				v, err := strconv.ParseFloat(pct, 64)
				if err != nil || v < 100 || v > 10000 {
					return Load{}, fmt.Errorf("active=%s: want a share from 100%% to 10000%% of the load before the run, such as 150%%", value)
				}
				l.ActivePercent = v
				continue
			}
			v, err := strconv.ParseFloat(value, 64)
			if err != nil || v < 1 || v > 100000 {
				return Load{}, fmt.Errorf("active=%s: want a number of running statements from 1, or a share such as 150%%", value)
			}
			l.Active = v
		case "xact_age", "replica_lag":
			d, err := time.ParseDuration(value)
			if err != nil || d < time.Second || d > 7*24*time.Hour {
				return Load{}, fmt.Errorf("%s=%s: want a duration from 1s to 168h, such as 5m", name, value)
			}
			if name == "xact_age" {
				l.XactAge = d
			} else {
				l.ReplicaLag = d
			}
		default:
			return Load{}, fmt.Errorf("%q: no such signal (active, xact_age, replica_lag)", name)
		}
	}
	return l, nil
}

// IsZero reports whether l holds no threshold.
func (l Load) IsZero() bool { return l == Load{} }

// Relative reports whether l needs the load measured before the run.
func (l Load) Relative() bool { return l.ActivePercent > 0 }

// Resolve turns a relative threshold into an absolute one, given the
// application's average running statements before the run: that share of
// it, and at least one statement (an idle database's zero would otherwise
// rest the run at the first statement of anyone).
func (l Load) Resolve(baseline float64) Load {
	if l.ActivePercent > 0 {
		l.Active = math.Round(max(baseline*l.ActivePercent/100, 1)*10) / 10
		l.ActivePercent = 0
	}
	return l
}

// Exceeded names the first signal of s past l ("" when none is), as an
// operator reads it: "active 5.2 > 3.0".
func (l Load) Exceeded(s LoadSample) string {
	switch {
	case l.Active > 0 && s.Active > l.Active:
		return fmt.Sprintf("active %.1f > %.1f", s.Active, l.Active)
	case l.XactAge > 0 && s.XactAge > l.XactAge:
		return fmt.Sprintf("xact_age %s > %s", s.XactAge.Round(time.Second), l.XactAge)
	case l.ReplicaLag > 0 && s.ReplicaLag > l.ReplicaLag:
		return fmt.Sprintf("replica_lag %s > %s", s.ReplicaLag.Round(time.Millisecond), l.ReplicaLag)
	}
	return ""
}

// String writes l in ParseLoad's form.
func (l Load) String() string {
	if l.IsZero() {
		return "off"
	}
	var parts []string
	switch {
	case l.ActivePercent > 0:
		parts = append(parts, "active="+strconv.FormatFloat(l.ActivePercent, 'f', -1, 64)+"%")
	case l.Active > 0:
		parts = append(parts, "active="+strconv.FormatFloat(l.Active, 'f', -1, 64))
	}
	if l.XactAge > 0 {
		parts = append(parts, "xact_age="+l.XactAge.String())
	}
	if l.ReplicaLag > 0 {
		parts = append(parts, "replica_lag="+l.ReplicaLag.String())
	}
	return strings.Join(parts, ",")
}
