package session

import (
	"context"
	"time"
)

// User is an account. Record is the OPAQUE registration record, sealed with the server's
// metadata key (it never rests in clear).
type User struct {
	ID        string
	Username  string // normalised (NFC, case-folded)
	Record    []byte // sealed registration record
	VaultID   string
	CreatedAt time.Time
	// CredVersion counts the user's credentials: 1 at registration, one more with every
	// password change. A proof of the password is only good for the version it was made for.
	CredVersion int64
}

// Session is one login of one device. The token itself is never held: only its keyed hash.
type Session struct {
	ID            string
	UserID        string
	VaultID       string
	TokenHash     []byte
	Device        []byte // sealed DeviceInfo
	CreatedAt     time.Time
	LastSeenAt    time.Time
	IdleExpiresAt time.Time
	ExpiresAt     time.Time
	RevokedAt     time.Time // zero while not revoked
	RevokeReason  string
	// CredVersion is, when the session is created, the user's credential version that the
	// login proved (Store.CreateSession checks it). Not stored: reads leave it zero.
	CredVersion int64
}

// EndAt is the moment the session stops being usable: the earliest of its idle deadline,
// absolute deadline and revocation.
func (s *Session) EndAt() time.Time {
	end := s.IdleExpiresAt
	if s.ExpiresAt.Before(end) {
		end = s.ExpiresAt
	}
	if !s.RevokedAt.IsZero() && s.RevokedAt.Before(end) {
		end = s.RevokedAt
	}
	return end
}

// Live reports whether the session is neither revoked nor past a deadline at now.
func (s *Session) Live(now time.Time) bool {
	return s.RevokedAt.IsZero() && now.Before(s.IdleExpiresAt) && now.Before(s.ExpiresAt)
}

// TokenMatch tells how a token hash matched a session.
type TokenMatch struct {
	// Retired is true when the hash is a token replaced by a rotation.
	Retired bool
	// GraceUntil is when a retired token stops being accepted.
	GraceUntil time.Time
}

// Limit is the per-user session limit applied atomically by Store.CreateSession.
type Limit struct {
	Max         int  // 0: unlimited
	EvictOldest bool // false: deny the new session with ErrSessionLimit
}

// Touch records activity on a session: the last-seen time and the extended idle deadline.
type Touch struct {
	ID            string
	LastSeenAt    time.Time
	IdleExpiresAt time.Time
}

// Vault is a user's client-encrypted blob.
type Vault struct {
	Data      []byte
	ETag      string // opaque version tag, without quotes
	UpdatedAt time.Time
}

// VaultPut is a conditional write of a vault.
type VaultPut struct {
	VaultID     string
	Data        []byte
	IfMatch     string // when set, the current ETag must equal it
	IfNoneMatch bool   // when set, no vault may exist yet
	At          time.Time
}

// The columns of sealed values, as named to Store.SealedValues and Store.ResealValues. Each
// value is sealed with associated data binding it to its row ("record:"+user id,
// "device:"+session id, "event:"+event id).
const (
	SealedUserRecords  = "users.record"
	SealedDevices      = "sessions.device"
	SealedEventDetails = "events.detail"
)

// SealedTables lists every column of sealed values, in the order a rotation re-seals them.
var SealedTables = []string{SealedUserRecords, SealedDevices, SealedEventDetails}

// SealedValue is the sealed value of one row.
type SealedValue struct {
	ID    string // the row's id: user, session or event id
	Value []byte
}

// Reseal replaces the sealed value of row ID with New, provided it still is Old.
type Reseal struct {
	ID       string
	Old, New []byte
}

// Store persists users, sessions and vaults: what serving a request needs. It is the authority: every state change is one
// transaction, and implementations are safe for concurrent use by several nodes.
type Store interface {
	// CreateUser inserts a user, with credential version 1, and an empty vault slot. A taken
	// username: ErrUsernameTaken.
	CreateUser(ctx context.Context, u User) error
	// UserByName returns a user by normalised username. Unknown: ErrNotFound.
	UserByName(ctx context.Context, username string) (User, error)
	// UserByID returns a user by id. Unknown: ErrNotFound.
	UserByID(ctx context.Context, id string) (User, error)
	// ChangeRecord replaces the user's sealed registration record, provided the user's
	// credential version is still credVersion, bumps the version and revokes every live
	// session of the user except keepSessionID, with reason, in one transaction. It returns
	// the ids it revoked. Unknown user: ErrNotFound; another version: ErrStaleCredential;
	// nothing written on error.
	ChangeRecord(ctx context.Context, userID string, credVersion int64, record []byte, keepSessionID, reason string, at time.Time) ([]string, error)
	// DeleteUser removes a user, the vault and revokes every session (reason). Unknown: ErrNotFound.
	DeleteUser(ctx context.Context, userID, reason string, at time.Time) ([]string, error)

	// CreateSession inserts s after applying limit among the user's sessions live at
	// s.CreatedAt, in one transaction. With EvictOldest the oldest (by creation) live sessions
	// are revoked with reason "session_limit" and their ids returned; otherwise a full user
	// gets ErrSessionLimit and nothing is written. In the same transaction the user must exist
	// with credential version s.CredVersion: otherwise ErrStaleCredential, nothing written.
	CreateSession(ctx context.Context, s Session, limit Limit) (evicted []string, err error)
	// SessionByToken finds the session whose current or retired token has this hash, whatever
	// its state (revoked and expired rows are returned until swept). Unknown: ErrNotFound.
	SessionByToken(ctx context.Context, tokenHash []byte) (Session, TokenMatch, error)
	// SessionByID returns a session by id, whatever its state. Unknown: ErrNotFound.
	SessionByID(ctx context.Context, id string) (Session, error)
	// ListSessions returns the user's sessions live at now, oldest first.
	ListSessions(ctx context.Context, userID string, now time.Time) ([]Session, error)
	// RotateToken makes newHash the session's current token and retires oldHash until
	// graceUntil, in one transaction. When oldHash is no longer the current token (a concurrent
	// rotation won) or the session is not live at now: ErrConflict / ErrNotFound, nothing written.
	RotateToken(ctx context.Context, id string, oldHash, newHash []byte, graceUntil, now time.Time) error
	// Touch applies activity records in one batch. An idle deadline never moves backwards and
	// revoked or unknown sessions are left alone.
	Touch(ctx context.Context, touches []Touch) error
	// RevokeSessions revokes those of ids that belong to userID and are live at at, with reason.
	// It returns the ids it revoked (empty when none matched).
	RevokeSessions(ctx context.Context, userID string, ids []string, reason string, at time.Time) ([]string, error)
	// RevokeUserSessions revokes every session of userID live at at except exceptID ("" for
	// none), returning the ids it revoked.
	RevokeUserSessions(ctx context.Context, userID, exceptID, reason string, at time.Time) ([]string, error)
	// DeleteEnded deletes at most limit sessions (with their retired tokens) that ended before
	// before, and returns how many it deleted. Safe to run from several nodes at once.
	DeleteEnded(ctx context.Context, before time.Time, limit int) (int, error)

	// GetVault returns a vault. Never written: ErrNotFound.
	GetVault(ctx context.Context, vaultID string) (Vault, error)
	// PutVault writes a vault conditionally and returns the new ETag. A failed condition:
	// ErrPrecondition, nothing written.
	PutVault(ctx context.Context, p VaultPut) (string, error)

	// RehashToken replaces the current token hash of session id, oldHash, with newHash (the
	// same token hashed under another token key), in one transaction, whatever the session's
	// state; retired tokens are left alone. When the current hash is no longer oldHash (a
	// refresh or another re-hash won): ErrConflict; unknown id: ErrNotFound; newHash empty or
	// equal to oldHash: ErrBadInput; newHash another session's: ErrConflict. Nothing written
	// on error.
	RehashToken(ctx context.Context, id string, oldHash, newHash []byte) error
	// Ping answers when the store can serve requests.
	Ping(ctx context.Context) error
}

// EventStore keeps the users' security events (the activity list). Optional: a Manager whose
// Store does not implement it records events in the log only.
type EventStore interface {
	// AddEvents appends security events, in one transaction.
	AddEvents(ctx context.Context, events []Event) error
	// ListEvents returns the user's most recent events, newest first, at most limit.
	ListEvents(ctx context.Context, userID string, limit int) ([]Event, error)
	// DeleteEventsBefore deletes at most limit events older than before and returns how many.
	DeleteEventsBefore(ctx context.Context, before time.Time, limit int) (int, error)
}

// KeyStore is what key management needs of a store: the deployment's key fingerprint, and the
// sealed values a key rotation re-seals. Only the node's start-up and rotate-keys use it.
type KeyStore interface {
	// CheckKeyFingerprint records fp as the deployment's key fingerprint the first time and
	// afterwards returns ErrKeyMismatch when fp differs.
	CheckKeyFingerprint(ctx context.Context, fp string) error
	// SetKeyFingerprint records fp as the deployment's key fingerprint, replacing the one
	// recorded before (a key rotation made other keys current). An empty fp: ErrBadInput.
	SetKeyFingerprint(ctx context.Context, fp string) error

	// SealedValues returns, for a key rotation, at most limit non-empty sealed values of table
	// (one of SealedTables) whose row ids sort after afterID, in id order as the store sorts
	// ids; afterID "" starts at the beginning, the last id returned continues. Rows of every
	// state count (revoked and ended sessions too). An unknown table or a limit < 1: ErrBadInput.
	SealedValues(ctx context.Context, table, afterID string, limit int) ([]SealedValue, error)
	// ResealValues applies the replacements to table in one transaction, each only where the
	// row still holds exactly Old, so that a value written meanwhile is never overwritten; it
	// returns how many it replaced. Rows changed or deleted meanwhile are skipped, not an
	// error. An unknown table, an empty New or an id named twice: ErrBadInput, nothing written.
	ResealValues(ctx context.Context, table string, updates []Reseal) (int, error)
}

// Backend is a store that offers everything: what the stores of package store are.
type Backend interface {
	Store
	EventStore
	KeyStore
	ServiceStore
	OutboxStore
}

// ServiceClient is one of the application's own servers, allowed to introspect tokens. Only a
// hash of its secret is kept.
type ServiceClient struct {
	ID         string
	Name       string
	SecretHash []byte
	CreatedAt  time.Time
	RevokedAt  time.Time // zero while it may call
}

// ServiceStore keeps the service clients. Optional: without it no service can introspect.
type ServiceStore interface {
	// CreateServiceClient inserts c.
	CreateServiceClient(ctx context.Context, c ServiceClient) error
	// ServiceClientBySecret finds the client with this secret hash, revoked or not. Unknown:
	// ErrNotFound.
	ServiceClientBySecret(ctx context.Context, secretHash []byte) (ServiceClient, error)
	// ListServiceClients returns every client, oldest first.
	ListServiceClients(ctx context.Context) ([]ServiceClient, error)
	// RevokeServiceClient revokes a client at at. Unknown or already revoked: ErrNotFound.
	RevokeServiceClient(ctx context.Context, id string, at time.Time) error
}

// The kinds of Change.
const (
	ChangeSessionCreated   = "session.created"
	ChangeSessionRefreshed = "session.refreshed"
	ChangeSessionEnded     = "session.ended"
	ChangeUserDeleted      = "user.deleted"
)

// Change is one entry of the outbox, the record of what the application's servers are told:
// a session created, refreshed or ended (with the reason), a user deleted. Seq orders them.
type Change struct {
	Seq       int64
	Kind      string
	UserID    string
	SessionID string
	Reason    string
	At        time.Time
}

// OutboxStore keeps the outbox. Optional: without it there is no event stream.
type OutboxStore interface {
	// AppendChanges records changes (Seq is assigned), in one transaction.
	AppendChanges(ctx context.Context, changes []Change) error
	// ChangesAfter returns at most limit changes with Seq > seq, in Seq order.
	ChangesAfter(ctx context.Context, seq int64, limit int) ([]Change, error)
	// LastChangeSeq returns the highest Seq recorded (0 for none).
	LastChangeSeq(ctx context.Context) (int64, error)
	// DeleteChangesBefore deletes at most limit changes older than before.
	DeleteChangesBefore(ctx context.Context, before time.Time, limit int) (int, error)
}
