package protocol

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"io"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/hkdf"
)

// Proof of possession: a session created with it requires every request to carry a MAC under a
// key derived from the OPAQUE session key, which never travels.

// ProofHeader is the HTTP header that carries a proof.
const ProofHeader = "Sessiond-PoP"

// ProofWindow is how far a proof's timestamp may be from the server's clock.
const ProofWindow = 30 * time.Second

// ResumeMethod and ResumePath are what a session.resume proof signs (over the token).
const (
	ResumeMethod = "RESUME"
	ResumePath   = "/ws"
)

// ErrMalformedProof is a proof header that does not parse.
var ErrMalformedProof = errors.New("protocol: malformed proof of possession")

var b64 = base64.RawURLEncoding.Strict()

// DerivePoPKey derives the proof-of-possession key from the OPAQUE session key that only the
// client and the server know: HKDF-SHA256 with the session id as salt.
func DerivePoPKey(opaqueSessionKey []byte, sessionID string) []byte {
	key := make([]byte, 32)
	r := hkdf.New(sha256.New, opaqueSessionKey, []byte(sessionID), []byte("sessiond proof-of-possession v1"))
	if _, err := io.ReadFull(r, key); err != nil {
		panic("protocol: hkdf: " + err.Error())
	}
	return key
}

// ProofMessage is what a proof signs: method, path (with query), timestamp (unix ms) and the
// SHA-256 of the body, one per line.
func ProofMessage(method, path string, ts int64, body []byte) []byte {
	h := sha256.Sum256(body)
	return []byte("sessiond-pop-v1\n" + method + "\n" + path + "\n" + strconv.FormatInt(ts, 10) + "\n" + b64.EncodeToString(h[:]))
}

// ProofMAC is the MAC of a request under key.
func ProofMAC(key []byte, method, path string, ts int64, body []byte) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write(ProofMessage(method, path, ts, body))
	return mac.Sum(nil)
}

// SignProof returns the proof header value for a request: "t=<unix ms>, sig=<base64url HMAC>".
func SignProof(key []byte, method, path string, ts int64, body []byte) string {
	return "t=" + strconv.FormatInt(ts, 10) + ", sig=" + b64.EncodeToString(ProofMAC(key, method, path, ts, body))
}

// ParseProof splits a proof header value.
func ParseProof(v string) (ts int64, sig []byte, err error) {
	for _, part := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return 0, nil, ErrMalformedProof
		}
		switch k {
		case "t":
			ts, err = strconv.ParseInt(val, 10, 64)
		case "sig":
			sig, err = b64.DecodeString(val)
		}
		if err != nil {
			return 0, nil, ErrMalformedProof
		}
	}
	if ts == 0 || len(sig) != sha256.Size {
		return 0, nil, ErrMalformedProof
	}
	return ts, sig, nil
}
