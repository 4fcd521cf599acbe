package server

// The wrappers below count every method of a session.Backend (Store, EventStore, KeyStore) by
// operation; they are written by hand, one per method, and a compile-time assertion keeps them
// in step with the interfaces.

import (
	"context"
	"errors"
	"time"

	"github.com/sessiond/sessiond/session"
)

// instrumentedStore counts store operations and their failures (sessiond_store_ops_total), so
// that operators and the load tool can see how often the hot paths reach the store.
type instrumentedStore struct {
	next session.Backend
	m    *Metrics
}

var _ session.Backend = instrumentedStore{}

// InstrumentStore returns st with every operation counted in m.
func InstrumentStore(st session.Backend, m *Metrics) session.Backend {
	return instrumentedStore{next: st, m: m}
}

func (st instrumentedStore) observe(start time.Time, op string, err error) {
	st.m.storeSecs.WithLabelValues(op).Observe(time.Since(start).Seconds())
	result := "ok"
	switch {
	case err == nil:
	case errors.Is(err, session.ErrNotFound), errors.Is(err, session.ErrUsernameTaken), errors.Is(err, session.ErrPrecondition),
		errors.Is(err, session.ErrConflict), errors.Is(err, session.ErrSessionLimit), errors.Is(err, session.ErrKeyMismatch):
		result = "refused"
	default:
		result = "error"
	}
	st.m.storeOps.WithLabelValues(op, result).Inc()
}

// CreateUser implements session.Store.
func (st instrumentedStore) CreateUser(ctx context.Context, u session.User) error {
	start := time.Now()
	err := st.next.CreateUser(ctx, u)
	st.observe(start, "CreateUser", err)
	return err
}

// UserByName implements session.Store.
func (st instrumentedStore) UserByName(ctx context.Context, username string) (session.User, error) {
	start := time.Now()
	r0, err := st.next.UserByName(ctx, username)
	// An unknown name is an outcome of a lookup like a known one: counted alike, so that the
	// series cannot tell registered usernames from others.
	if errors.Is(err, session.ErrNotFound) {
		st.observe(start, "UserByName", nil)
	} else {
		st.observe(start, "UserByName", err)
	}
	return r0, err
}

// UserByID implements session.Store.
func (st instrumentedStore) UserByID(ctx context.Context, id string) (session.User, error) {
	start := time.Now()
	r0, err := st.next.UserByID(ctx, id)
	st.observe(start, "UserByID", err)
	return r0, err
}

// ChangeRecord implements session.Store.
func (st instrumentedStore) ChangeRecord(ctx context.Context, userID string, credVersion int64, record []byte, keepSessionID string, reason string, at time.Time) ([]string, error) {
	start := time.Now()
	r0, err := st.next.ChangeRecord(ctx, userID, credVersion, record, keepSessionID, reason, at)
	st.observe(start, "ChangeRecord", err)
	return r0, err
}

// DeleteUser implements session.Store.
func (st instrumentedStore) DeleteUser(ctx context.Context, userID string, reason string, at time.Time) ([]string, error) {
	start := time.Now()
	r0, err := st.next.DeleteUser(ctx, userID, reason, at)
	st.observe(start, "DeleteUser", err)
	return r0, err
}

// CreateSession implements session.Store.
func (st instrumentedStore) CreateSession(ctx context.Context, s session.Session, limit session.Limit) ([]string, error) {
	start := time.Now()
	r0, err := st.next.CreateSession(ctx, s, limit)
	st.observe(start, "CreateSession", err)
	return r0, err
}

// SessionByToken implements session.Store.
func (st instrumentedStore) SessionByToken(ctx context.Context, tokenHash []byte) (session.Session, session.TokenMatch, error) {
	start := time.Now()
	r0, r1, err := st.next.SessionByToken(ctx, tokenHash)
	st.observe(start, "SessionByToken", err)
	return r0, r1, err
}

// SessionByID implements session.Store.
func (st instrumentedStore) SessionByID(ctx context.Context, id string) (session.Session, error) {
	start := time.Now()
	r0, err := st.next.SessionByID(ctx, id)
	st.observe(start, "SessionByID", err)
	return r0, err
}

// ListSessions implements session.Store.
func (st instrumentedStore) ListSessions(ctx context.Context, userID string, now time.Time) ([]session.Session, error) {
	start := time.Now()
	r0, err := st.next.ListSessions(ctx, userID, now)
	st.observe(start, "ListSessions", err)
	return r0, err
}

// RotateToken implements session.Store.
func (st instrumentedStore) RotateToken(ctx context.Context, id string, oldHash []byte, newHash []byte, graceUntil time.Time, now time.Time) error {
	start := time.Now()
	err := st.next.RotateToken(ctx, id, oldHash, newHash, graceUntil, now)
	st.observe(start, "RotateToken", err)
	return err
}

// Touch implements session.Store.
func (st instrumentedStore) Touch(ctx context.Context, touches []session.Touch) error {
	start := time.Now()
	err := st.next.Touch(ctx, touches)
	st.observe(start, "Touch", err)
	return err
}

// RevokeSessions implements session.Store.
func (st instrumentedStore) RevokeSessions(ctx context.Context, userID string, ids []string, reason string, at time.Time) ([]string, error) {
	start := time.Now()
	r0, err := st.next.RevokeSessions(ctx, userID, ids, reason, at)
	st.observe(start, "RevokeSessions", err)
	return r0, err
}

// RevokeUserSessions implements session.Store.
func (st instrumentedStore) RevokeUserSessions(ctx context.Context, userID string, exceptID string, reason string, at time.Time) ([]string, error) {
	start := time.Now()
	r0, err := st.next.RevokeUserSessions(ctx, userID, exceptID, reason, at)
	st.observe(start, "RevokeUserSessions", err)
	return r0, err
}

// DeleteEnded implements session.Store.
func (st instrumentedStore) DeleteEnded(ctx context.Context, before time.Time, limit int) (int, error) {
	start := time.Now()
	r0, err := st.next.DeleteEnded(ctx, before, limit)
	st.observe(start, "DeleteEnded", err)
	return r0, err
}

// GetVault implements session.Store.
func (st instrumentedStore) GetVault(ctx context.Context, vaultID string) (session.Vault, error) {
	start := time.Now()
	r0, err := st.next.GetVault(ctx, vaultID)
	st.observe(start, "GetVault", err)
	return r0, err
}

// PutVault implements session.Store.
func (st instrumentedStore) PutVault(ctx context.Context, p session.VaultPut) (string, error) {
	start := time.Now()
	r0, err := st.next.PutVault(ctx, p)
	st.observe(start, "PutVault", err)
	return r0, err
}

// AddEvents implements session.Store.
func (st instrumentedStore) AddEvents(ctx context.Context, events []session.Event) error {
	start := time.Now()
	err := st.next.AddEvents(ctx, events)
	st.observe(start, "AddEvents", err)
	return err
}

// ListEvents implements session.Store.
func (st instrumentedStore) ListEvents(ctx context.Context, userID string, limit int) ([]session.Event, error) {
	start := time.Now()
	r0, err := st.next.ListEvents(ctx, userID, limit)
	st.observe(start, "ListEvents", err)
	return r0, err
}

// DeleteEventsBefore implements session.Store.
func (st instrumentedStore) DeleteEventsBefore(ctx context.Context, before time.Time, limit int) (int, error) {
	start := time.Now()
	r0, err := st.next.DeleteEventsBefore(ctx, before, limit)
	st.observe(start, "DeleteEventsBefore", err)
	return r0, err
}

// CheckKeyFingerprint implements session.Store.
func (st instrumentedStore) CheckKeyFingerprint(ctx context.Context, fp string) error {
	start := time.Now()
	err := st.next.CheckKeyFingerprint(ctx, fp)
	st.observe(start, "CheckKeyFingerprint", err)
	return err
}

// Ping implements session.Store.
func (st instrumentedStore) Ping(ctx context.Context) error {
	start := time.Now()
	err := st.next.Ping(ctx)
	st.observe(start, "Ping", err)
	return err
}
