package session

import (
	"context"
	"time"
)

// Proof is a connection's last proof of the password (a login or a re-authentication on it):
// when it was made and for which credential version. A password change needs a fresh one.
type Proof struct {
	At          time.Time
	CredVersion int64
}

// Fresh reports whether p allows a password change at now: made within ReauthWindow.
func (p Proof) Fresh(now time.Time) bool {
	return !p.At.IsZero() && now.Sub(p.At) < ReauthWindow
}

// ProofOf is the proof a finished login or re-authentication l gives its connection.
func (m *Manager) ProofOf(l *Login) Proof { return Proof{At: m.now(), CredVersion: l.CredVersion()} }

// PasswordChangeAllowed refuses a password change without a fresh proof (ErrReauthRequired).
func (m *Manager) PasswordChangeAllowed(p Proof) error {
	if !p.Fresh(m.now()) {
		return ErrReauthRequired
	}
	return nil
}

// ChangePassword is PasswordChangeFinish on the caller's proof; it returns the proof the
// connection holds afterwards (the same moment, for the new credential version: it proved the
// password it just set).
func (m *Manager) ChangePassword(ctx context.Context, caller Session, p Proof, record []byte) (Proof, error) {
	if err := m.PasswordChangeAllowed(p); err != nil {
		return p, err
	}
	if _, err := m.PasswordChangeFinish(ctx, caller, p.CredVersion, record); err != nil {
		return p, err
	}
	return Proof{At: p.At, CredVersion: p.CredVersion + 1}, nil
}

// Session is the session row an Info was made from, as far as Info carries it (no token hash,
// no sealed device record): what a connection needs to follow the session.
func (i Info) Session() Session {
	return Session{ID: i.ID, UserID: i.UserID, VaultID: i.VaultID, CreatedAt: i.CreatedAt,
		LastSeenAt: i.LastSeenAt, IdleExpiresAt: i.IdleExpiresAt, ExpiresAt: i.ExpiresAt}
}

// EndReason says why a session that is no longer live ended: revoked (with the reason it was
// revoked for; a row that is gone reads as revoked by an administrator) or expired (idle or
// absolute).
func EndReason(s Session, now time.Time) (reason string, revoked bool) {
	switch {
	case s.ID == "":
		// The row is gone: swept after its end, or its user deleted.
		return ReasonAdmin, true
	case !s.RevokedAt.IsZero():
		return s.RevokeReason, true
	case !now.Before(s.ExpiresAt):
		return ReasonAbsolute, false
	default:
		return ReasonIdle, false
	}
}
