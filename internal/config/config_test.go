package config

import (
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) Getenv { return func(k string) string { return m[k] } }

func TestLoadFrom(t *testing.T) {
	t.Run("defaults of docs/deploying.md", func(t *testing.T) {
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

func TestWorkerLimits(t *testing.T) {
	load := func(kv ...string) (Config, error) {
		m := map[string]string{"DATABASE_URL": "postgres://u:secretpw@h/db"}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return LoadFrom(env(m))
	}
	for name, tc := range map[string]struct {
		kv           []string
		stop         time.Duration
		conns, slots int
	}{
		"defaults":                 {nil, DefaultWorkerStopTimeout, DefaultDBMaxConns, DefaultDBMaxConns - ReservedConns},
		"pool given":               {[]string{"ARCHIVE_DB_MAX_CONNS", "4"}, DefaultWorkerStopTimeout, 4, 3},
		"slots given":              {[]string{"ARCHIVE_ACTIVITY_SLOTS", "20"}, DefaultWorkerStopTimeout, 21, 20},
		"both, fitting":            {[]string{"ARCHIVE_DB_MAX_CONNS", "12", "ARCHIVE_ACTIVITY_SLOTS", "5"}, DefaultWorkerStopTimeout, 12, 5},
		"pool_max_conns in URL":    {[]string{"DATABASE_URL", "postgres://u@h/db?pool_max_conns=6"}, DefaultWorkerStopTimeout, 6, 5},
		"pool_max_conns key=value": {[]string{"DATABASE_URL", "host=h dbname=db pool_max_conns = 3"}, DefaultWorkerStopTimeout, 3, 2},
		"URL and variable agree":   {[]string{"DATABASE_URL", "postgres://u@h/db?pool_max_conns=6", "ARCHIVE_DB_MAX_CONNS", "6"}, DefaultWorkerStopTimeout, 6, 5},
		"stop timeout":             {[]string{"ARCHIVE_WORKER_STOP_TIMEOUT", "45s"}, 45 * time.Second, DefaultDBMaxConns, DefaultDBMaxConns - ReservedConns},
		"no drain":                 {[]string{"ARCHIVE_WORKER_STOP_TIMEOUT", "0"}, 0, DefaultDBMaxConns, DefaultDBMaxConns - ReservedConns},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := load(tc.kv...)
			if err != nil {
				t.Fatal(err)
			}
			if c.WorkerStopTimeout != tc.stop || c.DBMaxConns != tc.conns || c.ActivitySlots != tc.slots {
				t.Fatalf("stop %s, pool %d, slots %d; want %s, %d, %d", c.WorkerStopTimeout, c.DBMaxConns, c.ActivitySlots, tc.stop, tc.conns, tc.slots)
			}
		})
	}
	for name, tc := range map[string]struct {
		kv       []string
		mentions []string
	}{
		"slots exceed the pool": {[]string{"ARCHIVE_DB_MAX_CONNS", "8", "ARCHIVE_ACTIVITY_SLOTS", "8"}, []string{"ARCHIVE_ACTIVITY_SLOTS=8", "ARCHIVE_DB_MAX_CONNS=8", "at most 7", "raise ARCHIVE_DB_MAX_CONNS to 9"}},
		"slots exceed URL pool": {[]string{"DATABASE_URL", "postgres://u:secretpw@h/db?pool_max_conns=4", "ARCHIVE_ACTIVITY_SLOTS", "10"}, []string{"ARCHIVE_ACTIVITY_SLOTS=10", "ARCHIVE_DB_MAX_CONNS=4"}},
		"a pool of one":         {[]string{"ARCHIVE_DB_MAX_CONNS", "1"}, []string{"ARCHIVE_DB_MAX_CONNS=1", "at least 2"}},
		"zero slots":            {[]string{"ARCHIVE_ACTIVITY_SLOTS", "0"}, []string{"ARCHIVE_ACTIVITY_SLOTS", "at least 1"}},
		"pool not a number":     {[]string{"ARCHIVE_DB_MAX_CONNS", "ten"}, []string{"ARCHIVE_DB_MAX_CONNS", "whole number"}},
		"pool too large":        {[]string{"ARCHIVE_DB_MAX_CONNS", "10000"}, []string{"ARCHIVE_DB_MAX_CONNS=10000", "at most 1000"}},
		"URL and variable":      {[]string{"DATABASE_URL", "postgres://u:secretpw@h/db?pool_max_conns=6", "ARCHIVE_DB_MAX_CONNS", "8"}, []string{"ARCHIVE_DB_MAX_CONNS=8", "pool_max_conns=6", "disagree"}},
		"bad pool_max_conns":    {[]string{"DATABASE_URL", "postgres://u:secretpw@h/db?pool_max_conns=x"}, []string{"pool_max_conns", "ARCHIVE_DB_MAX_CONNS"}},
		"bad stop timeout":      {[]string{"ARCHIVE_WORKER_STOP_TIMEOUT", "2 minutes"}, []string{"ARCHIVE_WORKER_STOP_TIMEOUT", "2m"}},
		"negative stop timeout": {[]string{"ARCHIVE_WORKER_STOP_TIMEOUT", "-1s"}, []string{"ARCHIVE_WORKER_STOP_TIMEOUT"}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := load(tc.kv...)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, m := range tc.mentions {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %q", err, m)
				}
			}
			if strings.Contains(err.Error(), "secretpw") {
				t.Fatalf("error repeats the secret: %v", err)
			}
		})
	}
}

func TestWorkerDeployment(t *testing.T) {
	base := map[string]string{"DATABASE_URL": "postgres://h/db"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	c, err := LoadFrom(env(base))
	if err != nil || c.WorkerDeployment != "" || c.WorkerBuildID != "" {
		t.Fatalf("unset: versioning must be off: %+v, %v", c, err)
	}
	c, err = LoadFrom(env(with("ARCHIVE_WORKER_DEPLOYMENT", "archiver", "ARCHIVE_WORKER_BUILD_ID", "v1.4.2+3.g1a2b")))
	if err != nil || c.WorkerDeployment != "archiver" || c.WorkerBuildID != "v1.4.2+3.g1a2b" {
		t.Fatalf("%+v, %v", c, err)
	}
	for name, tc := range map[string]struct{ kv []string }{
		"dot in deployment":   {[]string{"ARCHIVE_WORKER_DEPLOYMENT", "archiver.prod"}},
		"colon in deployment": {[]string{"ARCHIVE_WORKER_DEPLOYMENT", "archiver:prod"}},
		"blank in build id":   {[]string{"ARCHIVE_WORKER_DEPLOYMENT", "archiver", "ARCHIVE_WORKER_BUILD_ID", "v1 2"}},
		"slash in build id":   {[]string{"ARCHIVE_WORKER_BUILD_ID", "feature/x"}},
		"long build id":       {[]string{"ARCHIVE_WORKER_BUILD_ID", strings.Repeat("a", 201)}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := LoadFrom(env(with(tc.kv...)))
			if err == nil || !strings.Contains(err.Error(), tc.kv[len(tc.kv)-2]) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %v, want one line naming %s", err, tc.kv[len(tc.kv)-2])
			}
		})
	}
}

func TestOperatorLimits(t *testing.T) {
	load := func(m map[string]string) (Config, error) {
		m["DATABASE_URL"] = "postgres://u@h/db"
		return LoadFrom(env(m))
	}
	c, err := load(map[string]string{})
	if err != nil || c.VacuumShare != DefaultVacuumShare || c.MaxSlotRetainedBytes != 0 {
		t.Fatalf("defaults: share %v, slot bytes %d, %v; want %v and 0 (off)", c.VacuumShare, c.MaxSlotRetainedBytes, err, DefaultVacuumShare)
	}
	for in, want := range map[string]int64{"1GB": 1 << 30, "512MB": 512 << 20, "64kB": 64 << 10, "2 TB": 2 << 40, "1000": 1000, "0": 0, "3GiB": 3 << 30} {
		c, err := load(map[string]string{"ARCHIVE_MAX_SLOT_RETAINED_BYTES": in})
		if err != nil || c.MaxSlotRetainedBytes != want {
			t.Errorf("ARCHIVE_MAX_SLOT_RETAINED_BYTES=%s: %d, %v; want %d", in, c.MaxSlotRetainedBytes, err, want)
		}
	}
	c, err = load(map[string]string{"ARCHIVE_VACUUM_SHARE": "0"})
	if err != nil || c.VacuumShare != 0 {
		t.Fatalf("ARCHIVE_VACUUM_SHARE=0: %v, %v; want 0 (off)", c.VacuumShare, err)
	}
	for name, tc := range map[string]struct{ env, mention string }{
		"ARCHIVE_MAX_SLOT_RETAINED_BYTES":   {"lots", `ARCHIVE_MAX_SLOT_RETAINED_BYTES="lots": want a size such as 1GB`},
		"ARCHIVE_MAX_SLOT_RETAINED_BYTES ":  {"-1GB", `ARCHIVE_MAX_SLOT_RETAINED_BYTES="-1GB"`},
		"ARCHIVE_MAX_SLOT_RETAINED_BYTES  ": {"1PB", `ARCHIVE_MAX_SLOT_RETAINED_BYTES="1PB"`},
		"ARCHIVE_VACUUM_SHARE":              {"20%", `ARCHIVE_VACUUM_SHARE="20%": want a share of the table's rows between 0 and 1`},
		"ARCHIVE_VACUUM_SHARE ":             {"1.5", `ARCHIVE_VACUUM_SHARE="1.5"`},
		"ARCHIVE_VACUUM_SHARE  ":            {"NaN", `ARCHIVE_VACUUM_SHARE="NaN"`},
	} {
		_, err := load(map[string]string{strings.TrimSpace(name): tc.env})
		if err == nil || !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("%s=%s: %v, want an error mentioning %q", strings.TrimSpace(name), tc.env, err, tc.mention)
		}
	}
}
