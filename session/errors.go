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
)
