package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/sessiond/sessiond/protocol"
)

// Reasons a session ends, as carried by notice.revoked and notice.expired.
const (
	ReasonLogout          = protocol.ReasonLogout
	ReasonRevokedByUser   = protocol.ReasonRevokedByUser
	ReasonPasswordChanged = protocol.ReasonPasswordChanged
	ReasonTokenReuse      = protocol.ReasonTokenReuse
	ReasonFingerprint     = protocol.ReasonFingerprint
	ReasonSessionLimit    = protocol.ReasonSessionLimit
	ReasonAdmin           = protocol.ReasonAdmin
	ReasonIdle            = protocol.ReasonIdle
	ReasonAbsolute        = protocol.ReasonAbsolute
)

// Notifier pushes changes to devices, on every node. Delivery is a hint: the store stays the
// authority, so a lost notice only delays what the next validation enforces anyway.
type Notifier interface {
	// Revoked tells every connection of these sessions of userID that they ended for reason.
	Revoked(ctx context.Context, userID string, sessionIDs []string, reason string)
	// Changed tells every connection of userID that the user's device list changed; sessions
	// is the list as it is now.
	Changed(ctx context.Context, userID string, sessions []Info)
	// Rotated tells every node that a session's token changed, so cached validations of the
	// old token are dropped.
	Rotated(ctx context.Context, userID, sessionID string)
}

// NopNotifier drops every notice.
type NopNotifier struct{}

func (NopNotifier) Revoked(context.Context, string, []string, string) {}
func (NopNotifier) Changed(context.Context, string, []Info)           {}
func (NopNotifier) Rotated(context.Context, string, string)           {}

// DeviceInfo describes the device of a session. It is sealed at rest.
type DeviceInfo struct {
	Label       string      `json:"label"`
	IP          string      `json:"ip,omitempty"`
	UserAgent   string      `json:"user_agent,omitempty"`
	Fingerprint Fingerprint `json:"fp,omitempty"`
	PoPKey      []byte      `json:"pop,omitempty"` // proof-of-possession key, when required
}

// Info is a session as shown to its owner: no token, device metadata opened.
type Info struct {
	ID            string
	UserID        string
	VaultID       string
	Device        DeviceInfo
	CreatedAt     time.Time
	LastSeenAt    time.Time
	IdleExpiresAt time.Time
	ExpiresAt     time.Time
}

// Config wires a Manager.
type Config struct {
	Store    Store
	Keys     *Keys
	Policy   Policy   // zero fields: defaults
	Clock    Clock    // nil: SystemClock
	Notifier Notifier // nil: NopNotifier
	Logger   zerolog.Logger
	Observer Observer // nil: none
	// Fingerprint says what a client mismatch does, per dimension (zero: defaults).
	Fingerprint FingerprintPolicy
	// ProofOfPossession makes every new session require a proof of possession of a key derived
	// from the OPAQUE session key on each API request and resume.
	ProofOfPossession bool
	// CacheUsable reports whether cached validations can be trusted, i.e. whether change
	// notices from other nodes currently arrive. While it says no, every validation reads the
	// store. Nil: always (a single node).
	CacheUsable func() bool
}

// Manager runs accounts and sessions. See the package doc for its concurrency contract.
type Manager struct {
	store    Store
	events   EventStore // nopEvents when the store keeps none
	keys     *Keys
	policy   Policy
	clock    Clock
	notifier Notifier
	log      zerolog.Logger
	opaque   *opaqueServer

	cache       cache
	cacheUsable func() bool
	observer    Observer
	fingerprint FingerprintPolicy
	pop         bool
	devices     deviceCache
	services    serviceCache

	mu      sync.Mutex
	pending map[string]Touch     // activity not yet written
	idle    map[string]time.Time // newest idle deadline this node knows, per session
	urgent  chan struct{}
}

// NewManager validates the configuration and returns a Manager. It starts no goroutine.
func NewManager(cfg Config) (*Manager, error) {
	if cfg.Store == nil || cfg.Keys == nil {
		return nil, errors.New("session: manager needs a store and keys")
	}
	p := cfg.Policy.Defaults()
	if err := p.Validate(); err != nil {
		return nil, err
	}
	o, err := newOPAQUE(cfg.Keys)
	if err != nil {
		return nil, err
	}
	m := &Manager{
		store: cfg.Store, keys: cfg.Keys, policy: p, clock: cfg.Clock, notifier: cfg.Notifier,
		log: cfg.Logger, opaque: o, cacheUsable: cfg.CacheUsable,
		pending: map[string]Touch{}, idle: map[string]time.Time{}, urgent: make(chan struct{}, 1),
	}
	if m.clock == nil {
		m.clock = SystemClock{}
	}
	if m.notifier == nil {
		m.notifier = NopNotifier{}
	}
	m.events = nopEvents{}
	if es, ok := cfg.Store.(EventStore); ok {
		m.events = es
	}
	m.fingerprint = cfg.Fingerprint.defaults()
	if !validFingerprintPolicy(m.fingerprint.UserAgent) || !validFingerprintPolicy(m.fingerprint.Network) {
		return nil, fmt.Errorf("session: fingerprint policies must be off, log or revoke")
	}
	m.pop = cfg.ProofOfPossession
	m.observer = cfg.Observer
	if m.observer == nil {
		m.observer = nopObserver{}
	}
	m.cache.init(p.CacheTTL)
	return m, nil
}

// Policy returns the policy in force (defaults applied).
func (m *Manager) Policy() Policy { return m.policy }

// Keys returns the key material (for the OPAQUE configuration endpoint and log ids).
func (m *Manager) Keys() *Keys { return m.keys }

// Now returns the manager's clock time.
func (m *Manager) Now() time.Time { return m.now() }

// now is the clock's time in whole milliseconds, the precision of the store and the wire, so a
// deadline compares the same before and after a round trip through either.
func (m *Manager) now() time.Time { return m.clock.Now().Truncate(time.Millisecond) }

// ---- registration ----

// Registration is the server's state between register.start and register.finish.
type Registration struct {
	userID   string
	username string
}

// RegisterStart answers a registration request for username. A taken name: ErrUsernameTaken;
// a malformed name or request: ErrBadInput.
func (m *Manager) RegisterStart(ctx context.Context, username string, request []byte) ([]byte, *Registration, error) {
	name, err := NormalizeUsername(username)
	if err != nil {
		return nil, nil, err
	}
	if _, err := m.store.UserByName(ctx, name); err == nil {
		return nil, nil, ErrUsernameTaken
	} else if !errors.Is(err, ErrNotFound) {
		return nil, nil, err
	}
	id := NewID()
	resp, err := m.opaque.registrationResponse(id, request)
	if err != nil {
		return nil, nil, err
	}
	return resp, &Registration{userID: id, username: name}, nil
}

// RegisterFinish stores the client's registration record and returns the new user id.
func (m *Manager) RegisterFinish(ctx context.Context, r *Registration, record []byte) (string, error) {
	rec, err := m.opaque.checkRecord(record)
	if err != nil {
		return "", err
	}
	u := User{
		ID: r.userID, Username: r.username, VaultID: NewID(), CreatedAt: m.now(),
		Record: m.keys.seal(rec, "record:"+r.userID),
	}
	if err := m.store.CreateUser(ctx, u); err != nil {
		return "", err
	}
	m.emit(ctx, Event{Kind: EventRegistered, UserID: u.ID})
	return u.ID, nil
}

// ---- login ----

// Login is the server's state between login.start and login.finish (or reauth.start and
// reauth.finish). It can be finished for Policy.PendingTimeout after it started.
type Login struct {
	user User
	name string // the normalised username asked for (an unknown user has nothing else)
	fake bool
	out  loginOutput
	at   time.Time // when the start was answered
}

// CredVersion is the credential version the login's proof is for (zero for an unknown user).
func (l *Login) CredVersion() int64 { return l.user.CredVersion }

// checkPending refuses a finish that comes after the pending state of its start expired. It
// runs before the proof is checked, alike for real and unknown users.
func (m *Manager) checkPending(l *Login) error {
	if m.now().Sub(l.at) > m.policy.PendingTimeout {
		return ErrAttemptExpired
	}
	return nil
}

// LoginStart answers KE1. An unknown username gets a challenge from a stable fake record, so
// that it fails later exactly like a wrong password.
func (m *Manager) LoginStart(ctx context.Context, username string, ke1 []byte) ([]byte, *Login, error) {
	name, err := NormalizeUsername(username)
	if err != nil {
		return nil, nil, err
	}
	u, err := m.store.UserByName(ctx, name)
	switch {
	case errors.Is(err, ErrNotFound):
		ke2, out, err := m.opaque.fakeKE2(name, ke1)
		if err != nil {
			return nil, nil, err
		}
		return ke2, &Login{fake: true, name: name, out: out, at: m.now()}, nil
	case err != nil:
		return nil, nil, err
	}
	return m.userKE2(u, ke1)
}

// userKE2 answers KE1 with the user's own (sealed) registration record.
func (m *Manager) userKE2(u User, ke1 []byte) ([]byte, *Login, error) {
	rec, err := m.keys.open(u.Record, "record:"+u.ID)
	if err != nil {
		return nil, nil, fmt.Errorf("session: open registration record: %w", err)
	}
	ke2, out, err := m.opaque.ke2(u.ID, rec, ke1)
	if err != nil {
		return nil, nil, err
	}
	return ke2, &Login{user: u, out: out, at: m.now()}, nil
}

// LoginFinish verifies KE3 and creates a new session with a new token. A wrong password and an
// unknown user both give ErrAuthFailed.
func (m *Manager) LoginFinish(ctx context.Context, l *Login, ke3 []byte, dev DeviceInfo) (Info, string, error) {
	if err := m.checkPending(l); err != nil {
		return Info{}, "", err
	}
	if err := m.opaque.finish(l.out, ke3); err != nil {
		if errors.Is(err, ErrAuthFailed) {
			if l.fake {
				// No account to show it to, but recorded all the same, under a pseudonym of the
				// name: the store sees the same write for a known and an unknown user (no
				// timing or store-counter difference), and operators can see names probed.
				m.emit(ctx, Event{Kind: EventLoginFailed, UserID: m.unknownUserID(l.name)})
			} else {
				m.emit(ctx, Event{Kind: EventLoginFailed, UserID: l.user.ID})
			}
		}
		return Info{}, "", err
	}
	if l.fake {
		// Unreachable with an honest client (the fake envelope cannot open), but never let it in.
		return Info{}, "", ErrAuthFailed
	}
	dev.Fingerprint = FingerprintOf(Client{IP: dev.IP, UserAgent: dev.UserAgent})
	return m.createSession(ctx, l.user, dev, l.out.sessionSecret)
}

// unknownUserID is the pseudonymous user id under which failed logins of an unknown username
// are recorded: stable per name, keyed, never a real user's id.
func (m *Manager) unknownUserID(name string) string {
	return "unknown:" + m.keys.LogID("username:"+name)
}

func (m *Manager) createSession(ctx context.Context, u User, dev DeviceInfo, opaqueKey []byte) (Info, string, error) {
	now := m.now()
	token, raw := NewToken()
	h := hashToken(m.keys.TokenKeys[m.keys.CurrentTokenKey], raw)
	s := Session{
		ID: NewID(), UserID: u.ID, VaultID: u.VaultID, TokenHash: h[:], CreatedAt: now, LastSeenAt: now,
		ExpiresAt: now.Add(m.policy.AbsoluteTimeout), CredVersion: u.CredVersion,
	}
	s.IdleExpiresAt = minTime(now.Add(m.policy.IdleTimeout), s.ExpiresAt)
	if m.pop {
		dev.PoPKey = protocol.DerivePoPKey(opaqueKey, s.ID)
	}
	devJSON, _ := json.Marshal(dev)
	s.Device = m.keys.seal(devJSON, "device:"+s.ID)
	gen := m.cache.generation()
	evicted, err := m.store.CreateSession(ctx, s, m.policy.limit())
	if errors.Is(err, ErrStaleCredential) {
		// The password changed, or the user was deleted, after KE2 was computed from the old
		// record: the proof is void, and nothing was written.
		m.emit(ctx, Event{Kind: EventLoginFailed, UserID: u.ID, Reason: "credential_changed"})
		return Info{}, "", fmt.Errorf("%w: %w", ErrAuthFailed, err)
	}
	if err != nil {
		return Info{}, "", err
	}
	// The row as written is what the login's connection reads next (Check, by id).
	m.cache.putID(s, now, gen)
	m.record(ctx, Change{Kind: ChangeSessionCreated, UserID: u.ID, SessionID: s.ID, At: now})
	m.emit(ctx, m.eventWithDetail(Event{Kind: EventLogin, UserID: u.ID, SessionID: s.ID, At: now}, dev))
	if len(evicted) > 0 {
		m.afterRevoke(ctx, u.ID, evicted, ReasonSessionLimit)
	} else {
		m.changed(ctx, u.ID)
	}
	return m.info(s), token, nil
}

// ---- validation and activity ----

// Validate returns the live session a token belongs to. Unknown, malformed, expired and revoked
// tokens are ErrInvalid. A rotated-away token presented after its grace period revokes the whole
// session (a token-reuse security event) and is ErrInvalid wrapping ErrTokenReuse.
func (m *Manager) Validate(ctx context.Context, token string) (Session, error) {
	s, _, _, err := m.validate(ctx, token)
	return s, err
}

func (m *Manager) validate(ctx context.Context, token string) (Session, TokenHash, TokenMatch, error) {
	raw, err := ParseToken(token)
	if err != nil {
		return Session{}, TokenHash{}, TokenMatch{}, err
	}
	h := hashToken(m.keys.TokenKeys[m.keys.CurrentTokenKey], raw)
	e, cached, err := m.lookup(ctx, h, raw, false)
	if err != nil {
		return Session{}, h, TokenMatch{}, err
	}
	now := m.now()
	s := e.sess
	m.overlayIdle(&s)
	if cached && !s.Live(now) {
		// Activity on another node may have moved the idle deadline since the fill: only the
		// store can say the session is over.
		if e, _, err = m.lookup(ctx, h, raw, true); err != nil {
			return Session{}, h, TokenMatch{}, err
		}
		s = e.sess
		m.overlayIdle(&s)
	}
	if e.match.Retired && !now.Before(e.match.GraceUntil) {
		ctx, cancel := bounded(ctx)
		defer cancel()
		if s.Live(now) {
			m.emit(ctx, Event{Kind: EventTokenReuse, UserID: s.UserID, SessionID: s.ID})
			ids, rerr := m.store.RevokeSessions(ctx, s.UserID, []string{s.ID}, ReasonTokenReuse, now)
			if rerr != nil {
				return Session{}, h, e.match, rerr
			}
			m.afterRevoke(ctx, s.UserID, ids, ReasonTokenReuse)
		}
		return Session{}, h, e.match, fmt.Errorf("%w: %w", ErrInvalid, ErrTokenReuse)
	}
	if !s.Live(now) {
		reason, _ := EndReason(s, now)
		return Session{}, h, e.match, &EndedError{Reason: reason}
	}
	return s, h, e.match, nil
}

// storeDeadline bounds the store work of a validation whose caller gave no deadline: the hot
// path (a cache hit) then pays for no timer at all.
const storeDeadline = 5 * time.Second

func bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, storeDeadline)
}

// lookup finds the session of a token hash: from the cache (cached true) unless storeOnly, the
// cache is out of use (the hub is degraded) or has no fresh entry, else from the store.
func (m *Manager) lookup(ctx context.Context, h TokenHash, raw []byte, storeOnly bool) (cacheEntry, bool, error) {
	now := m.now()
	if !storeOnly && (m.cacheUsable == nil || m.cacheUsable()) {
		if e, ok := m.cache.get(h, now); ok {
			m.observer.CacheLookup(true)
			return e, true, nil
		}
	}
	m.observer.CacheLookup(false)
	ctx, cancel := bounded(ctx)
	defer cancel()
	gen := m.cache.generation()
	s, match, err := m.store.SessionByToken(ctx, h[:])
	if errors.Is(err, ErrNotFound) {
		// Tokens issued under an older token key are still found under it.
		for id, key := range m.keys.TokenKeys {
			if id == m.keys.CurrentTokenKey {
				continue
			}
			old := hashToken(key, raw)
			if s, match, err = m.store.SessionByToken(ctx, old[:]); err == nil {
				// Moved to the current key now, so that the older one can be retired.
				s = m.rehashToken(ctx, s, match, id, old, h)
				break
			} else if !errors.Is(err, ErrNotFound) {
				break
			}
		}
	}
	if errors.Is(err, ErrNotFound) {
		return cacheEntry{}, false, fmt.Errorf("%w: unknown token", ErrInvalid)
	}
	if err != nil {
		return cacheEntry{}, false, err
	}
	e := cacheEntry{sess: s, match: match}
	m.cache.put(h, e, now, gen)
	return e, false, nil
}

// overlayIdle applies activity this node recorded but may not have written yet.
func (m *Manager) overlayIdle(s *Session) {
	m.mu.Lock()
	if t, ok := m.idle[s.ID]; ok && t.After(s.IdleExpiresAt) {
		s.IdleExpiresAt = t
	}
	if t, ok := m.pending[s.ID]; ok && t.LastSeenAt.After(s.LastSeenAt) {
		s.LastSeenAt = t.LastSeenAt
	}
	m.mu.Unlock()
}

// Touch records activity on a live session: the idle deadline moves to now + idle timeout (never
// past the absolute deadline). The write is coalesced; the new deadline is returned at once.
func (m *Manager) Touch(s Session) Session {
	now := m.now()
	idle := minTime(now.Add(m.policy.IdleTimeout), s.ExpiresAt)
	m.mu.Lock()
	prev, known := m.idle[s.ID]
	if !known || prev.Before(s.IdleExpiresAt) {
		prev = s.IdleExpiresAt
	}
	if idle.After(prev) {
		m.idle[s.ID] = idle
		m.pending[s.ID] = Touch{ID: s.ID, LastSeenAt: now, IdleExpiresAt: idle}
		s.IdleExpiresAt = idle
	} else {
		s.IdleExpiresAt = prev
	}
	s.LastSeenAt = now
	// A deadline about to pass on the store's copy must reach the store before other nodes read
	// it as ended.
	urgent := prev.Sub(now) < 2*m.policy.TouchInterval
	m.mu.Unlock()
	if urgent {
		select {
		case m.urgent <- struct{}{}:
		default:
		}
	}
	return s
}

// Check returns the session with this id as the store has it, or as this node's cache had it at
// most CacheTTL ago, with this node's unwritten activity applied. A session that has ended is
// returned too, with ErrInvalid; an unknown one is ErrInvalid alone.
func (m *Manager) Check(ctx context.Context, id string) (Session, error) {
	now := m.now()
	s, ok := m.cache.getID(id, now)
	if ok {
		m.overlayIdle(&s)
	}
	// A cached copy that looks over may be behind activity on another node: ask the store.
	if !ok || !s.Live(now) || (m.cacheUsable != nil && !m.cacheUsable()) {
		var err error
		gen := m.cache.generation()
		s, err = m.store.SessionByID(ctx, id)
		if errors.Is(err, ErrNotFound) {
			return Session{}, fmt.Errorf("%w: unknown session", ErrInvalid)
		}
		if err != nil {
			return Session{}, err
		}
		m.cache.putID(s, now, gen)
		m.overlayIdle(&s)
	}
	if !s.Live(now) {
		return s, fmt.Errorf("%w: session has ended", ErrInvalid)
	}
	return s, nil
}

// ---- refresh, logout, devices ----

// Refresh rotates the token's session: the new token is returned and the presented one keeps
// working for the rotation grace period. A token that is itself already rotated away is
// ErrConflict (use the newest token).
func (m *Manager) Refresh(ctx context.Context, token string) (Info, string, error) {
	s, _, match, err := m.validate(ctx, token)
	if err != nil {
		return Info{}, "", err
	}
	if match.Retired {
		return Info{}, "", fmt.Errorf("%w: this token was already rotated; use the newest one", ErrConflict)
	}
	return m.RefreshSession(ctx, s)
}

// RefreshSession rotates the token of a validated session (on a connection, which holds the
// session rather than a token). It is one transaction: the old token is retired with the grace
// period as the new one becomes current, so there are never two current tokens, nor none.
func (m *Manager) RefreshSession(ctx context.Context, s Session) (Info, string, error) {
	newToken, newRaw := NewToken()
	nh := hashToken(m.keys.TokenKeys[m.keys.CurrentTokenKey], newRaw)
	now := m.now()
	err := m.store.RotateToken(ctx, s.ID, s.TokenHash, nh[:], now.Add(m.policy.RotationGrace), now)
	if errors.Is(err, ErrConflict) {
		// Our copy of the current token hash was stale (another device of this session rotated
		// it): read the row again and rotate from its current token.
		fresh, ferr := m.store.SessionByID(ctx, s.ID)
		if ferr != nil {
			return Info{}, "", ferr
		}
		s.TokenHash = fresh.TokenHash
		err = m.store.RotateToken(ctx, s.ID, s.TokenHash, nh[:], now.Add(m.policy.RotationGrace), now)
	}
	if errors.Is(err, ErrNotFound) {
		return Info{}, "", fmt.Errorf("%w: session has ended", ErrInvalid)
	}
	if err != nil {
		return Info{}, "", err
	}
	m.Invalidate(s.ID)
	m.notifier.Rotated(ctx, s.UserID, s.ID)
	s.TokenHash = nh[:]
	s = m.Touch(s)
	m.emit(ctx, Event{Kind: EventRefresh, UserID: s.UserID, SessionID: s.ID})
	m.record(ctx, Change{Kind: ChangeSessionRefreshed, UserID: s.UserID, SessionID: s.ID})
	return m.info(s), newToken, nil
}

// Logout ends the session s.
func (m *Manager) Logout(ctx context.Context, s Session) error {
	ids, err := m.store.RevokeSessions(ctx, s.UserID, []string{s.ID}, ReasonLogout, m.now())
	if err != nil {
		return err
	}
	m.afterRevoke(ctx, s.UserID, ids, ReasonLogout)
	return nil
}

// List returns the user's live sessions, oldest first.
func (m *Manager) List(ctx context.Context, userID string) ([]Info, error) {
	ss, err := m.store.ListSessions(ctx, userID, m.now())
	if err != nil {
		return nil, err
	}
	out := make([]Info, 0, len(ss))
	for i := range ss {
		m.overlayIdle(&ss[i])
		out = append(out, m.info(ss[i]))
	}
	return out, nil
}

// Revoke ends one of the caller's sessions. A session that is not the caller user's (or no
// longer live) is ErrNotFound, so other users' sessions are never revealed. Revoking the
// caller's own session is a logout.
func (m *Manager) Revoke(ctx context.Context, caller Session, id string) ([]string, error) {
	reason := ReasonRevokedByUser
	if id == caller.ID {
		reason = ReasonLogout
	}
	ids, err := m.store.RevokeSessions(ctx, caller.UserID, []string{id}, reason, m.now())
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		m.retellRevoked(ctx, caller.UserID, id)
		return nil, ErrNotFound
	}
	m.afterRevoke(ctx, caller.UserID, ids, reason)
	return ids, nil
}

// retellAfter is how recent a revocation must be for a repeated request to tell its devices
// again.
const retellAfter = time.Minute

// retellRevoked tells the devices of a session of userID that was revoked in the last minute,
// again. A revocation whose request gave up (the store answered too late: unavailable) may
// still have been written when the store caught up, and then nobody told the devices; the user
// trying again finds it revoked (not_found), and this makes the notice reach them after all.
// Harmless otherwise: a device already gone is not there to hear it.
func (m *Manager) retellRevoked(ctx context.Context, userID, id string) {
	s, err := m.store.SessionByID(ctx, id)
	if err != nil || s.UserID != userID || s.RevokedAt.IsZero() || m.now().Sub(s.RevokedAt) > retellAfter {
		return
	}
	m.Invalidate(id)
	m.notifier.Revoked(ctx, userID, []string{id}, s.RevokeReason)
}

// RevokeOthers ends every session of the caller's user but the caller's.
func (m *Manager) RevokeOthers(ctx context.Context, caller Session) ([]string, error) {
	ids, err := m.store.RevokeUserSessions(ctx, caller.UserID, caller.ID, ReasonRevokedByUser, m.now())
	if err != nil {
		return nil, err
	}
	m.afterRevoke(ctx, caller.UserID, ids, ReasonRevokedByUser)
	return ids, nil
}

// RevokeUser ends every session of a user (admin action).
func (m *Manager) RevokeUser(ctx context.Context, userID, reason string) ([]string, error) {
	ids, err := m.store.RevokeUserSessions(ctx, userID, "", reason, m.now())
	if err != nil {
		return nil, err
	}
	m.afterRevoke(ctx, userID, ids, reason)
	return ids, nil
}

// PasswordChangeStart answers a re-registration request of the caller's user. The credential
// identifier stays the user id, so the user id is unchanged.
func (m *Manager) PasswordChangeStart(ctx context.Context, caller Session, request []byte) ([]byte, error) {
	return m.opaque.registrationResponse(caller.UserID, request)
}

// PasswordChangeFinish stores the new record and revokes every other session of the user with
// reason password_changed, in one transaction, provided the user's credential is still the
// one the caller's proof of the password (credVersion) was made for: a proof made before
// another password change is ErrAuthFailed, nothing written. The new record's credential
// version is credVersion+1.
func (m *Manager) PasswordChangeFinish(ctx context.Context, caller Session, credVersion int64, record []byte) ([]string, error) {
	rec, err := m.opaque.checkRecord(record)
	if err != nil {
		return nil, err
	}
	ids, err := m.store.ChangeRecord(ctx, caller.UserID, credVersion, m.keys.seal(rec, "record:"+caller.UserID), caller.ID, ReasonPasswordChanged, m.now())
	if errors.Is(err, ErrStaleCredential) {
		return nil, fmt.Errorf("%w: %w", ErrAuthFailed, err)
	}
	if err != nil {
		return nil, err
	}
	m.emit(ctx, Event{Kind: EventPasswordChanged, UserID: caller.UserID, SessionID: caller.ID})
	m.afterRevoke(ctx, caller.UserID, ids, ReasonPasswordChanged)
	if len(ids) == 0 {
		m.changed(ctx, caller.UserID)
	}
	return ids, nil
}

// afterRevoke drops cached validations and tells the devices.
func (m *Manager) afterRevoke(ctx context.Context, userID string, ids []string, reason string) {
	if len(ids) == 0 {
		return
	}
	m.Invalidate(ids...)
	// The devices first: recording the security events is a store write that the forced
	// logout need not wait for (the revocation itself is already stored). The device list
	// notice follows the events, so a device that sees it also sees them in its activity.
	m.notifier.Revoked(ctx, userID, ids, reason)
	evs := make([]Event, len(ids))
	for i, id := range ids {
		evs[i] = Event{Kind: EventRevoked, UserID: userID, SessionID: id, Reason: reason}
	}
	m.emit(ctx, evs...)
	changes := make([]Change, len(ids))
	for i, id := range ids {
		changes[i] = Change{Kind: ChangeSessionEnded, UserID: userID, SessionID: id, Reason: reason}
	}
	m.record(ctx, changes...)
	m.changed(ctx, userID)
}

// changed tells the notifier the user's device list as it is now. Detached from the request
// (the change happened) but bounded.
func (m *Manager) changed(ctx context.Context, userID string) {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	list, err := m.List(lctx, userID)
	if err != nil {
		m.log.Warn().Err(err).Msg("device list for notice.sessions_changed not read")
		return
	}
	m.notifier.Changed(ctx, userID, list)
}

// Invalidate drops cached validations of these sessions (another node changed them).
func (m *Manager) Invalidate(sessionIDs ...string) {
	m.cache.dropSessions(sessionIDs)
}

// Info opens a session for display to its owner.
func (m *Manager) Info(s Session) Info { return m.info(s) }

func (m *Manager) info(s Session) Info {
	dev := m.Device(s)
	if dev.Label == "" {
		dev.Label = "unknown device"
	}
	return Info{
		ID: s.ID, UserID: s.UserID, VaultID: s.VaultID, Device: dev, CreatedAt: s.CreatedAt,
		LastSeenAt: s.LastSeenAt, IdleExpiresAt: s.IdleExpiresAt, ExpiresAt: s.ExpiresAt,
	}
}

// ---- vault ----

// MaxVaultSize is the largest vault blob.
const MaxVaultSize = 1 << 20

// GetVault returns the caller's vault. Never written: ErrNotFound.
func (m *Manager) GetVault(ctx context.Context, caller Session) (Vault, error) {
	return m.store.GetVault(ctx, caller.VaultID)
}

// PutVault writes the caller's vault conditionally.
func (m *Manager) PutVault(ctx context.Context, caller Session, data []byte, ifMatch string, ifNoneMatch bool) (string, error) {
	if len(data) > MaxVaultSize {
		return "", ErrTooLarge
	}
	return m.store.PutVault(ctx, VaultPut{VaultID: caller.VaultID, Data: data, IfMatch: ifMatch, IfNoneMatch: ifNoneMatch, At: m.now()})
}

// ---- background work ----

// Run writes coalesced activity and sweeps ended sessions until ctx ends. Start it once.
func (m *Manager) Run(ctx context.Context) error {
	flush := time.NewTicker(m.policy.TouchInterval)
	defer flush.Stop()
	sweep := time.NewTicker(m.policy.SweepInterval)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			// Activity recorded so far is worth one last write on the way out.
			wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			m.FlushActivity(wctx)
			cancel()
			return nil
		case <-flush.C:
			m.FlushActivity(ctx)
			m.cache.pruneExpired(m.clock.Now())
		case <-m.urgent:
			m.FlushActivity(ctx)
		case <-sweep.C:
			if _, err := m.Sweep(ctx); err != nil && ctx.Err() == nil {
				m.log.Warn().Err(err).Msg("sweep failed; retrying next interval")
			}
		}
	}
}

// FlushActivity writes the pending activity records in one batch. Failed writes are kept for
// the next flush.
func (m *Manager) FlushActivity(ctx context.Context) {
	now := m.now()
	m.mu.Lock()
	if len(m.pending) == 0 {
		m.mu.Unlock()
		return
	}
	batch := make([]Touch, 0, len(m.pending))
	for _, t := range m.pending {
		batch = append(batch, t)
	}
	m.pending = map[string]Touch{}
	// Forget idle deadlines that have passed: the store's copy is then as good.
	for id, t := range m.idle {
		if !t.After(now) {
			delete(m.idle, id)
		}
	}
	m.mu.Unlock()
	if err := m.store.Touch(ctx, batch); err != nil {
		m.log.Warn().Err(err).Int("sessions", len(batch)).Msg("activity write failed; will retry")
		m.mu.Lock()
		for _, t := range batch {
			if cur, ok := m.pending[t.ID]; !ok || cur.IdleExpiresAt.Before(t.IdleExpiresAt) {
				m.pending[t.ID] = t
			}
		}
		m.mu.Unlock()
	}
}

// Sweep deletes sessions that ended more than the retention ago, in bounded batches, and
// returns how many it deleted.
func (m *Manager) Sweep(ctx context.Context) (int, error) {
	before := m.now().Add(-m.policy.Retention)
	total := 0
	for {
		n, err := m.store.DeleteEnded(ctx, before, m.policy.SweepBatch)
		total += n
		if err != nil {
			return total, err
		}
		if n < m.policy.SweepBatch {
			if total > 0 {
				m.log.Info().Str("event", "sweep").Int("deleted", total).Msg("ended sessions swept")
				m.observer.Swept(total)
			}
			// Security events and the outbox have their own, longer retentions.
			if _, err := m.events.DeleteEventsBefore(ctx, m.now().Add(-EventsRetention), m.policy.SweepBatch); err != nil {
				return total, err
			}
			if err := m.sweepChanges(ctx); err != nil {
				return total, err
			}
			return total, nil
		}
		select {
		case <-ctx.Done():
			return total, ctx.Err()
		default:
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// RefreshLead is how long before a deadline devices are prompted (Policy.RefreshLead).
func (m *Manager) RefreshLead() time.Duration { return m.policy.RefreshLead }

// UsernameKey is a keyed hash of a normalised username, for counters kept in shared stores
// that must not list usernames.
func (m *Manager) UsernameKey(name string) string { return m.keys.LogID("username:" + name) }

// AdminToken is the bearer token of the admin API (Keys.AdminToken).
func (m *Manager) AdminToken() string { return m.keys.AdminToken() }

// ServerPublicKey is the OPAQUE server's AKE public key, which clients may pin.
func (m *Manager) ServerPublicKey() []byte { return m.keys.AKEPublicKey }
