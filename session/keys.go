package session

import (
	"bytes"
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
	"strconv"
	"strings"

	"github.com/sessiond/sessiond/protocol"
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
	// NextTokenKey and NextSealKey, when set, name staged keys (see Stage): every node can
	// already verify and open with them, none issues or seals with them yet, and a token found
	// under the next key is not re-hashed back to the current one.
	NextTokenKey string
	NextSealKey  string
	// FakeKey derives the stable fake OPAQUE records of unknown usernames.
	FakeKey []byte
	// LogKey derives the short keyed hashes of session ids that logs carry.
	LogKey []byte
	// AdminKey derives the admin API's bearer token. Successor replaces it. Key files written
	// before it existed have none: their admin token is derived from LogKey as it was then,
	// until the next rotation gives them one.
	AdminKey []byte
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
	NextTokenKey    string            `json:"next_token_key,omitempty"`
	NextSealKey     string            `json:"next_seal_key,omitempty"`
	FakeKey         string            `json:"fake_key"`
	LogKey          string            `json:"log_key"`
	AdminKey        string            `json:"admin_key,omitempty"`
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
	conf := protocol.OPAQUE()
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
		AdminKey:        random(32),
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
		NextTokenKey:    k.NextTokenKey,
		NextSealKey:     k.NextSealKey,
		FakeKey:         EncodeB64(k.FakeKey),
		LogKey:          EncodeB64(k.LogKey),
	}
	if len(k.AdminKey) > 0 {
		f.AdminKey = EncodeB64(k.AdminKey)
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
	k := &Keys{TokenKeys: map[string][]byte{}, SealKeys: map[string][]byte{}, CurrentTokenKey: f.CurrentTokenKey,
		CurrentSealKey: f.CurrentSealKey, NextTokenKey: f.NextTokenKey, NextSealKey: f.NextSealKey}
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
	if f.AdminKey != "" {
		k.AdminKey = dec("admin_key", f.AdminKey, 32)
	}
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
	if _, ok := k.TokenKeys[k.NextTokenKey]; k.NextTokenKey != "" && (!ok || k.NextTokenKey == k.CurrentTokenKey) {
		return nil, errors.New("key file: next_token_key must name a key of token_keys other than the current one")
	}
	if _, ok := k.SealKeys[k.NextSealKey]; k.NextSealKey != "" && (!ok || k.NextSealKey == k.CurrentSealKey) {
		return nil, errors.New("key file: next_seal_key must name a key of seal_keys other than the current one")
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
// that must agree: the OPAQUE material, the fake and log keys, and the current token and seal
// keys. Older and staged keys do not count: adding (Stage) or removing (Retire) a non-current
// key keeps a deployment's nodes compatible, so the fingerprint stays. Making other keys
// current (Successor) changes it, and the store, which records the first node's fingerprint and
// refuses nodes with another, must then be told (`sessiond admin rotate-keys`).
func (k *Keys) Fingerprint() string {
	m := hmac.New(sha256.New, []byte("sessiond key fingerprint v1"))
	for _, part := range [][]byte{k.OPRFSeed, k.AKEPrivateKey, k.AKEPublicKey, k.FakeKey, k.LogKey} {
		m.Write(part)
	}
	m.Write([]byte(k.CurrentTokenKey))
	m.Write(k.TokenKeys[k.CurrentTokenKey])
	m.Write([]byte(k.CurrentSealKey))
	m.Write(k.SealKeys[k.CurrentSealKey])
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// clone returns a copy of k whose maps can be changed without touching k.
func (k *Keys) clone() *Keys {
	c := *k
	c.TokenKeys = make(map[string][]byte, len(k.TokenKeys)+1)
	for id, v := range k.TokenKeys {
		c.TokenKeys[id] = bytes.Clone(v)
	}
	c.SealKeys = make(map[string][]byte, len(k.SealKeys)+1)
	for id, v := range k.SealKeys {
		c.SealKeys[id] = bytes.Clone(v)
	}
	return &c
}

// nextID returns prefix followed by one more than the largest number of the ids of keys that
// are prefix followed by a number: "t2" after "t1".
func nextID(keys map[string][]byte, prefix string) string {
	n := 0
	for id := range keys {
		if x, err := strconv.Atoi(strings.TrimPrefix(id, prefix)); err == nil && strings.HasPrefix(id, prefix) && x > n {
			n = x
		}
	}
	for {
		n++
		if id := prefix + strconv.Itoa(n); keys[id] == nil {
			return id
		}
	}
}

// Successor returns the key material that follows k in a key rotation, in which other token and
// seal keys are current: the staged ones when k has them (see Stage), otherwise fresh ones under
// the next free ids ("t2", "s2").
// Every key of k is kept, so tokens hashed and values sealed before still verify and open; the
// old keys are removed later with Retire.
//
// The OPAQUE material, the fake key and the log key are not rotated. Every registration record
// depends on the OPRF seed and the AKE key pair: new ones would make every stored record
// useless, and the only way to replace them is every user registering again. The fake key
// derives the fake records of unknown usernames, which must stay the same from one login
// attempt to the next or an attacker could tell an unknown name from a known one; the log key
// derives the session ids of log lines, which should stay correlatable across a rotation. The
// admin key is replaced.
func (k *Keys) Successor() *Keys {
	c := k.clone()
	// The admin token changes with every rotation: a copy of an old key file no longer
	// administers the deployment.
	c.AdminKey = random(32)
	if c.NextTokenKey != "" {
		c.CurrentTokenKey, c.NextTokenKey = c.NextTokenKey, ""
	} else {
		id := nextID(c.TokenKeys, "t")
		c.TokenKeys[id] = random(32)
		c.CurrentTokenKey = id
	}
	if c.NextSealKey != "" {
		c.CurrentSealKey, c.NextSealKey = c.NextSealKey, ""
	} else {
		id := nextID(c.SealKeys, "s")
		c.SealKeys[id] = random(32)
		c.CurrentSealKey = id
	}
	return c
}

// Stage returns new key material with a fresh token key and a fresh seal key added as the next
// keys, the current ones unchanged (so is the fingerprint). Rolling every node onto it first
// lets each of them verify and open what nodes already running the rotated keys (Successor of the
// staged material) issue and seal. Staging twice without rotating in between is an error.
func (k *Keys) Stage() (*Keys, error) {
	if k.NextTokenKey != "" || k.NextSealKey != "" {
		return nil, errors.New("keys are already staged; make them current first")
	}
	c := k.clone()
	c.NextTokenKey = nextID(c.TokenKeys, "t")
	c.TokenKeys[c.NextTokenKey] = random(32)
	c.NextSealKey = nextID(c.SealKeys, "s")
	c.SealKeys[c.NextSealKey] = random(32)
	return c, nil
}

// Retire returns new key material without the token or seal key id. The current and the
// staged keys cannot be retired. Tokens hashed and values sealed under a retired key stop
// verifying and opening: retire a seal key once `sessiond admin rotate-keys` reports no value
// left under it, a token key once every session issued under it has ended or been re-hashed.
func (k *Keys) Retire(id string) (*Keys, error) {
	c := k.clone()
	switch {
	case c.TokenKeys[id] != nil && c.SealKeys[id] != nil:
		return nil, fmt.Errorf("key id %q names a token key and a seal key; edit the key file by hand", id)
	case id == k.CurrentTokenKey || id == k.CurrentSealKey:
		return nil, fmt.Errorf("key %q is current; only older keys can be retired", id)
	case id != "" && (id == k.NextTokenKey || id == k.NextSealKey):
		return nil, fmt.Errorf("key %q is staged; only older keys can be retired", id)
	case c.TokenKeys[id] != nil:
		delete(c.TokenKeys, id)
	case c.SealKeys[id] != nil:
		delete(c.SealKeys, id)
	default:
		return nil, fmt.Errorf("no token or seal key %q", id)
	}
	return c, nil
}

// LogID is a short keyed hash of a session id for log lines: stable, correlatable, and useless
// to anyone without the log key.
func (k *Keys) LogID(sessionID string) string {
	m := hmac.New(sha256.New, k.LogKey)
	m.Write([]byte(sessionID))
	return hex.EncodeToString(m.Sum(nil)[:8])
}
