package policy

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Durations are written readably and read back in both the new form and the
// nanosecond integers that recorded histories hold.
func TestTableJSON(t *testing.T) {
	logs, _ := Lookup("logs")
	logs.LockBudget = 250 * time.Millisecond
	logs.Export = &Export{Prefix: "cold/"}
	b, err := json.Marshal(logs)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"ArchiveAfter":"8760h"`, `"Retention":"61320h"`, `"LockBudget":"250ms"`, `"Name":"logs"`, `"Prefix":"cold/"`} {
		if !strings.Contains(string(b), want) {
			t.Fatalf("%s lacks %s", b, want)
		}
	}
	if strings.Count(string(b), "ArchiveAfter") != 1 {
		t.Fatalf("ArchiveAfter written twice: %s", b)
	}
	var back Table
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, logs) {
		t.Fatalf("round trip: %+v, want %+v", back, logs)
	}

	// LockBudget unset stays out, as before.
	metrics, _ := Lookup("metrics")
	if b, _ := json.Marshal(metrics); strings.Contains(string(b), "LockBudget") {
		t.Fatalf("an unset lock budget is written: %s", b)
	}

	// The old form: integers of nanoseconds, inside a list as in ArchiveInput.Policy.
	old := `[{"Name":"logs","Live":"scenario_logs","Archive":"scenario_logs_archive","TimeColumn":"received_at",` +
		`"ArchiveAfter":31536000000000000,"Retention":220752000000000000,"BatchSize":10000,"DayAligned":false,"Built":true,"LockBudget":200000000}]`
	var ts []Table
	if err := json.Unmarshal([]byte(old), &ts); err != nil {
		t.Fatal(err)
	}
	if len(ts) != 1 || ts[0].ArchiveAfter != 365*Day || ts[0].Retention != 7*365*Day || ts[0].LockBudget != 200*time.Millisecond || ts[0].BatchSize != 10000 {
		t.Fatalf("old form decoded as %+v", ts)
	}

	for _, bad := range []string{`{"ArchiveAfter":"a year"}`, `{"ArchiveAfter":1.5e3}`, `{"Retention":true}`} {
		if err := json.Unmarshal([]byte(bad), &back); err == nil {
			t.Fatalf("%s decoded without an error", bad)
		}
	}
	if got := FormatDuration(90 * time.Minute); got != "1h30m0s" {
		t.Fatalf("FormatDuration(90m) = %q", got)
	}
}
