package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mockupaws/archiver/internal/temporalclient"
)

// `codec-server --check` passes against a codec server holding this
// machine's key (as an older key, after a rotation), whichever form of
// the URL the UI or the CLI is given. Its refusals are rows of TestBadInput.
func TestCodecCheck(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	serverKeys, err := temporalclient.NewKeyring("2026-11:"+k2, "2025-q4:"+k1)
	if err != nil {
		t.Fatal(err)
	}
	const token = "check-token"
	srv := httptest.NewServer(newCodecHandler(serverKeys, "archive-ns", []string{"http://127.0.0.1:8233"}, token, slog.New(slog.NewTextHandler(io.Discard, nil))))
	defer srv.Close()
	t.Setenv("TEMPORAL_PAYLOAD_KEY", "2025-q4:"+k1)
	t.Setenv("TEMPORAL_PAYLOAD_KEYS", "")
	t.Setenv("CODEC_SERVER_TOKEN", token)
	for _, u := range []string{srv.URL, srv.URL + "/", srv.URL + "/{namespace}", srv.URL + "/archive-ns"} {
		var stdout, stderr bytes.Buffer
		if err := dispatch(context.Background(), []string{"codec-server", "--namespace", "archive-ns", "--check", u}, &stdout, &stderr); err != nil {
			t.Fatalf("--check %s: %v", u, err)
		}
		if want := "codec server " + srv.URL + ": ok, decodes namespace archive-ns payloads encrypted with key id 2025-q4"; !strings.Contains(stdout.String(), want) {
			t.Fatalf("--check %s printed %q, want %q", u, stdout.String(), want)
		}
	}
	var stdout, stderr bytes.Buffer
	err = dispatch(context.Background(), []string{"codec-server", "--namespace", "other-ns", "--check", srv.URL}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "does not serve namespace other-ns") {
		t.Fatalf("--check for another namespace: %v", err)
	}
}
