package temporalclient

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"testing"

	"go.temporal.io/sdk/converter"
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
