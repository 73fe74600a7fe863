package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/sdk/converter"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/mockupaws/archiver/internal/temporalclient"
)

// CodecTokenEnv is the bearer token callers of the codec server must send,
// when set. It is read from the environment only and never logged.
const CodecTokenEnv = "CODEC_SERVER_TOKEN"

// codecBodyLimit bounds a request: the Web UI sends the payloads of a few
// events at a time, each at most the server's blob size limit (2 MiB).
const codecBodyLimit = 32 << 20

// cmdCodecServer serves the payload codec over HTTP the way the Temporal Web
// UI and CLI expect (samples-go's codec-server): POST /{namespace}/decode
// and /{namespace}/encode (or /decode and /encode with the namespace in
// X-Namespace) take and return the JSON form of temporal.api.common.v1.Payloads.
func cmdCodecServer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("codec-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8081", "address to listen on (host:port)")
	uiDefault := strings.TrimSpace(getenv("TEMPORAL_UI_URL"))
	if uiDefault == "" {
		uiDefault = "http://localhost:8233"
	}
	origins := fs.String("ui-origin", uiDefault, "Web UI origin(s) allowed by CORS, comma-separated; TEMPORAL_UI_URL's by default")
	nsDefault := strings.TrimSpace(getenv("TEMPORAL_NAMESPACE"))
	if nsDefault == "" {
		nsDefault = "default"
	}
	namespace := fs.String("namespace", nsDefault, "the namespace served; TEMPORAL_NAMESPACE by default")
	check := fs.String("check", "", "instead of serving, check the codec server at this URL: it must decode a payload encrypted with this machine's key")
	if err := fs.Parse(args); err != nil {
		return usageErr("%v", err)
	}
	if fs.NArg() > 0 {
		return usageErr("codec-server takes no arguments, got %q", fs.Args())
	}
	allowed, err := parseOrigins(*origins)
	if err != nil {
		return usageErr("%v", err)
	}
	keys, err := temporalclient.NewKeyring(getenv(temporalclient.KeyEnv), getenv(temporalclient.KeysEnv))
	if err != nil {
		return fmt.Errorf("codec-server: %w", err)
	}
	token := strings.TrimSpace(getenv(CodecTokenEnv))
	if *check != "" {
		return checkCodecServer(ctx, *check, *namespace, keys, token, stdout)
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		hint := ""
		if errors.Is(err, syscall.EADDRINUSE) {
			hint = " (another codec server, or `make run`'s, already listens there: check it with codec-server --check, or choose another --listen)"
		}
		return fmt.Errorf("codec-server: listen on %s (--listen): %w%s", *listen, err, hint)
	}
	srv := &http.Server{
		Handler:           newCodecHandler(keys, *namespace, allowed, token, logger),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	auth := "none (keep it on loopback or behind an authenticating proxy)"
	if token != "" {
		auth = "bearer token from " + CodecTokenEnv
	}
	enc := keys.CurrentID()
	if enc == "" {
		enc = "none (no " + temporalclient.KeyEnv + ": encode passes payloads through)"
	}
	fmt.Fprintf(stdout, "codec server on http://%s for namespace %s: POST /%s/decode, /%s/encode (or /decode, /encode with X-Namespace)\n",
		ln.Addr(), *namespace, *namespace, *namespace)
	fmt.Fprintf(stdout, "  CORS origins: %s; auth: %s; encrypting with key id %s; decrypting key ids: %s\n",
		strings.Join(allowed, ", "), auth, enc, strings.Join(keys.IDs(), ", "))

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("codec-server: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			return fmt.Errorf("codec-server: shutdown: %w", err)
		}
		return nil
	}
}

// parseOrigins reads --ui-origin: each an origin (scheme://host[:port]); a
// URL with a path is cut to its origin, since browsers send only that. A
// loopback origin brings its twin (localhost and 127.0.0.1).
func parseOrigins(s string) ([]string, error) {
	var out []string
	for _, o := range strings.Split(s, ",") {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("--ui-origin %q is not an origin such as http://127.0.0.1:8233", o)
		}
		out = append(out, u.Scheme+"://"+u.Host)
		// A loopback UI's origin is whichever name the browser was given.
		if twin, ok := map[string]string{"localhost": "127.0.0.1", "127.0.0.1": "localhost"}[u.Hostname()]; ok {
			h := twin
			if u.Port() != "" {
				h = net.JoinHostPort(twin, u.Port())
			}
			out = append(out, u.Scheme+"://"+h)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--ui-origin is empty: give the Web UI's origin, such as http://127.0.0.1:8233")
	}
	return out, nil
}

// newCodecHandler is the codec server's HTTP handler: CORS for the UI's
// origins, the bearer-token check when a token is set, then encode or
// decode for namespace.
func newCodecHandler(codec converter.PayloadCodec, namespace string, origins []string, token string, logger *slog.Logger) http.Handler {
	allowed := map[string]bool{}
	for _, o := range origins {
		allowed[o] = true
	}
	var tokenSum [32]byte
	if token != "" {
		tokenSum = sha256.Sum256([]byte("Bearer " + token))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin != "" && allowed[origin] {
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Allow-Credentials", "true")
			h.Set("Access-Control-Allow-Headers", "Authorization,Content-Type,X-Namespace")
			h.Set("Access-Control-Allow-Methods", "POST,OPTIONS")
			h.Set("Access-Control-Max-Age", "600")
		}
		w.Header().Add("Vary", "Origin")
		if r.Method == http.MethodOptions {
			// A preflight carries no credentials: answer it before the
			// token check, and only for an allowed origin.
			if origin == "" || !allowed[origin] {
				logger.Warn("codec preflight refused: origin not allowed (--ui-origin)", "origin", origin, "remote", r.RemoteAddr)
				http.Error(w, "origin not allowed", http.StatusForbidden)
				return
			}
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if token != "" {
			got := sha256.Sum256([]byte(r.Header.Get("Authorization")))
			if subtle.ConstantTimeCompare(got[:], tokenSum[:]) != 1 {
				logger.Warn("codec request refused: missing or wrong bearer token", "path", r.URL.Path, "remote", r.RemoteAddr)
				w.Header().Set("WWW-Authenticate", `Bearer realm="codec"`)
				http.Error(w, "unauthorized: send Authorization: Bearer <"+CodecTokenEnv+">", http.StatusUnauthorized)
				return
			}
		}
		ns, op, ok := codecRoute(r.URL.Path)
		if !ok {
			http.NotFound(w, r)
			return
		}
		if ns == "" {
			ns = r.Header.Get("X-Namespace")
		}
		if ns != "" && ns != namespace {
			http.Error(w, fmt.Sprintf("namespace %q is not served here (this codec server serves %q)", ns, namespace), http.StatusNotFound)
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST, OPTIONS")
			http.Error(w, "method not allowed: POST the payloads", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, codecBodyLimit))
		if err != nil {
			status := http.StatusBadRequest
			if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
				status = http.StatusRequestEntityTooLarge
			}
			http.Error(w, "read request: "+err.Error(), status)
			return
		}
		var in commonpb.Payloads
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(body, &in); err != nil {
			http.Error(w, "the body is not JSON Payloads ({\"payloads\": [...]}): "+err.Error(), http.StatusBadRequest)
			return
		}
		var out []*commonpb.Payload
		if op == "decode" {
			out, err = codec.Decode(in.GetPayloads())
		} else {
			out, err = codec.Encode(in.GetPayloads())
		}
		if err != nil {
			logger.Warn("codec "+op+" failed", "namespace", namespace, "payloads", len(in.GetPayloads()), "error", err)
			http.Error(w, op+": "+err.Error(), http.StatusBadRequest)
			return
		}
		resp, err := protojson.Marshal(&commonpb.Payloads{Payloads: out})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(resp)
	})
}

// codecRoute splits /{namespace}/decode, /{namespace}/encode, /decode and
// /encode.
func codecRoute(path string) (namespace, op string, ok bool) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case len(parts) == 1:
		op = parts[0]
	case len(parts) == 2 && parts[0] != "":
		namespace, op = parts[0], parts[1]
	default:
		return "", "", false
	}
	if op != "decode" && op != "encode" {
		return "", "", false
	}
	return namespace, op, true
}
