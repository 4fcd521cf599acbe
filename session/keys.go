package session

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/bytemare/opaque"
)

// Keys is the server's secret material. It is loaded from one key file shared by every node of a
// deployment and never written to a log or the database.
type Keys struct {
	// OPAQUE server key material: the global OPRF seed and the AKE key pair. Registration
	// records depend on them; they do not rotate without every user registering again.
	OPRFSeed      []byte
	AKEPrivateKey []byte
	AKEPublicKey  []byte

	// TokenKeys hash tokens (HMAC-SHA256); CurrentTokenKey names the one new tokens use, the
	// others still verify tokens issued before a rotation.
	TokenKeys       map[string][]byte
	CurrentTokenKey string
	// SealKeys encrypt metadata at rest (AES-256-GCM) under a key id, for rotation.
	SealKeys       map[string][]byte
	CurrentSealKey string
	// FakeKey derives the stable fake OPAQUE records of unknown usernames.
	FakeKey []byte
	// LogKey derives the short keyed hashes of session ids that logs carry.
	LogKey []byte
}

// keyFile is the on-disk JSON form of Keys; binary values are unpadded base64url.
type keyFile struct {
	Version         int               `json:"version"`
	OPRFSeed        string            `json:"oprf_seed"`
	AKEPrivateKey   string            `json:"ake_private_key"`
	AKEPublicKey    string            `json:"ake_public_key"`
	TokenKeys       map[string]string `json:"token_keys"`
	CurrentTokenKey string            `json:"current_token_key"`
	SealKeys        map[string]string `json:"seal_keys"`
	CurrentSealKey  string            `json:"current_seal_key"`
	FakeKey         string            `json:"fake_key"`
	LogKey          string            `json:"log_key"`
}

func random(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("session: crypto/rand failed: " + err.Error())
	}
	return b
}

// GenerateKeys returns fresh key material.
func GenerateKeys() *Keys {
	conf := opaque.DefaultConfiguration()
	sk, pk := conf.KeyGen()
	return &Keys{
		OPRFSeed:        conf.GenerateOPRFSeed(),
		AKEPrivateKey:   sk.Encode(),
		AKEPublicKey:    pk.Encode(),
		TokenKeys:       map[string][]byte{"t1": random(32)},
		CurrentTokenKey: "t1",
		SealKeys:        map[string][]byte{"s1": random(32)},
		CurrentSealKey:  "s1",
		FakeKey:         random(32),
		LogKey:          random(32),
	}
}

// Marshal encodes the keys as a key file.
func (k *Keys) Marshal() ([]byte, error) {
	f := keyFile{
		Version:         1,
		OPRFSeed:        EncodeB64(k.OPRFSeed),
		AKEPrivateKey:   EncodeB64(k.AKEPrivateKey),
		AKEPublicKey:    EncodeB64(k.AKEPublicKey),
		TokenKeys:       map[string]string{},
		CurrentTokenKey: k.CurrentTokenKey,
		SealKeys:        map[string]string{},
		CurrentSealKey:  k.CurrentSealKey,
		FakeKey:         EncodeB64(k.FakeKey),
		LogKey:          EncodeB64(k.LogKey),
	}
	for id, v := range k.TokenKeys {
		f.TokenKeys[id] = EncodeB64(v)
	}
	for id, v := range k.SealKeys {
		f.SealKeys[id] = EncodeB64(v)
	}
	return json.MarshalIndent(f, "", "  ")
}

// ParseKeys decodes and validates a key file.
func ParseKeys(data []byte) (*Keys, error) {
	var f keyFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("key file is not valid JSON: %w", err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("key file version %d is not supported", f.Version)
	}
	k := &Keys{TokenKeys: map[string][]byte{}, SealKeys: map[string][]byte{}, CurrentTokenKey: f.CurrentTokenKey, CurrentSealKey: f.CurrentSealKey}
	var err error
	dec := func(name, s string, n int) []byte {
		if err != nil {
			return nil
		}
		var b []byte
		b, err = DecodeB64(s)
		if err == nil && n > 0 && len(b) != n {
			err = fmt.Errorf("key file: %s must be %d bytes", name, n)
		} else if err != nil {
			err = fmt.Errorf("key file: %s: %w", name, err)
		}
		return b
	}
	k.OPRFSeed = dec("oprf_seed", f.OPRFSeed, 64)
	k.AKEPrivateKey = dec("ake_private_key", f.AKEPrivateKey, 32)
	k.AKEPublicKey = dec("ake_public_key", f.AKEPublicKey, 32)
	k.FakeKey = dec("fake_key", f.FakeKey, 32)
	k.LogKey = dec("log_key", f.LogKey, 32)
	for id, v := range f.TokenKeys {
		k.TokenKeys[id] = dec("token_keys."+id, v, 32)
	}
	for id, v := range f.SealKeys {
		k.SealKeys[id] = dec("seal_keys."+id, v, 32)
	}
	if err != nil {
		return nil, err
	}
	if _, ok := k.TokenKeys[k.CurrentTokenKey]; !ok {
		return nil, errors.New("key file: current_token_key names no key in token_keys")
	}
	if _, ok := k.SealKeys[k.CurrentSealKey]; !ok {
		return nil, errors.New("key file: current_seal_key names no key in seal_keys")
	}
	for id := range k.SealKeys {
		if id == "" || len(id) > 255 {
			return nil, errors.New("key file: a seal key id must be 1 to 255 bytes")
		}
	}
	if _, err := newOPAQUE(k); err != nil {
		return nil, fmt.Errorf("key file: OPAQUE key material: %w", err)
	}
	return k, nil
}

// LoadKeys reads a key file.
func LoadKeys(path string) (*Keys, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseKeys(data)
}

// WriteKeys writes k to path with mode 0600, refusing to replace an existing file.
func WriteKeys(path string, k *Keys) error {
	data, err := k.Marshal()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(data, '\n')); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// LoadOrGenerateKeys loads path, or generates and writes a new key file there when none exists.
// It reports whether it generated one.
func LoadOrGenerateKeys(path string) (*Keys, bool, error) {
	k, err := LoadKeys(path)
	if err == nil {
		return k, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	k = GenerateKeys()
	if err := WriteKeys(path, k); err != nil {
		return nil, false, err
	}
	return k, true, nil
}

// Fingerprint identifies the key material without revealing it, so that nodes of one
// deployment can detect that they were started with different key files. It covers the keys
// that must agree: the OPAQUE material and the current token and seal keys.
func (k *Keys) Fingerprint() string {
	m := hmac.New(sha256.New, []byte("sessiond key fingerprint v1"))
	for _, part := range [][]byte{k.OPRFSeed, k.AKEPrivateKey, k.AKEPublicKey, k.FakeKey, k.LogKey} {
		m.Write(part)
	}
	// Every token and seal key counts, so a node missing one is detected too.
	m.Write([]byte(k.CurrentTokenKey))
	m.Write(k.TokenKeys[k.CurrentTokenKey])
	m.Write([]byte(k.CurrentSealKey))
	m.Write(k.SealKeys[k.CurrentSealKey])
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// LogID is a short keyed hash of a session id for log lines: stable, correlatable, and useless
// to anyone without the log key.
func (k *Keys) LogID(sessionID string) string {
	m := hmac.New(sha256.New, k.LogKey)
	m.Write([]byte(sessionID))
	return hex.EncodeToString(m.Sum(nil)[:8])
}
