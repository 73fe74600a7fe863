package policy

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Override applies configuration to the default policy. For each table NAME
// (LOGS, METRICS, REPORTS) it reads ARCHIVE_<NAME>_AFTER_DAYS,
// ARCHIVE_<NAME>_RETENTION_DAYS and ARCHIVE_<NAME>_BATCH_SIZE, and
// ARCHIVE_<NAME>_EXPORT_BUCKET, _EXPORT_PREFIX, _EXPORT_FORMAT (export before
// retention drops; "-" as the bucket turns a declared export off); unset
// keeps the default. Errors name the variable.
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
		if err := exportFromEnv(getenv, prefix, t); err != nil {
			return nil, err
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

// exportFromEnv sets (or, with bucket "-", removes) t's export from
// ARCHIVE_<NAME>_EXPORT_*. A prefix or format alone applies to the entry's
// export and needs one.
func exportFromEnv(getenv func(string) string, prefix string, t *Table) error {
	bucket := strings.TrimSpace(getenv(prefix + "EXPORT_BUCKET"))
	keyPrefix, keySet := strings.TrimSpace(getenv(prefix+"EXPORT_PREFIX")), getenv(prefix+"EXPORT_PREFIX") != ""
	format := strings.TrimSpace(getenv(prefix + "EXPORT_FORMAT"))
	switch {
	case bucket == "-":
		t.Export = nil
		return nil
	case bucket != "":
		e := Export{}
		if t.Export != nil {
			e = *t.Export
		}
		e.Bucket = bucket
		t.Export = &e
	case (keySet || format != "") && t.Export == nil:
		return fmt.Errorf("%sEXPORT_PREFIX/FORMAT given without %sEXPORT_BUCKET: say which bucket the export goes to", prefix, prefix)
	}
	if t.Export == nil {
		return nil
	}
	if keySet {
		t.Export.Prefix = keyPrefix
	}
	if format != "" {
		t.Export.Format = strings.ToLower(format)
	}
	if err := t.Export.Validate(); err != nil {
		return fmt.Errorf("%sEXPORT_*: %w", prefix, err)
	}
	return nil
}
