package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	tlog "go.temporal.io/sdk/log"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/config"
	"github.com/mockupaws/archiver/internal/temporalclient"
	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/workflows"
)

func newKey(t *testing.T) string {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(k)
}

// syncBuffer is a bytes.Buffer safe for a server goroutine's logger.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// codecPost sends payloads to the codec server as the Web UI does and
// returns the status, the payloads (on 200) and the body.
func codecPost(t *testing.T, url, origin, auth string, header map[string]string, in []*commonpb.Payload) (int, []*commonpb.Payload, string) {
	t.Helper()
	body, err := protojson.Marshal(&commonpb.Payloads{Payloads: in})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil, string(b)
	}
	var out commonpb.Payloads
	if err := protojson.Unmarshal(b, &out); err != nil {
		t.Fatalf("codec response is not JSON Payloads: %v\n%s", err, b)
	}
	return resp.StatusCode, out.GetPayloads(), string(b)
}

func preflight(t *testing.T, url, origin string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodOptions, url, nil)
	req.Header.Set("Origin", origin)
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "content-type,x-namespace,authorization")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func jsonPayload(t *testing.T, v any) *commonpb.Payload {
	t.Helper()
	p, err := converter.GetDefaultDataConverter().ToPayload(v)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The codec server's HTTP contract, without the stack: routes, CORS, the
// bearer token, errors.
func TestCodecServerHTTP(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	keys, err := temporalclient.NewKeyring(k1, "")
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	const ui, token = "http://127.0.0.1:8233", "s3cret-codec-token"
	srv := httptest.NewServer(newCodecHandler(keys, "default", []string{ui}, token, slog.New(slog.NewTextHandler(&logs, nil))))
	defer srv.Close()
	bearer := "Bearer " + token

	// encode, then decode by both routes
	code, enc, body := codecPost(t, srv.URL+"/default/encode", ui, bearer, nil, []*commonpb.Payload{jsonPayload(t, map[string]string{"Table": "logs"})})
	if code != 200 || len(enc) != 1 || string(enc[0].Metadata[temporalclient.MetadataKeyID]) != keys.CurrentID() || bytes.Contains(enc[0].Data, []byte("logs")) {
		t.Fatalf("encode: %d %s", code, body)
	}
	for _, route := range []struct {
		path string
		hdr  map[string]string
	}{{"/default/decode", nil}, {"/decode", map[string]string{"X-Namespace": "default"}}, {"/decode", nil}} {
		code, dec, body := codecPost(t, srv.URL+route.path, ui, bearer, route.hdr, enc)
		if code != 200 || len(dec) != 1 || string(dec[0].Data) != `{"Table":"logs"}` || string(dec[0].Metadata["encoding"]) != "json/plain" {
			t.Fatalf("decode %s %v: %d %s", route.path, route.hdr, code, body)
		}
	}
	// CORS: the UI's origin gets its headers; another origin nothing.
	resp := preflight(t, srv.URL+"/default/decode", ui)
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != ui ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "X-Namespace") ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") ||
		resp.Header.Get("Access-Control-Allow-Credentials") != "true" {
		t.Fatalf("preflight from the UI: %d %v", resp.StatusCode, resp.Header)
	}
	if resp := preflight(t, srv.URL+"/default/decode", "http://evil.example"); resp.StatusCode != http.StatusForbidden || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("preflight from another origin: %d %v", resp.StatusCode, resp.Header)
	}
	// The token: missing or wrong is 401, never echoed or logged.
	for _, auth := range []string{"", "Bearer wrong", token, "Bearer " + token + "x"} {
		code, _, body := codecPost(t, srv.URL+"/default/decode", ui, auth, nil, enc)
		if code != http.StatusUnauthorized || strings.Contains(body, token) {
			t.Fatalf("Authorization %q: %d %s", auth, code, body)
		}
	}
	// Errors: another namespace, a wrong route, GET, not JSON, an unknown key id.
	if code, _, body := codecPost(t, srv.URL+"/other/decode", ui, bearer, nil, enc); code != 404 || !strings.Contains(body, `namespace "other" is not served here`) {
		t.Fatalf("other namespace: %d %s", code, body)
	}
	if code, _, _ := codecPost(t, srv.URL+"/default/transcode", ui, bearer, nil, enc); code != 404 {
		t.Fatalf("unknown route: %d", code)
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/default/decode", nil)
	req.Header.Set("Authorization", bearer)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET: %v %v", resp, err)
	}
	req, _ = http.NewRequest(http.MethodPost, srv.URL+"/default/decode", strings.NewReader("payloads please"))
	req.Header.Set("Authorization", bearer)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("not JSON: %v %v", resp, err)
	}
	other, _ := temporalclient.NewKeyring("k2-id:"+k2, "")
	foreign, _ := other.Encode([]*commonpb.Payload{jsonPayload(t, "x")})
	if code, _, body := codecPost(t, srv.URL+"/default/decode", ui, bearer, nil, foreign); code != 400 || !strings.Contains(body, `key id "k2-id"`) || strings.Contains(body, k1) || strings.Contains(body, k2) {
		t.Fatalf("unknown key id: %d %s", code, body)
	}
	if strings.Contains(logs.String(), token) || strings.Contains(logs.String(), k1) {
		t.Fatal("the token or a key is in the codec server's log")
	}
	if !strings.Contains(logs.String(), "missing or wrong bearer token") {
		t.Fatalf("refused requests are not logged:\n%s", logs.String())
	}
	for in, want := range map[string]string{
		"http://127.0.0.1:8233/":                      "http://127.0.0.1:8233,http://localhost:8233",
		"https://ui.example.com/namespaces/default, ": "https://ui.example.com",
	} {
		if got, err := parseOrigins(in); err != nil || strings.Join(got, ",") != want {
			t.Fatalf("parseOrigins(%q) = %q, %v; want %s", in, got, err, want)
		}
	}
	// A bare server (no token) serves without Authorization.
	open := httptest.NewServer(newCodecHandler(keys, "default", []string{ui}, "", slog.New(slog.NewTextHandler(io.Discard, nil))))
	defer open.Close()
	if code, _, body := codecPost(t, open.URL+"/default/decode", "", "", nil, enc); code != 200 {
		t.Fatalf("no token configured: %d %s", code, body)
	}
}

// collectPayloads gathers the payloads of an event that go through the
// data converter: every Payload field except headers (the tracing
// context, plain by design) and search attributes (indexed by the server).
func collectPayloads(m protoreflect.Message, out *[]*commonpb.Payload) {
	if p, ok := m.Interface().(*commonpb.Payload); ok {
		*out = append(*out, p)
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Name() == "header" || fd.Name() == "search_attributes" {
			return true
		}
		switch {
		case fd.IsList() && fd.Kind() == protoreflect.MessageKind:
			for i := 0; i < v.List().Len(); i++ {
				collectPayloads(v.List().Get(i).Message(), out)
			}
		case fd.IsMap() && fd.MapValue().Kind() == protoreflect.MessageKind:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				collectPayloads(mv.Message(), out)
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Kind() == protoreflect.MessageKind:
			collectPayloads(v.Message(), out)
		}
		return true
	})
}

// Against the stack: a run with TEMPORAL_PAYLOAD_KEY set (the real worker
// and workflow; logs archived, reports failing for want of a bucket) leaves
// only ciphertext in its history, failure message included; `starter
// codec-server` (run as the command, after a key rotation: the run's key
// only in TEMPORAL_PAYLOAD_KEYS) decodes it all to the plaintext JSON for
// the UI's origin and the token's holder, and the temporal CLI shows it
// through --codec-endpoint.
func TestCodecServerOnStack(t *testing.T) {
	env := testenv.Load(t)
	ctx := context.Background()
	db, dbURL := testenv.NewDB(t)
	asOf := time.Date(2026, 3, 15, 3, 0, 0, 0, time.UTC)
	testenv.InsertLogs(t, db, testenv.SpreadTimes(400, asOf, 48*time.Hour))
	dir := t.TempDir()
	testenv.InsertReports(t, db, dir, []testenv.Report{{ID: uuid.New(), Created: asOf.AddDate(-1, 0, 0), Format: "csv", File: "r.csv", Content: []byte("a,b\n")}})

	k1 := newKey(t)
	t.Setenv(temporalclient.KeysEnv, "")
	c := encryptingClient(t, env, k1)
	t.Cleanup(c.Close) // after the worker's stop (cleanups run last-in first-out)
	if err := temporalclient.EnsureSearchAttributes(ctx, c, env.Namespace); err != nil {
		t.Fatal(err)
	}
	queue := testenv.StartWorker(t, c, &activities.Activities{DB: testenv.WorkerPool(t, dbURL), ReportsDir: dir})
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "codec-" + testenv.RandomID(), TaskQueue: queue},
		workflows.ArchiveWorkflowName, workflows.ArchiveInput{Tables: []string{"logs", "reports"}, AsOf: asOf})
	if err != nil {
		t.Fatal(err)
	}
	runErr := testenv.Wait(t, c, run, testenv.DefaultWait, nil)
	if runErr == nil || !strings.Contains(runErr.Error(), "REPORTS_ARCHIVE_BUCKET") {
		t.Fatalf("run error %v: want the reports failure, decoded by the client", runErr)
	}
	var jobID string
	if err := db.QueryRow(ctx, `SELECT id::text FROM archive_jobs WHERE status = 'completed' AND records_archived > 0`).Scan(&jobID); err != nil {
		t.Fatalf("the logs job: %v", err)
	}

	// The history: every payload encrypted under k1's id, the failure too.
	k1ID := func() string { r, _ := temporalclient.NewKeyring(k1, ""); return r.CurrentID() }()
	var raw bytes.Buffer
	var payloads, failures []*commonpb.Payload
	iter := c.GetWorkflowHistory(ctx, run.GetID(), run.GetRunID(), false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for iter.HasNext() {
		ev, err := iter.Next()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := proto.Marshal(ev)
		raw.Write(b)
		collectPayloads(ev.ProtoReflect(), &payloads)
		if f := ev.GetActivityTaskFailedEventAttributes().GetFailure(); f != nil {
			if f.GetMessage() != "Encoded failure" || f.GetStackTrace() != "" || f.GetEncodedAttributes() == nil {
				t.Fatalf("activity failure not encoded: message %q", f.GetMessage())
			}
			failures = append(failures, f.GetEncodedAttributes())
		}
	}
	if len(payloads) < 10 || len(failures) == 0 {
		t.Fatalf("%d payloads, %d activity failures in the history: want a run's worth and the reports failure", len(payloads), len(failures))
	}
	for _, p := range payloads {
		if string(p.Metadata["encoding"]) != "binary/encrypted-aes256gcm" || string(p.Metadata[temporalclient.MetadataKeyID]) != k1ID {
			t.Fatalf("a payload in the history is not encrypted under k1 (%s): %v", k1ID, p.Metadata)
		}
	}
	for _, plain := range []string{jobID, "REPORTS_ARCHIVE_BUCKET", "no bucket configured"} {
		if strings.Contains(raw.String(), plain) {
			t.Fatalf("%q in plaintext in the history", plain)
		}
	}

	// The codec server, as the command, after a rotation: k2 current, k1 listed.
	const ui, token = "http://127.0.0.1:8233", "codec-test-token-7f3a"
	t.Setenv("TEMPORAL_PAYLOAD_KEY", newKey(t))
	t.Setenv(temporalclient.KeysEnv, "2025-q4:"+k1)
	t.Setenv(CodecTokenEnv, token)
	t.Setenv("TEMPORAL_UI_URL", ui+"/")
	t.Setenv("TEMPORAL_NAMESPACE", env.Namespace)
	base := startCodecServer(ctx, t, nil, token, k1)
	ns := env.Namespace

	if resp := preflight(t, base+"/"+ns+"/decode", ui); resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != ui {
		t.Fatalf("preflight from the UI's origin: %d %v", resp.StatusCode, resp.Header)
	}
	if code, _, body := codecPost(t, base+"/"+ns+"/decode", ui, "Bearer wrong-token", nil, payloads); code != http.StatusUnauthorized || strings.Contains(body, token) {
		t.Fatalf("wrong token: %d %s", code, body)
	}
	code, dec, body := codecPost(t, base+"/decode", ui, "Bearer "+token, map[string]string{"X-Namespace": ns}, payloads)
	if code != 200 || len(dec) != len(payloads) {
		t.Fatalf("decode: %d %.500s", code, body)
	}
	var all strings.Builder
	for _, p := range dec {
		if e := string(p.Metadata["encoding"]); e != "json/plain" && e != "binary/null" {
			t.Fatalf("decoded payload with encoding %q", e)
		}
		all.Write(p.Data)
	}
	if !strings.Contains(all.String(), jobID) || !strings.Contains(all.String(), `"logs"`) {
		t.Fatalf("the decoded payloads lack the job id or the table: %.1000s", all.String())
	}
	code, dec, body = codecPost(t, base+"/"+ns+"/decode", ui, "Bearer "+token, nil, failures[:1])
	var attrs struct {
		Message    string `json:"message"`
		StackTrace string `json:"stack_trace"`
	}
	if code != 200 || json.Unmarshal(dec[0].GetData(), &attrs) != nil || !strings.Contains(attrs.Message, "no bucket configured: set REPORTS_ARCHIVE_BUCKET") {
		t.Fatalf("the failure's encoded attributes: %d %s", code, body)
	}

	// The temporal CLI through --codec-endpoint ({namespace} substituted).
	if bin := os.Getenv("ARCHIVER_TEMPORAL_BIN"); bin != "" {
		out, err := exec.Command(bin, "workflow", "show", "-w", run.GetID(), "-r", run.GetRunID(), "--address", env.TemporalAddress,
			"-n", ns, "--codec-endpoint", base+"/{namespace}", "--codec-auth", "Bearer "+token, "-o", "json", "--command-timeout", "20s").CombinedOutput()
		if err != nil {
			t.Fatalf("temporal workflow show --codec-endpoint: %v\n%.2000s", err, out)
		}
		if shown := decodedData(t, out); !strings.Contains(shown, jobID) || !strings.Contains(shown, "no bucket configured") {
			t.Fatalf("temporal workflow show --codec-endpoint shows no plaintext job id or failure message:\n%.2000s", out)
		}
	}
}

// decodedData is every "data" value (base64) of the CLI's JSON output,
// decoded and concatenated.
func decodedData(t *testing.T, out []byte) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("CLI output is not JSON: %v\n%.1000s", err, out)
	}
	var b strings.Builder
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if s, ok := e.(string); ok && k == "data" {
					d, _ := base64.StdEncoding.DecodeString(s)
					b.Write(d)
				}
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(v)
	return b.String()
}

// startCodecServer runs `starter codec-server --listen 127.0.0.1:0` with
// args added until the test ends, and returns its base URL. At the end it
// checks the server stopped cleanly and that none of secrets is in its
// output.
func startCodecServer(ctx context.Context, t *testing.T, args []string, secrets ...string) string {
	t.Helper()
	sctx, stop := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	var stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- dispatch(sctx, append([]string{"codec-server", "--listen", "127.0.0.1:0"}, args...), pw, &stderr)
		pw.Close()
	}()
	lines := bufio.NewScanner(pr)
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), "codec server on http://") {
		stop()
		t.Fatalf("codec-server did not start: %q\n%s", lines.Text(), stderr.String())
	}
	base := strings.Fields(strings.TrimPrefix(lines.Text(), "codec server on "))[0]
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("codec-server: %v", err)
		}
		for _, s := range secrets {
			if strings.Contains(stderr.String(), s) {
				t.Error("a token or a key is in the codec server's output")
			}
		}
	})
	return base
}

// encryptingClient is a Temporal client of the dev stack that encrypts
// payloads with key, as the starter's and worker's do (warnings only in
// its log); the caller closes it.
func encryptingClient(t *testing.T, env testenv.Env, key string) client.Client {
	t.Helper()
	opts, err := temporalclient.Options(config.Config{TemporalAddress: env.TemporalAddress, TemporalNamespace: env.Namespace, TemporalPayloadKey: key})
	if err != nil {
		t.Fatal(err)
	}
	opts.Logger = tlog.NewStructuredLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	c, err := client.Dial(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
