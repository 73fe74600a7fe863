package policy

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Override applies configuration to the default policy. For each table NAME
// (LOGS, METRICS, REPORTS) it reads ARCHIVE_<NAME>_AFTER_DAYS,
// ARCHIVE_<NAME>_RETENTION_DAYS and ARCHIVE_<NAME>_BATCH_SIZE; unset keeps
// the default. Errors name the variable.
//
// With ARCHIVE_POLICY_FILE set, the file's entries replace the built-in
// policy (LoadFile), and the same variables apply to each entry by its
// upper-cased name.
func Override(getenv func(string) string) ([]Table, error) {
	base := Tables
	if path := strings.TrimSpace(getenv(FileEnv)); path != "" {
		var err error
		if base, err = LoadFile(path); err != nil {
			return nil, err
		}
	}
	out := make([]Table, len(base))
	copy(out, base)
	for i := range out {
		t := &out[i]
		prefix := "ARCHIVE_" + strings.ToUpper(t.Name) + "_"
		if err := days(getenv, prefix+"AFTER_DAYS", &t.ArchiveAfter); err != nil {
			return nil, err
		}
		if err := days(getenv, prefix+"RETENTION_DAYS", &t.Retention); err != nil {
			return nil, err
		}
		if v := strings.TrimSpace(getenv(prefix + "BATCH_SIZE")); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return nil, fmt.Errorf("%sBATCH_SIZE=%q is not a whole number", prefix, v)
			}
			if err := ValidateBatchSize(n); err != nil {
				return nil, fmt.Errorf("%sBATCH_SIZE: %w", prefix, err)
			}
			t.BatchSize = n
		}
		if err := t.Validate(); err != nil {
			return nil, fmt.Errorf("policy from %s*: %w", prefix, err)
		}
	}
	return out, nil
}

func days(getenv func(string) string, name string, into *time.Duration) error {
	v := strings.TrimSpace(getenv(name))
	if v == "" {
		return nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 100*365 {
		return fmt.Errorf("%s=%q: want a whole number of days from 1 to 36500", name, v)
	}
	*into = time.Duration(n) * Day
	return nil
}
