package config

import (
	"strings"
	"testing"
)

func env(m map[string]string) Getenv { return func(k string) string { return m[k] } }

func TestLoadFrom(t *testing.T) {
	t.Run("defaults of DESIGN.md §5", func(t *testing.T) {
		c, err := LoadFrom(env(map[string]string{"DATABASE_URL": "postgres://u@h/db"}))
		if err != nil {
			t.Fatal(err)
		}
		if c.TemporalAddress != "localhost:7233" || c.TemporalNamespace != "default" || c.TaskQueue != "archive" {
			t.Fatalf("defaults: %+v", c)
		}
	})
	for name, tc := range map[string]struct {
		env     map[string]string
		mention string
	}{
		"missing DATABASE_URL":    {map[string]string{}, "DATABASE_URL is not set"},
		"unparsable URL":          {map[string]string{"DATABASE_URL": "postgres://u:secretpw@h:notaport/db%zz"}, "DATABASE_URL is not a valid URL"},
		"not a database URL":      {map[string]string{"DATABASE_URL": "secretpw"}, "DATABASE_URL must start with"},
		"scheme in Temporal addr": {map[string]string{"DATABASE_URL": "postgres://h/db", "TEMPORAL_ADDRESS": "http://h:7233"}, "TEMPORAL_ADDRESS"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := LoadFrom(env(tc.env))
			if err == nil || !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.mention)
			}
			if strings.Contains(err.Error(), "secretpw") {
				t.Fatalf("error repeats the secret: %v", err)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	got := Redact("postgres://archiver:s3cret@127.0.0.1:5432/db?sslmode=disable")
	if strings.Contains(got, "s3cret") || !strings.Contains(got, "archiver:xxxxx@127.0.0.1") {
		t.Fatalf("Redact = %q", got)
	}
	if got := Redact("host=h password=s3cret"); strings.Contains(got, "s3cret") {
		t.Fatalf("Redact = %q", got)
	}
}

func TestTemporalTLSConfig(t *testing.T) {
	_, err := LoadFrom(env(map[string]string{"DATABASE_URL": "postgres://h/db", "TEMPORAL_TLS_CERT": "/c.pem"}))
	if err == nil || !strings.Contains(err.Error(), "TEMPORAL_TLS_KEY") {
		t.Fatalf("a certificate without its key: %v", err)
	}
	c, err := LoadFrom(env(map[string]string{"DATABASE_URL": "postgres://h/db", "TEMPORAL_API_KEY": "k", "ARCHIVE_MAX_REPLICA_LAG": "5s"}))
	if err != nil || c.TemporalAPIKey != "k" || c.MaxReplicaLag.Seconds() != 5 {
		t.Fatalf("%+v, %v", c, err)
	}
	if _, err := LoadFrom(env(map[string]string{"DATABASE_URL": "postgres://h/db", "ARCHIVE_MAX_REPLICA_LAG": "soon"})); err == nil {
		t.Fatal("an unparsable replica lag was accepted")
	}
}
