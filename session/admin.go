package session

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
)

// Administrative actions. Each is recorded as an admin_action security event of the user it
// concerns (reason: the action), listed in that user's activity, reads included; revocations
// also carry the stable reason "admin", are logged with a keyed hash of each session id and
// pushed to the affected devices.

// UserSessions returns the live sessions of the user with this username. Unknown: ErrNotFound.
func (m *Manager) UserSessions(ctx context.Context, username string) (User, []Info, error) {
	u, err := m.userByName(ctx, username)
	if err != nil {
		return User{}, nil, err
	}
	list, err := m.List(ctx, u.ID)
	if err == nil {
		m.emit(ctx, Event{Kind: EventAdminAction, UserID: u.ID, Reason: "list_sessions"})
	}
	return u, list, err
}

// AdminRevoke ends one session, whoever owns it. Unknown or already ended: ErrNotFound.
func (m *Manager) AdminRevoke(ctx context.Context, sessionID string) error {
	s, err := m.store.SessionByID(ctx, sessionID)
	if err != nil {
		return err
	}
	ids, err := m.store.RevokeSessions(ctx, s.UserID, []string{s.ID}, ReasonAdmin, m.now())
	if err != nil {
		return err
	}
	if len(ids) == 0 {
		return ErrNotFound
	}
	m.emit(ctx, Event{Kind: EventAdminAction, UserID: s.UserID, SessionID: s.ID, Reason: "revoke_session"})
	m.afterRevoke(ctx, s.UserID, ids, ReasonAdmin)
	return nil
}

// AdminRevokeUser ends every session of the user with this username.
func (m *Manager) AdminRevokeUser(ctx context.Context, username string) ([]string, error) {
	u, err := m.userByName(ctx, username)
	if err != nil {
		return nil, err
	}
	m.emit(ctx, Event{Kind: EventAdminAction, UserID: u.ID, Reason: "revoke_user"})
	return m.RevokeUser(ctx, u.ID, ReasonAdmin)
}

// DeleteUser removes the account and its vault, and ends every session of it.
func (m *Manager) DeleteUser(ctx context.Context, username string) ([]string, error) {
	u, err := m.userByName(ctx, username)
	if err != nil {
		return nil, err
	}
	ids, err := m.store.DeleteUser(ctx, u.ID, ReasonAdmin, m.now())
	if err != nil {
		return nil, err
	}
	m.emit(ctx, Event{Kind: EventAdminAction, UserID: u.ID, Reason: "delete_user"}, Event{Kind: EventUserDeleted, UserID: u.ID})
	defer m.record(ctx, Change{Kind: ChangeUserDeleted, UserID: u.ID}) // after its sessions' endings
	m.afterRevoke(ctx, u.ID, ids, ReasonAdmin)
	return ids, nil
}

func (m *Manager) userByName(ctx context.Context, username string) (User, error) {
	name, err := NormalizeUsername(username)
	if err != nil {
		return User{}, err
	}
	u, err := m.store.UserByName(ctx, name)
	if errors.Is(err, ErrNotFound) {
		return User{}, ErrNotFound
	}
	return u, err
}

// AdminToken is the bearer token of the admin API, derived from the key file's admin key so that
// whoever holds the current key file (and only they) can administer the deployment; every key
// rotation changes it. A key file from before admin keys existed derives it from the log key,
// as then (LegacyAdminToken reports that).
func (k *Keys) AdminToken() string {
	if len(k.AdminKey) == 0 {
		m := hmac.New(sha256.New, k.LogKey)
		m.Write([]byte("sessiond admin token v1"))
		return "sda_" + hex.EncodeToString(m.Sum(nil))
	}
	m := hmac.New(sha256.New, k.AdminKey)
	m.Write([]byte("sessiond admin token v2"))
	return "sda_" + hex.EncodeToString(m.Sum(nil))
}

// LegacyAdminToken reports whether the admin token is still derived from the log key (a key
// file without an admin key): it cannot be changed without rotating the keys.
func (k *Keys) LegacyAdminToken() bool { return len(k.AdminKey) == 0 }
