package session

import "errors"

// Sentinel errors. Callers check them with errors.Is; the server maps each to one wire code.
var (
	ErrNotFound      = errors.New("session: not found")
	ErrUsernameTaken = errors.New("session: username taken")
	ErrAuthFailed    = errors.New("session: authentication failed")
	ErrInvalid       = errors.New("session: session invalid")
	ErrBadInput      = errors.New("session: bad input")
	ErrSessionLimit  = errors.New("session: session limit reached")
	ErrPrecondition  = errors.New("session: precondition failed")
	ErrConflict      = errors.New("session: conflicting update")
	ErrTooLarge      = errors.New("session: too large")
	ErrUnavailable   = errors.New("session: store unavailable")
	ErrKeyMismatch   = errors.New("session: key material differs from the deployment's")
	ErrTokenReuse    = errors.New("session: rotated token reused")
	// ErrStaleCredential: the user's password changed, or the user was deleted, after the
	// proof of the password being used was computed against the old registration record.
	ErrStaleCredential = errors.New("session: the credential changed after it was proved")
	// ErrAttemptExpired: a login.finish or reauth.finish came after the pending state of its
	// start expired (Policy.PendingTimeout).
	ErrAttemptExpired = errors.New("session: the login attempt expired")
)

// EndedError is ErrInvalid for a token whose session exists but has ended: Reason says why,
// as EndReason does.
type EndedError struct {
	Reason string
}

func (e *EndedError) Error() string {
	return "session: session invalid: session has ended (" + e.Reason + ")"
}

// Unwrap makes an EndedError an ErrInvalid.
func (e *EndedError) Unwrap() error { return ErrInvalid }
