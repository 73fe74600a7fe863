package temporalclient

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"fmt"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/sdk/converter"
)

// Payloads carry ids, cut-offs, counts and bytes only, never row content;
// for operators who want even those opaque to the Temporal server, this
// codec encrypts every payload with AES-256-GCM under TEMPORAL_PAYLOAD_KEY
// (32 bytes, base64). Worker and starter must share the key; the Web UI then
// shows ciphertext unless pointed at a codec server holding it.
const encodingEncrypted = "binary/encrypted-aes256gcm"

type aesCodec struct{ aead cipher.AEAD }

// NewPayloadCodec returns the encrypting codec for a base64 32-byte key.
func NewPayloadCodec(keyB64 string) (converter.PayloadCodec, error) {
	key, err := base64.StdEncoding.DecodeString(keyB64)
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("TEMPORAL_PAYLOAD_KEY must be 32 bytes in base64 (openssl rand -base64 32)")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &aesCodec{aead: aead}, nil
}

func (c *aesCodec) Encode(payloads []*commonpb.Payload) ([]*commonpb.Payload, error) {
	out := make([]*commonpb.Payload, len(payloads))
	for i, p := range payloads {
		plain, err := p.Marshal()
		if err != nil {
			return nil, err
		}
		nonce := make([]byte, c.aead.NonceSize())
		if _, err := rand.Read(nonce); err != nil {
			return nil, err
		}
		out[i] = &commonpb.Payload{
			Metadata: map[string][]byte{converter.MetadataEncoding: []byte(encodingEncrypted)},
			Data:     c.aead.Seal(nonce, nonce, plain, nil),
		}
	}
	return out, nil
}

func (c *aesCodec) Decode(payloads []*commonpb.Payload) ([]*commonpb.Payload, error) {
	out := make([]*commonpb.Payload, len(payloads))
	for i, p := range payloads {
		if string(p.GetMetadata()[converter.MetadataEncoding]) != encodingEncrypted {
			out[i] = p
			continue
		}
		n := c.aead.NonceSize()
		if len(p.Data) < n {
			return nil, fmt.Errorf("encrypted payload too short")
		}
		plain, err := c.aead.Open(nil, p.Data[:n], p.Data[n:], nil)
		if err != nil {
			return nil, fmt.Errorf("decrypt payload (wrong TEMPORAL_PAYLOAD_KEY?): %w", err)
		}
		var dp commonpb.Payload
		if err := dp.Unmarshal(plain); err != nil {
			return nil, err
		}
		out[i] = &dp
	}
	return out, nil
}
