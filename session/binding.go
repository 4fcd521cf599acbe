package session

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/sessiond/sessiond/protocol"
)

// Binding ties a session to the client that logged in: a fingerprint compared on later use,
// and (when enabled) a proof-of-possession key that a stolen token does not carry.

// Fingerprint policies, per dimension.
const (
	FingerprintOff    = "off"    // not compared
	FingerprintLog    = "log"    // a mismatch is logged as a security event
	FingerprintRevoke = "revoke" // a mismatch ends the session (fingerprint_mismatch)
)

// FingerprintPolicy says what a mismatch of each dimension does. Zero fields take the defaults:
// the browser family must match (revoke: a token moving to another browser is the signature of
// theft; a version change is only logged, since browsers update under a running session), the
// network prefix only logs (phones change networks all day).
type FingerprintPolicy struct {
	UserAgent string // default revoke
	Network   string // default log
}

func (p FingerprintPolicy) defaults() FingerprintPolicy {
	if p.UserAgent == "" {
		p.UserAgent = FingerprintRevoke
	}
	if p.Network == "" {
		p.Network = FingerprintLog
	}
	return p
}

func validFingerprintPolicy(v string) bool {
	return v == FingerprintOff || v == FingerprintLog || v == FingerprintRevoke
}

// Client is what the server knows about the client of a request.
type Client struct {
	IP        string
	UserAgent string
}

// Fingerprint is the comparable summary of a client: the user agent's product family and major
// version, and the network prefix of its address (/24 for IPv4, /64 for IPv6).
type Fingerprint struct {
	Agent   string `json:"agent,omitempty"`   // "chrome/131", "" when unrecognised
	Network string `json:"network,omitempty"` // "203.0.113.0/24"
}

// FingerprintOf computes a client's fingerprint.
func FingerprintOf(c Client) Fingerprint {
	return Fingerprint{Agent: agentFamily(c.UserAgent), Network: networkPrefix(c.IP)}
}

// agentKind is the family part of an agent fingerprint ("chrome" of "chrome/131").
func agentKind(agent string) string {
	kind, _, _ := strings.Cut(agent, "/")
	return kind
}

func networkPrefix(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ""
	}
	a = a.Unmap()
	bits := 64
	if a.Is4() {
		bits = 24
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return ""
	}
	return p.String()
}

// deviceCache keeps opened device records (they never change after login), so that the
// per-request checks do not decrypt on the hot path.
type deviceCache struct {
	mu sync.Mutex
	m  map[string]DeviceInfo
}

// readableDevice opens the session's device record and reports whether it could. A record
// that does not open (a seal key missing from this node's key file) must not silently
// disable the fingerprint and proof-of-possession checks that depend on it.
func (m *Manager) readableDevice(s Session) (DeviceInfo, bool) {
	m.devices.mu.Lock()
	dev, ok := m.devices.m[s.ID]
	m.devices.mu.Unlock()
	if ok {
		return dev, true
	}
	if len(s.Device) == 0 {
		// Every session is created with a sealed device record: an empty one was tampered
		// with or lost, and must not read as "nothing to check".
		return DeviceInfo{}, false
	}
	if _, err := m.keys.open(s.Device, "device:"+s.ID); err != nil {
		return DeviceInfo{}, false
	}
	return m.Device(s), true
}

const maxDeviceCache = 200_000

// Device opens the session's device record (label, fingerprint, proof key).
func (m *Manager) Device(s Session) DeviceInfo {
	m.devices.mu.Lock()
	dev, ok := m.devices.m[s.ID]
	m.devices.mu.Unlock()
	if ok {
		return dev
	}
	pt, err := m.keys.open(s.Device, "device:"+s.ID)
	if err != nil {
		return dev // not cached: readableDevice must see the failure every time
	}
	_ = json.Unmarshal(pt, &dev)
	m.devices.mu.Lock()
	if m.devices.m == nil || len(m.devices.m) >= maxDeviceCache {
		m.devices.m = map[string]DeviceInfo{} // all re-derivable: start over rather than track age
	}
	m.devices.m[s.ID] = dev
	m.devices.mu.Unlock()
	return dev
}

// CheckClient compares the client of a request with the one that logged in, per the
// fingerprint policy. A mismatch under "revoke" ends the session (reason fingerprint_mismatch,
// the user's devices are told) and is ErrInvalid; under "log" it is recorded and allowed.
func (m *Manager) CheckClient(ctx context.Context, s Session, c Client) error {
	dev, ok := m.readableDevice(s)
	if !ok {
		m.log.Error().Str("session", m.keys.LogID(s.ID)).Str("key_id", SealKeyID(s.Device)).
			Msg("a session's device record does not open with this node's keys; refusing the request")
		return fmt.Errorf("%w: this node cannot read the session's device record (key file out of date?)", ErrUnavailable)
	}
	now := FingerprintOf(c)
	p := m.fingerprint
	var mismatch []string
	revoke := false
	// A login without a User-Agent leaves nothing to compare; a request without one where the
	// login had one is a mismatch (dropping the header must not skip the check). Another
	// family is the policy's to act on; another version of the same family is only logged.
	switch was := dev.Fingerprint.Agent; {
	case p.UserAgent == FingerprintOff || was == "" || was == now.Agent:
	case now.Agent == "" || agentKind(was) != agentKind(now.Agent):
		mismatch = append(mismatch, "user_agent")
		revoke = revoke || p.UserAgent == FingerprintRevoke
	default:
		mismatch = append(mismatch, "user_agent_version")
	}
	if p.Network != FingerprintOff && dev.Fingerprint.Network != "" && now.Network != "" && dev.Fingerprint.Network != now.Network {
		mismatch = append(mismatch, "network")
		revoke = revoke || p.Network == FingerprintRevoke
	}
	if len(mismatch) == 0 {
		return nil
	}
	reason := strings.Join(mismatch, ",")
	ctx, cancel := bounded(ctx)
	defer cancel()
	if !revoke {
		m.emit(ctx, Event{Kind: EventFingerprint, UserID: s.UserID, SessionID: s.ID, Reason: reason})
		return nil
	}
	m.emit(ctx, Event{Kind: EventFingerprint, UserID: s.UserID, SessionID: s.ID, Reason: reason + " (revoked)"})
	ids, err := m.store.RevokeSessions(ctx, s.UserID, []string{s.ID}, ReasonFingerprint, m.now())
	if err != nil {
		return err
	}
	m.afterRevoke(ctx, s.UserID, ids, ReasonFingerprint)
	return fmt.Errorf("%w: the client differs from the one that signed in", ErrInvalid)
}

// ---- proof of possession ----

// ErrProof is a missing, malformed, stale, wrong or replayed proof of possession.
var ErrProof = fmt.Errorf("session: proof of possession failed")

// VerifyProof checks a request's proof against the session's key: a valid MAC over this very
// request, made within ProofWindow of now. seen is called with the MAC to reject replays; it
// returns true when the MAC was already used (any node, within the window), and an error when
// it cannot tell (the shared record is unreachable): then the proof is refused with
// ErrUnavailable, since accepting it could accept a replay.
func (m *Manager) VerifyProof(s Session, header, method, path string, body []byte, seen func(sig []byte) (bool, error)) error {
	dev, ok := m.readableDevice(s)
	if !ok {
		return fmt.Errorf("%w: this node cannot read the session's device record", ErrUnavailable)
	}
	if len(dev.PoPKey) == 0 {
		return nil // the session was not created with proof of possession
	}
	if header == "" {
		return fmt.Errorf("%w: this session requires a proof of possession", ErrProof)
	}
	ts, sig, err := protocol.ParseProof(header)
	if err != nil {
		return fmt.Errorf("%w: malformed proof", ErrProof)
	}
	d := m.now().Sub(time.UnixMilli(ts))
	if d > protocol.ProofWindow || d < -protocol.ProofWindow {
		return fmt.Errorf("%w: the proof's timestamp is outside the %s window", ErrProof, protocol.ProofWindow)
	}
	if !hmac.Equal(protocol.ProofMAC(dev.PoPKey, method, path, ts, body), sig) {
		return fmt.Errorf("%w: the proof does not match this request", ErrProof)
	}
	if seen == nil {
		return nil
	}
	used, err := seen(sig)
	if err != nil {
		return fmt.Errorf("%w: replays of proofs cannot be checked now: %w", ErrUnavailable, err)
	}
	if used {
		return fmt.Errorf("%w: this proof was already used", ErrProof)
	}
	return nil
}
