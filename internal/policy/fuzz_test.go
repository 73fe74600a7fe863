package policy

import "testing"

// FuzzOverride: whatever the configuration says, an accepted policy is
// valid (retention longer than archive-after, batch sizes in range).
func FuzzOverride(f *testing.F) {
	f.Add("365", "2555", "10000")
	f.Add("0", "1", "-3")
	f.Add("400", "100", "1e9")
	f.Fuzz(func(t *testing.T, after, retention, batch string) {
		env := map[string]string{"ARCHIVE_LOGS_AFTER_DAYS": after, "ARCHIVE_LOGS_RETENTION_DAYS": retention, "ARCHIVE_LOGS_BATCH_SIZE": batch}
		pol, err := Override(func(k string) string { return env[k] })
		if err != nil {
			return
		}
		for _, tb := range pol {
			if err := tb.Validate(); err != nil {
				t.Fatalf("accepted an invalid policy: %v", err)
			}
		}
	})
}
