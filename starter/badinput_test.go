package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/mockupaws/archiver/internal/temporalclient"
	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/workflows"
)

// TestBadInput runs each case of the bad-input table (docs/operating.md)
// through the real starter commands against the dev stack: each must fail with a
// non-zero status and a message naming the problem, and echo no secret.
// (Cases that live below the starter, in activities, have their own tests:
// see the table's last column.)
func TestBadInput(t *testing.T) {
	env := testenv.Load(t)
	_, dbURL := testenv.NewDB(t)
	u, _ := url.Parse(dbURL)
	password, _ := u.User.Password()
	wrongPW := *u
	wrongPW.User = url.UserPassword(u.User.Username(), "not-"+password)
	unreachable := *u
	unreachable.Host = "127.0.0.1:1"
	awsSecret := os.Getenv("AWS_SECRET_ACCESS_KEY")

	// A run that is archiving logs right now (no worker serves its queue,
	// so it stays running).
	c := testenv.Temporal(t)
	busy, err := c.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{
		ID: "busy-" + testenv.RandomID(), TaskQueue: "nobody-" + testenv.RandomID(),
		TypedSearchAttributes: temporal.NewSearchAttributes(
			temporal.NewSearchAttributeKeyKeywordList("ArchiveTables").ValueSet([]string{"logs"}),
			temporal.NewSearchAttributeKeyBool("ArchiveDryRun").ValueSet(false)),
	}, workflows.ArchiveWorkflowName, workflows.ArchiveInput{Tables: []string{"logs"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.TerminateWorkflow(context.Background(), busy.GetID(), "", "test done") })

	// Codec servers for the codec rows: the real handler on loopback, one
	// with the keys of another machine (key id 2026-11), one requiring a
	// token; and a port where nothing listens, and one already taken.
	serverKey, localKey, wrongLen := newKey(t), newKey(t), base64.StdEncoding.EncodeToString(make([]byte, 16))
	serverKeys, err := temporalclient.NewKeyring("2026-11:"+serverKey, "")
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	otherKeys := httptest.NewServer(newCodecHandler(serverKeys, env.Namespace, []string{"http://127.0.0.1:8233"}, "", quiet))
	t.Cleanup(otherKeys.Close)
	const codecToken = "codec-token-not-to-be-shown"
	withToken := httptest.NewServer(newCodecHandler(serverKeys, env.Namespace, []string{"http://127.0.0.1:8233"}, codecToken, quiet))
	t.Cleanup(withToken.Close)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { taken.Close() })
	down, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	downURL := "http://" + down.Addr().String()
	down.Close() // nothing listens there now
	keyEnv := func(kv ...string) map[string]string {
		m := map[string]string{"TEMPORAL_PAYLOAD_KEY": "", "TEMPORAL_PAYLOAD_KEYS": "", "CODEC_SERVER_TOKEN": ""}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	// Secrets no refusal may echo, besides the password and the AWS key.
	secrets := []string{serverKey, localKey, wrongLen, codecToken}

	cases := []struct {
		name    string
		args    []string
		env     map[string]string
		mention string
	}{
		{"malformed --as-of", []string{"run", "--logs", "--as-of", "yesterday"}, nil, "is not an RFC3339 time"},
		{"future --as-of", []string{"run", "--logs", "--as-of", "2099-01-01T00:00:00Z"}, nil, "is in the future"},
		{"bad pace: --pace -1", []string{"run", "--logs", "--pace", "-1"}, nil, "run: --pace -1: must be between 0 and 10"},
		{"bad pace: --pace 50", []string{"run", "--logs", "--pace", "50"}, nil, "run: --pace 50: must be between 0 and 10"},
		{"bad deadline: unparsable --stop-by", []string{"run", "--logs", "--stop-by", "dawn"}, nil, `--stop-by "dawn" is neither a time of day HH:MM nor an RFC3339 time`},
		{"bad deadline: --stop-by 25:00", []string{"run", "--logs", "--stop-by", "25:00"}, nil, `--stop-by "25:00" is neither a time of day HH:MM`},
		{"bad deadline: --stop-by in the past", []string{"run", "--logs", "--stop-by", "2020-01-01T06:00:00Z"}, nil, "--stop-by 2020-01-01T06:00:00Z is in the past"},
		{"bad deadline: backfill --stop-by in the past", []string{"backfill", "--table", "logs", "--before", "2024-01-01", "--stop-by", "2020-01-01T06:00:00Z"}, nil, "--stop-by 2020-01-01T06:00:00Z is in the past"},
		{"bad deadline: schedule --stop-by not a time of day", []string{"schedule", "apply", "--id", "stop-" + testenv.RandomID(), "--stop-by", "2030-01-01T06:00:00Z"}, nil, "is not a time of day HH:MM"},
		{"unparsable slot retention setting", []string{"run", "--logs", "--dry-run"}, map[string]string{"ARCHIVE_MAX_SLOT_RETAINED_BYTES": "lots"}, `ARCHIVE_MAX_SLOT_RETAINED_BYTES="lots"`},
		{"unparsable vacuum share setting", []string{"run", "--logs", "--dry-run"}, map[string]string{"ARCHIVE_VACUUM_SHARE": "20%"}, `ARCHIVE_VACUUM_SHARE="20%"`},
		{"unknown table flag", []string{"run", "--users"}, nil, "flag provided but not defined: -users"},
		{"unknown table (backfill)", []string{"backfill", "--table", "users", "--before", "2024-01-01"}, nil, `unknown table "users"`},
		{"--all with a table", []string{"run", "--all", "--logs"}, nil, "cannot be combined"},
		{"no table", []string{"run"}, nil, "choose the tables"},
		{"batch size negative", []string{"run", "--logs", "--batch-size", "-5"}, nil, "must be at least 1"},
		{"batch size huge", []string{"run", "--logs", "--batch-size", "1000000000"}, nil, "must be at most 100000"},
		{"batch size not a number", []string{"run", "--logs", "--batch-size", "lots"}, nil, "invalid value"},
		{"DATABASE_URL missing", []string{"migrate"}, map[string]string{"DATABASE_URL": ""}, "DATABASE_URL is not set"},
		{"unreachable database", []string{"migrate"}, map[string]string{"DATABASE_URL": unreachable.String()}, "connect to PostgreSQL"},
		{"wrong database password", []string{"migrate"}, map[string]string{"DATABASE_URL": wrongPW.String()}, "password authentication failed"},
		{"Temporal unreachable", []string{"run", "--logs", "--dry-run"}, map[string]string{"TEMPORAL_ADDRESS": "127.0.0.1:1"}, "connect to Temporal at 127.0.0.1:1"},
		{"unknown namespace", []string{"run", "--logs", "--dry-run"}, map[string]string{"TEMPORAL_NAMESPACE": "no-such-namespace"}, "no-such-namespace"},
		{"missing bucket", []string{"bucket", "show"}, map[string]string{"REPORTS_ARCHIVE_BUCKET": "no-such-bucket-x"}, "NoSuchBucket"},
		{"wrong S3 credentials", []string{"bucket", "show"}, map[string]string{"AWS_SECRET_ACCESS_KEY": "wrong-" + awsSecret}, "SignatureDoesNotMatch"},
		{"a second run on a table being archived", []string{"run", "--logs"}, nil, "logs is already being archived by run " + busy.GetID()},
		{"throttle negative", []string{"throttle", "-1"}, nil, "is not a number of batches per second"},
		{"throttle not a number", []string{"throttle", "fast"}, nil, "is not a number of batches per second"},
		{"backfill --after not before --before", []string{"backfill", "--table", "logs", "--after", "2024-02-01", "--before", "2024-01-01"}, nil, "is not before --before"},
		{"backfill window in the future", []string{"backfill", "--table", "logs", "--before", "2099-01-01"}, nil, "in the future"},
		{"backfill window younger than the policy's cut-off", []string{"backfill", "--table", "logs", "--after", time.Now().AddDate(0, -2, 0).Format("2006-01-02"), "--before", time.Now().AddDate(0, -1, 0).Format("2006-01-02")}, nil,
			"after the policy's cut-off"},
		{"backfill metrics on part of a day", []string{"backfill", "--table", "metrics", "--before", "2024-01-01T12:00:00Z"}, nil, "must start and end at 00:00 UTC"},
		{"schedule backfill inverted", []string{"schedule", "backfill", "--from", "2024-02-01", "--to", "2024-01-01"}, nil, "--from must be before --to"},
		{"schedule unknown time zone", []string{"schedule", "apply", "--id", "tz-" + testenv.RandomID(), "--timezone", "Mars/Olympus"}, nil, `time zone "Mars/Olympus"`},
		{"retention shorter than archive-after", []string{"run", "--logs", "--dry-run"}, map[string]string{"ARCHIVE_LOGS_RETENTION_DAYS": "100"}, "retention (100 days) must be longer than archive-after (365 days)"},
		{"unparsable batch size setting", []string{"run", "--logs", "--dry-run"}, map[string]string{"ARCHIVE_LOGS_BATCH_SIZE": "lots"}, `ARCHIVE_LOGS_BATCH_SIZE="lots" is not a whole number`},
		{"unparsable compression setting", []string{"run", "--logs", "--dry-run"}, map[string]string{"REPORTS_COMPRESSION": "lz4"}, `REPORTS_COMPRESSION="lz4"`},
		{"unparsable replica lag setting", []string{"run", "--logs", "--dry-run"}, map[string]string{"ARCHIVE_MAX_REPLICA_LAG": "soon"}, `ARCHIVE_MAX_REPLICA_LAG="soon"`},
		{"restore of a downsampled table", []string{"restore", "--table", "metrics", "--after", "2023-01-01", "--before", "2023-02-01"}, nil, "an aggregate cannot be turned back into its samples"},
		{"restore window inverted", []string{"restore", "--table", "logs", "--after", "2024-02-01", "--before", "2024-01-01"}, nil, "is not before --before"},
		{"restore without a window", []string{"restore", "--table", "logs", "--after", "2024-02-01"}, nil, "--table, --after and --before are required"},
		{"restore unknown table", []string{"restore", "--table", "users", "--after", "2024-01-01", "--before", "2024-02-01"}, nil, `unknown table "users"`},
		{"restore hold not positive", []string{"restore", "--table", "logs", "--after", "2024-01-01", "--before", "2024-02-01", "--hold", "-1h"}, nil, "want a positive duration"},
		{"restore on a table being archived", []string{"restore", "--table", "logs", "--after", "2024-01-01", "--before", "2024-02-01"}, nil, "logs is already being archived by run " + busy.GetID()},
		{"verify unknown table", []string{"verify", "--table", "users"}, nil, `unknown table "users"`},
		{"export format unknown", []string{"run", "--logs", "--dry-run"}, map[string]string{"ARCHIVE_LOGS_EXPORT_BUCKET": "cold-bucket", "ARCHIVE_LOGS_EXPORT_FORMAT": "orc"}, `export format "orc": want parquet or csv`},
		{"export prefix without a bucket", []string{"run", "--logs", "--dry-run"}, map[string]string{"ARCHIVE_LOGS_EXPORT_PREFIX": "cold/"}, "ARCHIVE_LOGS_EXPORT_PREFIX/FORMAT given without ARCHIVE_LOGS_EXPORT_BUCKET"},
		{"export bucket malformed", []string{"run", "--logs", "--dry-run"}, map[string]string{"ARCHIVE_LOGS_EXPORT_BUCKET": "Not_A_Bucket"}, `export bucket "Not_A_Bucket" is not an S3 bucket name`},
		{"bad payload key", []string{"run", "--logs", "--dry-run"}, map[string]string{"TEMPORAL_PAYLOAD_KEY": "c2hvcnQ="}, "TEMPORAL_PAYLOAD_KEY must be 32 bytes in base64"},
		{"codec server: bad payload key", []string{"codec-server", "--listen", "127.0.0.1:0"}, map[string]string{"TEMPORAL_PAYLOAD_KEY": "bm90IGEga2V5"}, "TEMPORAL_PAYLOAD_KEY must be 32 bytes in base64"},
		{"codec server: malformed TEMPORAL_PAYLOAD_KEYS entry", []string{"codec-server", "--listen", "127.0.0.1:0"},
			map[string]string{"TEMPORAL_PAYLOAD_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", "TEMPORAL_PAYLOAD_KEYS": "old:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=,ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="}, "TEMPORAL_PAYLOAD_KEYS entry 2 is not id:key"},
		{"codec server: no key", []string{"codec-server", "--listen", "127.0.0.1:0"}, map[string]string{"TEMPORAL_PAYLOAD_KEY": "", "TEMPORAL_PAYLOAD_KEYS": ""}, "no payload key: set TEMPORAL_PAYLOAD_KEY"},
		{"codec server: --ui-origin not an origin", []string{"codec-server", "--ui-origin", "127.0.0.1:8233"}, map[string]string{"TEMPORAL_PAYLOAD_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}, `--ui-origin "127.0.0.1:8233" is not an origin`},
		{"payload key not base64", []string{"run", "--logs", "--dry-run"}, keyEnv("TEMPORAL_PAYLOAD_KEY", "2026-11:"+localKey[:20]+"*&"+localKey[22:]), "TEMPORAL_PAYLOAD_KEY must be 32 bytes in base64"},
		{"payload key of 16 bytes", []string{"run", "--logs", "--dry-run"}, keyEnv("TEMPORAL_PAYLOAD_KEY", wrongLen), "TEMPORAL_PAYLOAD_KEY must be 32 bytes in base64"},
		{"older payload key of the wrong length", []string{"run", "--logs", "--dry-run"}, keyEnv("TEMPORAL_PAYLOAD_KEY", localKey, "TEMPORAL_PAYLOAD_KEYS", "2025-q4:"+wrongLen),
			`TEMPORAL_PAYLOAD_KEYS entry 1 (key id "2025-q4"): the key must be 32 bytes in base64`},
		{"codec server: older payload key not base64", []string{"codec-server", "--listen", "127.0.0.1:0"}, keyEnv("TEMPORAL_PAYLOAD_KEY", localKey, "TEMPORAL_PAYLOAD_KEYS", "2025-q3:!"+serverKey[1:]),
			`TEMPORAL_PAYLOAD_KEYS entry 1 (key id "2025-q3"): the key must be 32 bytes in base64`},
		{"codec server: --listen address taken", []string{"codec-server", "--listen", taken.Addr().String()}, keyEnv("TEMPORAL_PAYLOAD_KEY", localKey), "listen on " + taken.Addr().String() + " (--listen): listen tcp " + taken.Addr().String() + ": bind: address already in use (another codec server"},
		{"codec server unreachable", []string{"codec-server", "--check", downURL}, keyEnv("TEMPORAL_PAYLOAD_KEY", "2025-q4:"+localKey), "codec server " + downURL + " is unreachable"},
		{"codec server --check not a URL", []string{"codec-server", "--check", "127.0.0.1:8081"}, keyEnv("TEMPORAL_PAYLOAD_KEY", localKey), `--check "127.0.0.1:8081" is not a codec server URL`},
		{"codec server without this machine's key id", []string{"codec-server", "--check", otherKeys.URL + "/{namespace}"}, keyEnv("TEMPORAL_PAYLOAD_KEY", "2025-q4:"+localKey),
			`payload encrypted with key id "2025-q4", which is not among the keys`},
		{"codec server token wrong", []string{"codec-server", "--check", withToken.URL}, keyEnv("TEMPORAL_PAYLOAD_KEY", "2026-11:"+serverKey, "CODEC_SERVER_TOKEN", "not-"+codecToken),
			"refused the token: set CODEC_SERVER_TOKEN to the server's"},
		{"unknown command", []string{"archive-everything"}, nil, `unknown command "archive-everything"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("DATABASE_URL", dbURL)
			t.Setenv("TEMPORAL_ADDRESS", env.TemporalAddress)
			t.Setenv("ARCHIVE_TASK_QUEUE", "badinput-"+testenv.RandomID())
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var stdout, stderr bytes.Buffer
			err := dispatch(ctx, tc.args, &stdout, &stderr)
			if err == nil {
				t.Fatalf("accepted; output:\n%s", stdout.String())
			}
			if !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("error %q does not say %q", err, tc.mention)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error of more than one line: %q", err)
			}
			all := err.Error() + stdout.String() + stderr.String()
			for _, secret := range append([]string{password, awsSecret}, secrets...) {
				if secret != "" && strings.Contains(all, secret) {
					t.Fatal("a secret is echoed")
				}
			}
		})
	}
	if len(cases) < 20 {
		t.Fatalf("%d cases; the documentation promises at least 20", len(cases))
	}
}
