package session

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ReauthWindow is how long a fresh proof of the password (a login, or a re-authentication on a
// signed-in connection) allows changing the password. A stolen token alone therefore cannot
// take the account over (ASVS 5.0 V7.5.1).
const ReauthWindow = 10 * time.Minute

// ErrReauthRequired asks the client to prove the password again before a sensitive change.
var ErrReauthRequired = errors.New("session: re-authentication required")

// Username returns the normalised username of a user (for the login limits a re-authentication
// shares with logins). A deleted user is ErrInvalid: the session is as good as over.
func (m *Manager) Username(ctx context.Context, userID string) (string, error) {
	u, err := m.store.UserByID(ctx, userID)
	if errors.Is(err, ErrNotFound) {
		return "", fmt.Errorf("%w: the account no longer exists", ErrInvalid)
	}
	return u.Username, err
}

// ReauthStart begins an OPAQUE login for the caller's own user on a signed-in connection.
func (m *Manager) ReauthStart(ctx context.Context, caller Session, ke1 []byte) ([]byte, *Login, error) {
	u, err := m.store.UserByID(ctx, caller.UserID)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, nil, fmt.Errorf("%w: the account no longer exists", ErrInvalid)
		}
		return nil, nil, err
	}
	return m.userKE2(u, ke1)
}

// ReauthFinish verifies KE3 of a re-authentication. It creates no session. A wrong password is
// ErrAuthFailed and is recorded like a failed login; so is a proof made against a record the
// user no longer has (the password changed, or the user was deleted, since ReauthStart). The
// proof is good for l.CredVersion(); PasswordChangeFinish checks that again when it writes.
func (m *Manager) ReauthFinish(ctx context.Context, l *Login, ke3 []byte) error {
	if err := m.checkPending(l); err != nil {
		return err
	}
	if err := m.opaque.finish(l.out, ke3); err != nil {
		if errors.Is(err, ErrAuthFailed) {
			m.emit(ctx, Event{Kind: EventLoginFailed, UserID: l.user.ID, Reason: "reauth"})
		}
		return err
	}
	u, err := m.store.UserByID(ctx, l.user.ID)
	switch {
	case errors.Is(err, ErrNotFound) || err == nil && u.CredVersion != l.user.CredVersion:
		m.emit(ctx, Event{Kind: EventLoginFailed, UserID: l.user.ID, Reason: "credential_changed"})
		return fmt.Errorf("%w: %w", ErrAuthFailed, ErrStaleCredential)
	case err != nil:
		return err
	}
	return nil
}
