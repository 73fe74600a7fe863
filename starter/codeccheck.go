package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/mockupaws/archiver/internal/temporalclient"
)

// codecCheckTimeout bounds the probe: the Web UI gives a codec server
// about as long before it shows the payloads still encrypted.
const codecCheckTimeout = 5 * time.Second

// checkCodecServer is `codec-server --check URL`: the round trip the Web
// UI and `temporal --codec-endpoint` make, from this machine's keys. It
// encrypts a probe with TEMPORAL_PAYLOAD_KEY, POSTs it to
// URL/{namespace}/decode with CODEC_SERVER_TOKEN, and wants the probe back.
// An unreachable server, a refused token, another namespace or a server
// without this key (its key id is named, never a key) is a one-line error:
// the UI shows those only as payloads left encrypted, and the CLI as a
// timeout.
func checkCodecServer(ctx context.Context, endpoint, namespace string, keys *temporalclient.Keyring, token string, stdout io.Writer) error {
	// The URL as the UI and the CLI take it: with or without
	// /{namespace} (or the namespace itself) at the end.
	base := strings.TrimSuffix(strings.TrimSpace(endpoint), "/")
	base = strings.TrimSuffix(strings.TrimSuffix(base, "/{namespace}"), "/"+namespace)
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageErr("--check %q is not a codec server URL such as http://127.0.0.1:8081", endpoint)
	}
	target := base + "/" + url.PathEscape(namespace) + "/decode"

	const probe = `"archiver codec check"`
	plain := &commonpb.Payload{Metadata: map[string][]byte{"encoding": []byte("json/plain")}, Data: []byte(probe)}
	enc, err := keys.Encode([]*commonpb.Payload{plain})
	if err != nil {
		return fmt.Errorf("codec check: encrypt the probe: %w", err)
	}
	body, err := protojson.Marshal(&commonpb.Payloads{Payloads: enc})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, codecCheckTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return usageErr("--check %q: %v", endpoint, err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		// The transport's error names the URL and the cause (connection
		// refused, no such host, timeout); it never holds the token.
		return fmt.Errorf("codec server %s is unreachable: %s (is `starter codec-server` running there? while it is down the Web UI shows payloads encrypted and `temporal --codec-endpoint` times out)",
			base, oneLine(err.Error()))
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	said := oneLine(string(raw))
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return fmt.Errorf("codec server %s refused the token: set %s to the server's (the value is not shown)", base, CodecTokenEnv)
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("codec server %s does not serve namespace %s at %s: %s (give --namespace, or check the URL)", base, namespace, target, said)
	case resp.StatusCode != http.StatusOK:
		id := keys.CurrentID()
		return fmt.Errorf("codec server %s cannot decode a payload encrypted with this machine's key (key id %q): %d %s", base, id, resp.StatusCode, said)
	}
	var out commonpb.Payloads
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(raw, &out); err != nil || len(out.GetPayloads()) != 1 {
		return fmt.Errorf("codec server %s answered 200 but not with the probe's payload: %s", base, said)
	}
	if got := out.GetPayloads()[0]; !json.Valid(got.GetData()) || string(got.GetData()) != probe {
		return fmt.Errorf("codec server %s answered 200 but returned the probe still encoded (encoding %q): is it a codec server of another key set?",
			base, got.GetMetadata()["encoding"])
	}
	id := keys.CurrentID()
	if id == "" {
		id = "none (no " + temporalclient.KeyEnv + ": the probe was not encrypted)"
	}
	fmt.Fprintf(stdout, "codec server %s: ok, decodes namespace %s payloads encrypted with key id %s\n", base, namespace, id)
	return nil
}

// oneLine squeezes a message (an HTTP body, a transport error) to one
// line of at most 300 characters.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
