package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// A policy entry travels in every workflow and activity input, where the Web
// UI and `temporal workflow show` display it. Its durations are written as
// Go duration strings ("8760h", "200ms") instead of nanosecond integers, so
// that an operator reads "archive after 8760h" rather than
// 31536000000000000. Entries recorded before (integers) still decode, so
// recorded histories replay and running workflows keep their input.

// plainTable is Table without its JSON methods.
type plainTable Table

// tableJSON is Table's JSON form: the duration fields, at a shallower depth
// than plainTable's, take their place.
type tableJSON struct {
	plainTable
	ArchiveAfter jsonDuration
	Retention    jsonDuration
	LockBudget   jsonDuration `json:",omitempty"`
}

// MarshalJSON writes the entry with readable durations.
func (t Table) MarshalJSON() ([]byte, error) {
	return json.Marshal(tableJSON{
		plainTable:   plainTable(t),
		ArchiveAfter: jsonDuration(t.ArchiveAfter),
		Retention:    jsonDuration(t.Retention),
		LockBudget:   jsonDuration(t.LockBudget),
	})
}

// UnmarshalJSON reads an entry whose durations are strings ("8760h") or, as
// older versions wrote them, integers of nanoseconds.
func (t *Table) UnmarshalJSON(b []byte) error {
	var j tableJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*t = Table(j.plainTable)
	t.ArchiveAfter, t.Retention, t.LockBudget = time.Duration(j.ArchiveAfter), time.Duration(j.Retention), time.Duration(j.LockBudget)
	return nil
}

// jsonDuration is a duration written as a string such as "8760h" (whole
// hours without the "0m0s" of time.Duration.String) and read from that
// form or from an integer of nanoseconds.
type jsonDuration time.Duration

func (d jsonDuration) MarshalJSON() ([]byte, error) {
	return json.Marshal(FormatDuration(time.Duration(d)))
}

func (d *jsonDuration) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: want a duration such as 8760h or 200ms", s)
		}
		*d = jsonDuration(v)
		return nil
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return fmt.Errorf("duration %s: want a string such as \"8760h\" or an integer of nanoseconds", b)
	}
	*d = jsonDuration(n)
	return nil
}

// FormatDuration writes d as time.ParseDuration reads it, whole hours as
// "8760h" rather than "8760h0m0s".
func FormatDuration(d time.Duration) string {
	if d != 0 && d%time.Hour == 0 {
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	}
	return d.String()
}
