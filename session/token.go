package session

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"hash"
	"strings"
	"sync"
)

// TokenPrefix starts every session token so that secret scanners can recognise a leaked one.
const TokenPrefix = "sdt_"

const (
	tokenBytes  = 32 // 256 bits of randomness
	tokenLength = len(TokenPrefix) + 43
)

var b64 = base64.RawURLEncoding.Strict()

// NewToken returns a fresh random token and its raw secret bytes.
func NewToken() (string, []byte) {
	raw := make([]byte, tokenBytes)
	if _, err := rand.Read(raw); err != nil {
		panic("session: crypto/rand failed: " + err.Error()) // the platform is broken; nothing safe to do
	}
	return TokenPrefix + b64.EncodeToString(raw), raw
}

// ParseToken checks a token's shape and returns its secret bytes. Anything malformed is
// ErrInvalid: the caller cannot tell a typo from a forgery, and need not. Its running time
// depends only on the token's length, not on its content.
func ParseToken(token string) ([]byte, error) {
	if len(token) != tokenLength || !strings.HasPrefix(token, TokenPrefix) {
		return nil, fmt.Errorf("%w: malformed token", ErrInvalid)
	}
	raw, err := b64.DecodeString(token[len(TokenPrefix):])
	if err != nil || len(raw) != tokenBytes {
		return nil, fmt.Errorf("%w: malformed token", ErrInvalid)
	}
	return raw, nil
}

// TokenHash is the keyed hash under which a token is stored and looked up.
type TokenHash [sha256.Size]byte

var tokenHashDomain = []byte("sessiond token v1\x00")

// keyedHMACs keeps, per token key, pooled HMAC states that are already keyed: setting up an
// HMAC key costs two SHA-256 blocks and several allocations, more than hashing the token
// itself, and validation hashes a token on every request. A node has one or two token keys.
var keyedHMACs struct {
	mu    sync.RWMutex
	pools map[string]*sync.Pool
}

func hmacPool(key []byte) *sync.Pool {
	keyedHMACs.mu.RLock()
	p := keyedHMACs.pools[string(key)]
	keyedHMACs.mu.RUnlock()
	if p != nil {
		return p
	}
	keyedHMACs.mu.Lock()
	defer keyedHMACs.mu.Unlock()
	if p = keyedHMACs.pools[string(key)]; p == nil {
		k := bytes.Clone(key)
		p = &sync.Pool{New: func() any { return hmac.New(sha256.New, k) }}
		if keyedHMACs.pools == nil {
			keyedHMACs.pools = map[string]*sync.Pool{}
		}
		keyedHMACs.pools[string(k)] = p
	}
	return p
}

// HashToken is the hash under which a token's secret bytes (from ParseToken) are stored with
// these keys: what tooling needs to find or write a session row for a known token.
func (k *Keys) HashToken(raw []byte) TokenHash {
	return hashToken(k.TokenKeys[k.CurrentTokenKey], raw)
}

func hashToken(key []byte, raw []byte) TokenHash {
	p := hmacPool(key)
	m := p.Get().(hash.Hash)
	m.Reset()
	m.Write(tokenHashDomain)
	m.Write(raw)
	var h TokenHash
	m.Sum(h[:0])
	p.Put(m)
	return h
}

// NewID returns a random, non-secret identifier (128 bits, base64url).
// ValidID reports whether s is an id as NewID makes them: 22 characters of base64url (no
// padding) for 16 bytes. Ids from clients are checked with it before they reach a store.
func ValidID(s string) bool {
	if len(s) != 22 {
		return false
	}
	b, err := b64.DecodeString(s)
	return err == nil && len(b) == 16
}

func NewID() string {
	raw := make([]byte, 16)
	if _, err := rand.Read(raw); err != nil {
		panic("session: crypto/rand failed: " + err.Error())
	}
	return b64.EncodeToString(raw)
}

// DecodeB64 decodes canonical unpadded base64url, the only binary encoding of the protocol.
func DecodeB64(s string) ([]byte, error) {
	// The decoder skips CR and LF; the protocol allows no whitespace at all.
	if strings.ContainsAny(s, "\r\n") {
		return nil, fmt.Errorf("%w: not canonical unpadded base64url", ErrBadInput)
	}
	b, err := b64.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: not canonical unpadded base64url", ErrBadInput)
	}
	return b, nil
}

// EncodeB64 encodes bytes as unpadded base64url.
func EncodeB64(b []byte) string { return b64.EncodeToString(b) }
