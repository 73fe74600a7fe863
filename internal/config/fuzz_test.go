package config

import (
	"strings"
	"testing"
)

// FuzzLoadFrom: no configuration value makes it panic, and a rejected
// DATABASE_URL is never repeated in the error (it may hold a password).
func FuzzLoadFrom(f *testing.F) {
	f.Add("postgres://u:pw@h/db", "localhost:7233", "gzip", "30s")
	f.Add("pw-only", "http://x", "lz4", "soon")
	f.Fuzz(func(t *testing.T, db, addr, comp, lag string) {
		env := map[string]string{"DATABASE_URL": db, "TEMPORAL_ADDRESS": addr, "REPORTS_COMPRESSION": comp, "ARCHIVE_MAX_REPLICA_LAG": lag}
		_, err := LoadFrom(func(k string) string { return env[k] })
		if err != nil && len(strings.TrimSpace(db)) > 8 && strings.Contains(err.Error(), strings.TrimSpace(db)) {
			t.Fatalf("the error repeats DATABASE_URL: %v", err)
		}
	})
}
