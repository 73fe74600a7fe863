package temporalclient

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
)

func key() string {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return base64.StdEncoding.EncodeToString(k)
}

func TestPayloadCodec(t *testing.T) {
	codec, err := NewPayloadCodec(key())
	if err != nil {
		t.Fatal(err)
	}
	dc := converter.NewCodecDataConverter(converter.GetDefaultDataConverter(), codec)
	in := map[string]string{"JobID": "6f1c2a4e", "Table": "logs"}
	p, err := dc.ToPayload(in)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(p.Data, []byte("6f1c2a4e")) || bytes.Contains(p.Data, []byte("logs")) {
		t.Fatal("the payload is not encrypted")
	}
	var out map[string]string
	if err := dc.FromPayload(p, &out); err != nil || out["JobID"] != "6f1c2a4e" {
		t.Fatalf("round trip: %v, %v", out, err)
	}
	other, _ := NewPayloadCodec(key())
	if err := converter.NewCodecDataConverter(converter.GetDefaultDataConverter(), other).FromPayload(p, &out); err == nil {
		t.Fatal("decrypted with the wrong key")
	}
	if _, err := NewPayloadCodec("c2hvcnQ="); err == nil {
		t.Fatal("a short key was accepted")
	}
}

// legacyEncode is the format written before key ids (kept here frozen):
// nonce || AES-256-GCM(payload), no associated data, no key id.
func legacyEncode(t *testing.T, keyB64 string, p *commonpb.Payload) *commonpb.Payload {
	t.Helper()
	raw, _ := base64.StdEncoding.DecodeString(keyB64)
	block, _ := aes.NewCipher(raw)
	aead, _ := cipher.NewGCM(block)
	plain, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, aead.NonceSize())
	_, _ = rand.Read(nonce)
	return &commonpb.Payload{
		Metadata: map[string][]byte{converter.MetadataEncoding: []byte("binary/encrypted-aes256gcm")},
		Data:     aead.Seal(nonce, nonce, plain, nil),
	}
}

// legacyDecode is the previous version's Decode, frozen.
func legacyDecode(t *testing.T, keyB64 string, p *commonpb.Payload) string {
	t.Helper()
	raw, _ := base64.StdEncoding.DecodeString(keyB64)
	block, _ := aes.NewCipher(raw)
	aead, _ := cipher.NewGCM(block)
	n := aead.NonceSize()
	plain, err := aead.Open(nil, p.Data[:n], p.Data[n:], nil)
	if err != nil {
		t.Fatalf("previous version's decode: %v", err)
	}
	var dp commonpb.Payload
	if err := dp.Unmarshal(plain); err != nil {
		t.Fatal(err)
	}
	return string(dp.Data)
}

func plainPayload(t *testing.T, v any) *commonpb.Payload {
	t.Helper()
	p, err := converter.GetDefaultDataConverter().ToPayload(v)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func decodeOne(t *testing.T, c converter.PayloadCodec, p *commonpb.Payload) (string, error) {
	t.Helper()
	out, err := c.Decode([]*commonpb.Payload{p})
	if err != nil {
		return "", err
	}
	return string(out[0].GetData()), nil
}

// Keys rotate: new payloads record the current key's id; payloads of a
// rotated-out key decode while it is listed in TEMPORAL_PAYLOAD_KEYS (under
// its old id or any name), payloads written before key ids decode with
// whichever key opens them, and an unknown id is an error naming it.
func TestKeyRotation(t *testing.T) {
	k1, k2, k3 := key(), key(), key()
	old, err := NewKeyring(k1, "")
	if err != nil {
		t.Fatal(err)
	}
	oldEnc, _ := old.Encode([]*commonpb.Payload{plainPayload(t, "written under k1")})
	id1 := string(oldEnc[0].Metadata[MetadataKeyID])
	if id1 == "" || id1 != old.CurrentID() || len(id1) != 16 {
		t.Fatalf("payload key id %q, want the key's 16-digit fingerprint %q", id1, old.CurrentID())
	}
	if bytes.Contains(oldEnc[0].Data, []byte("written under")) {
		t.Fatal("not encrypted")
	}
	legacy := legacyEncode(t, k1, plainPayload(t, "written before key ids"))

	// Rotated: k2 encrypts, k1 is listed under a name of the operator's.
	rotated, err := NewKeyring("2026-11:"+k2, "2025-q4:"+k1+", other:"+k3)
	if err != nil {
		t.Fatal(err)
	}
	if rotated.CurrentID() != "2026-11" || strings.Join(rotated.IDs(), ",") != "2026-11,2025-q4,other" {
		t.Fatalf("ids %q, current %q", rotated.IDs(), rotated.CurrentID())
	}
	for name, p := range map[string]*commonpb.Payload{"k1 payload": oldEnc[0], "legacy payload": legacy} {
		got, err := decodeOne(t, rotated, p)
		if err != nil || !strings.Contains(got, "written") {
			t.Fatalf("%s after rotation: %q, %v", name, got, err)
		}
	}
	newEnc, _ := rotated.Encode([]*commonpb.Payload{plainPayload(t, "written under k2")})
	if id := string(newEnc[0].Metadata[MetadataKeyID]); id != "2026-11" {
		t.Fatalf("new payload key id %q, want 2026-11", id)
	}
	// The previous version's decoder (frozen below) reads new payloads:
	// a rolling upgrade with old workers still running is safe.
	if got := legacyDecode(t, k2, newEnc[0]); !strings.Contains(got, "written under k2") {
		t.Fatalf("the previous version cannot read a new payload: %q", got)
	}
	// A payload labelled with another key's id fails, naming the id.
	relabelled := &commonpb.Payload{Metadata: map[string][]byte{}, Data: newEnc[0].Data}
	for k, v := range newEnc[0].Metadata {
		relabelled.Metadata[k] = v
	}
	relabelled.Metadata[MetadataKeyID] = []byte("2025-q4")
	if _, err := decodeOne(t, rotated, relabelled); err == nil || !strings.Contains(err.Error(), `key id "2025-q4"`) {
		t.Fatalf("relabelled payload: %v", err)
	}

	// k1 dropped from the list: its payloads fail, naming the id.
	dropped, _ := NewKeyring("2026-11:"+k2, "")
	_, err = decodeOne(t, dropped, oldEnc[0])
	if err == nil || !strings.Contains(err.Error(), `key id "`+id1+`"`) || !strings.Contains(err.Error(), KeysEnv) {
		t.Fatalf("unknown key id: %v", err)
	}
	if _, err := decodeOne(t, dropped, legacy); err == nil || !strings.Contains(err.Error(), "without a key id") {
		t.Fatalf("legacy payload without its key: %v", err)
	}
	for _, k := range []string{k1, k2, k3} {
		if err != nil && strings.Contains(err.Error(), k) {
			t.Fatal("a key is echoed")
		}
	}
	// A named key's payloads record its name: listed later under another
	// name they do not decode; under the same name they do.
	later, _ := NewKeyring(key(), "x:"+k2)
	if _, err := decodeOne(t, later, newEnc[0]); err == nil {
		t.Fatal("decoded under a renamed id: the given id is what payloads record")
	}
	later, _ = NewKeyring(key(), "2026-11:"+k2)
	if got, err := decodeOne(t, later, newEnc[0]); err != nil || !strings.Contains(got, "k2") {
		t.Fatalf("k2 payload after a second rotation: %q, %v", got, err)
	}
	// Decode only: no current key, nothing new encrypted.
	ro, err := NewKeyring("", "2025-q4:"+k1)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := decodeOne(t, ro, oldEnc[0]); err != nil || !strings.Contains(got, "k1") {
		t.Fatalf("decode-only keyring: %q, %v", got, err)
	}
	if out, _ := ro.Encode([]*commonpb.Payload{plainPayload(t, "x")}); out[0].Metadata[MetadataKeyID] != nil {
		t.Fatal("a decode-only keyring encrypted")
	}
}

// Bad keys fail naming the variable (and the entry), never showing a key.
func TestKeyErrors(t *testing.T) {
	good := key()
	short := base64.StdEncoding.EncodeToString([]byte("sixteen byte key"))
	cases := []struct{ current, others, want string }{
		{"c2hvcnQ=", "", "TEMPORAL_PAYLOAD_KEY must be 32 bytes in base64"},
		{"not base64 at all!!", "", "TEMPORAL_PAYLOAD_KEY must be 32 bytes in base64"},
		{short, "", "TEMPORAL_PAYLOAD_KEY must be 32 bytes in base64"},
		{"bad id!:" + good, "", "TEMPORAL_PAYLOAD_KEY: the key id before the colon"},
		{":" + good, "", "TEMPORAL_PAYLOAD_KEY: the key id before the colon is empty"},
		{good, good, "TEMPORAL_PAYLOAD_KEYS entry 1 is not id:key"},
		{good, "a:" + good + "," + short, "TEMPORAL_PAYLOAD_KEYS entry 2 is not id:key"},
		{good, "a:" + short, `TEMPORAL_PAYLOAD_KEYS entry 1 (key id "a"): the key must be 32 bytes in base64`},
		{good, ":" + good, "TEMPORAL_PAYLOAD_KEYS entry 1: the key id before the colon"},
		{good, good + ":x", "TEMPORAL_PAYLOAD_KEYS entry 1: the key id before the colon"},
		{"a:" + good, "a:" + key(), `TEMPORAL_PAYLOAD_KEYS entry 1: key id "a" names two different keys`},
		{"", "", "no payload key: set TEMPORAL_PAYLOAD_KEY"},
	}
	for _, tc := range cases {
		_, err := NewKeyring(tc.current, tc.others)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewKeyring(%.12q…, %.12q…): %v, want %q", tc.current, tc.others, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), good) || strings.Contains(err.Error(), short) {
			t.Errorf("the key is echoed: %v", err)
		}
	}
	// The same key twice (current and listed) is fine.
	if _, err := NewKeyring(good, "old:"+good); err != nil {
		t.Fatal(err)
	}
}

// Failure messages and stack traces are encrypted too; failures recorded
// before (plain message) still convert.
func TestFailureConverterEncodes(t *testing.T) {
	codec, _ := NewPayloadCodec(key())
	_, fc := Converters(codec)
	f := fc.ErrorToFailure(temporal.NewNonRetryableApplicationError("no bucket configured: SECRET-ish detail", "StorageMisconfigured", nil))
	if strings.Contains(f.GetMessage(), "SECRET") || strings.Contains(f.String(), "SECRET") {
		t.Fatalf("failure message in plaintext: %v", f)
	}
	if string(f.GetEncodedAttributes().GetMetadata()[converter.MetadataEncoding]) != encodingEncrypted {
		t.Fatalf("encoded attributes not encrypted: %v", f.GetEncodedAttributes())
	}
	err := fc.FailureToError(f)
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || !strings.Contains(appErr.Error(), "SECRET-ish detail") || appErr.Type() != "StorageMisconfigured" {
		t.Fatalf("round trip: %v", err)
	}
	old := temporal.GetDefaultFailureConverter().ErrorToFailure(temporal.NewApplicationError("recorded before", "T"))
	if err := fc.FailureToError(old); err == nil || !strings.Contains(err.Error(), "recorded before") {
		t.Fatalf("plain failure: %v", err)
	}
}
