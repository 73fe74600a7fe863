package temporalclient

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/sdk/converter"
)

// Payloads carry ids, cut-offs, counts and bytes only, never row content;
// for operators who want even those opaque to the Temporal server, this
// codec encrypts every payload with AES-256-GCM under TEMPORAL_PAYLOAD_KEY
// (32 bytes, base64). Worker and starter must share the key; the Web UI and
// the CLI show plaintext only through a codec server holding it (`starter
// codec-server`).
//
// Keys rotate: a payload records the id of the key that encrypted it
// (metadata encryption-key-id), and TEMPORAL_PAYLOAD_KEYS (id:base64,id:base64) lists older keys
// that still decrypt. A key's id is the one given with it
// (TEMPORAL_PAYLOAD_KEY=2026-11:base64) or else its fingerprint (16 hex
// digits of a SHA-256 of the key: it identifies the key without revealing
// it); a payload is looked up under both, so an old key may be listed under
// any name. Payloads written before key ids existed (no id) decrypt with
// whichever configured key opens them. The ciphertext itself is as before
// (nonce || AES-256-GCM, no associated data), so a worker of the previous
// version still reads new payloads under the same key during a rolling
// upgrade.
const (
	encodingEncrypted = "binary/encrypted-aes256gcm"
	// MetadataKeyID is the payload metadata naming the key that encrypted it.
	MetadataKeyID = "encryption-key-id"
	// KeysEnv lists older keys that still decrypt (id:base64,...).
	KeysEnv = "TEMPORAL_PAYLOAD_KEYS"
	// KeyEnv is the key that encrypts new payloads.
	KeyEnv = "TEMPORAL_PAYLOAD_KEY"
)

// keyIDPattern: short enough (32) that a 32-byte key in base64 (43 or more
// characters) can never pass for an id and be echoed in an error.
var keyIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$`)

type payloadKey struct {
	id          string // what new payloads record: the given id, else the fingerprint
	fingerprint string
	aead        cipher.AEAD
}

// Keyring is the payload codec: it encrypts with the current key and
// decrypts with any configured key.
type Keyring struct {
	current *payloadKey            // nil: encode passes payloads through (decode only)
	byID    map[string]*payloadKey // given ids and fingerprints
	all     []*payloadKey          // current first, then TEMPORAL_PAYLOAD_KEYS in order
}

// NewPayloadCodec returns the encrypting codec for one key (TEMPORAL_PAYLOAD_KEY's
// syntax: base64, optionally preceded by an id and a colon).
func NewPayloadCodec(keyB64 string) (*Keyring, error) { return NewKeyring(keyB64, "") }

// NewKeyring builds the codec from TEMPORAL_PAYLOAD_KEY (current, may be
// empty: then nothing new is encrypted and the listed keys only decrypt)
// and TEMPORAL_PAYLOAD_KEYS (others). Errors name the variable and never
// show a key.
func NewKeyring(current, others string) (*Keyring, error) {
	r := &Keyring{byID: map[string]*payloadKey{}}
	if current = strings.TrimSpace(current); current != "" {
		id, b64, named := strings.Cut(current, ":")
		if !named {
			id, b64 = "", current
		} else if id == "" {
			return nil, fmt.Errorf("%s: the key id before the colon is empty (the value is not shown)", KeyEnv)
		}
		k, err := parseKey(id, b64)
		if err == errKeyID {
			return nil, fmt.Errorf("%s: the key id before the colon must be 1 to 32 letters, digits, '.', '_' or '-' (the value is not shown)", KeyEnv)
		}
		if err != nil {
			return nil, fmt.Errorf("%s must be 32 bytes in base64 (openssl rand -base64 32), optionally preceded by a key id and a colon (2026-11:…); the value is not shown", KeyEnv)
		}
		r.current = k
		if err := r.add(k); err != nil {
			return nil, fmt.Errorf("%s: %w", KeyEnv, err)
		}
	}
	n := 0
	for _, entry := range strings.FieldsFunc(others, func(c rune) bool { return c == ',' || c == '\n' || c == ' ' || c == '\t' || c == '\r' }) {
		n++
		id, b64, ok := strings.Cut(entry, ":")
		if !ok {
			return nil, fmt.Errorf("%s entry %d is not id:key (a key id, a colon, 32 bytes in base64, e.g. 2025-q4:…); the value is not shown", KeysEnv, n)
		}
		if id == "" {
			id = " " // not an id: refused below
		}
		k, err := parseKey(id, b64)
		if err == errKeyID {
			return nil, fmt.Errorf("%s entry %d: the key id before the colon must be 1 to 32 letters, digits, '.', '_' or '-' (the value is not shown)", KeysEnv, n)
		}
		if err != nil {
			return nil, fmt.Errorf("%s entry %d (key id %q): the key must be 32 bytes in base64 (openssl rand -base64 32); the value is not shown", KeysEnv, n, id)
		}
		if err := r.add(k); err != nil {
			return nil, fmt.Errorf("%s entry %d: %w", KeysEnv, n, err)
		}
	}
	if len(r.all) == 0 {
		return nil, fmt.Errorf("no payload key: set %s (and %s for older keys)", KeyEnv, KeysEnv)
	}
	return r, nil
}

var (
	errKeyID  = errors.New("malformed key id")
	errKeyLen = errors.New("not 32 bytes in base64")
)

// parseKey reads one key ("" id: known by its fingerprint).
func parseKey(id, b64 string) (*payloadKey, error) {
	if id != "" && !keyIDPattern.MatchString(id) {
		return nil, errKeyID
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
	if err != nil || len(raw) != 32 {
		return nil, errKeyLen
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(append([]byte("archiver payload key id\x00"), raw...))
	k := &payloadKey{id: id, fingerprint: hex.EncodeToString(sum[:8]), aead: aead}
	if k.id == "" {
		k.id = k.fingerprint
	}
	return k, nil
}

// add indexes k under its id and its fingerprint; the same id for two
// different keys is refused (one of them could never be found).
func (r *Keyring) add(k *payloadKey) error {
	for _, name := range []string{k.id, k.fingerprint} {
		if have, ok := r.byID[name]; ok && have.fingerprint != k.fingerprint {
			return fmt.Errorf("key id %q names two different keys", name)
		}
	}
	for _, have := range r.all {
		if have.fingerprint == k.fingerprint {
			r.byID[k.id] = have // the same key listed again, maybe under another name
			return nil
		}
	}
	r.byID[k.id], r.byID[k.fingerprint] = k, k
	r.all = append(r.all, k)
	return nil
}

// CurrentID is the id new payloads record ("" when nothing is encrypted).
func (r *Keyring) CurrentID() string {
	if r.current == nil {
		return ""
	}
	return r.current.id
}

// IDs are the ids of every configured key, the current one first.
func (r *Keyring) IDs() []string {
	out := make([]string, len(r.all))
	for i, k := range r.all {
		out[i] = k.id
	}
	return out
}

// Encode encrypts each payload with the current key.
func (r *Keyring) Encode(payloads []*commonpb.Payload) ([]*commonpb.Payload, error) {
	if r.current == nil {
		return payloads, nil
	}
	out := make([]*commonpb.Payload, len(payloads))
	for i, p := range payloads {
		plain, err := p.Marshal()
		if err != nil {
			return nil, err
		}
		k := r.current
		nonce := make([]byte, k.aead.NonceSize())
		if _, err := rand.Read(nonce); err != nil {
			return nil, err
		}
		out[i] = &commonpb.Payload{
			Metadata: map[string][]byte{
				converter.MetadataEncoding: []byte(encodingEncrypted),
				MetadataKeyID:              []byte(k.id),
			},
			Data: k.aead.Seal(nonce, nonce, plain, nil),
		}
	}
	return out, nil
}

// Decode decrypts encrypted payloads and passes the others through.
func (r *Keyring) Decode(payloads []*commonpb.Payload) ([]*commonpb.Payload, error) {
	out := make([]*commonpb.Payload, len(payloads))
	for i, p := range payloads {
		if string(p.GetMetadata()[converter.MetadataEncoding]) != encodingEncrypted {
			out[i] = p
			continue
		}
		plain, err := r.open(p)
		if err != nil {
			return nil, err
		}
		var dp commonpb.Payload
		if err := dp.Unmarshal(plain); err != nil {
			return nil, fmt.Errorf("decrypted payload is not a payload: %w", err)
		}
		out[i] = &dp
	}
	return out, nil
}

func (r *Keyring) open(p *commonpb.Payload) ([]byte, error) {
	data := p.GetData()
	idb, hasID := p.GetMetadata()[MetadataKeyID]
	if !hasID {
		// Written before key ids: try every key (GCM tells the right one).
		for _, k := range r.all {
			if n := k.aead.NonceSize(); len(data) >= n {
				if plain, err := k.aead.Open(nil, data[:n], data[n:], nil); err == nil {
					return plain, nil
				}
			}
		}
		return nil, fmt.Errorf("decrypt payload (written without a key id): none of the keys of %s and %s opens it (key ids tried: %s)",
			KeyEnv, KeysEnv, strings.Join(r.IDs(), ", "))
	}
	id := string(idb)
	k, ok := r.byID[id]
	if !ok {
		shown := id
		if !keyIDPattern.MatchString(id) {
			shown = "(malformed)"
		}
		return nil, fmt.Errorf("payload encrypted with key id %q, which is not among the keys of %s and %s (known: %s): add that key to %s as %s:<base64>",
			shown, KeyEnv, KeysEnv, strings.Join(r.IDs(), ", "), KeysEnv, shown)
	}
	n := k.aead.NonceSize()
	if len(data) < n {
		return nil, fmt.Errorf("encrypted payload (key id %q) too short", id)
	}
	plain, err := k.aead.Open(nil, data[:n], data[n:], nil)
	if err != nil {
		return nil, fmt.Errorf("decrypt payload with key id %q: the key configured under that id does not open it (a different key given the same id in %s/%s?): %w", id, KeyEnv, KeysEnv, err)
	}
	return plain, nil
}
