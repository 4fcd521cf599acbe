package server

import (
	"errors"
	"net/http"

	"github.com/sessiond/sessiond/protocol"
	"github.com/sessiond/sessiond/session"
)

// errNoSuchSession answers a session id that is not even an id: no session has it.
var errNoSuchSession = newWireError(protocol.CodeNotFound, http.StatusNotFound, "no such session")

// errInsecure refuses a password exchange (registration, login) and the token it would issue
// over plain HTTP.
var errInsecure = newWireError(protocol.CodeForbidden, http.StatusForbidden,
	"registration, login and session tokens need TLS: use https/wss (or configure SESSIOND_TRUSTED_PROXIES for a TLS-terminating proxy)")

// ErrRateLimited is returned when a caller is over one of the abuse limits.
var ErrRateLimited = errors.New("server: rate limited")

// errorTable maps domain errors to wire codes and HTTP statuses: the one place that does.
var errorTable = []struct {
	err    error
	code   string
	status int
	msg    string
}{
	{session.ErrBadInput, protocol.CodeBadRequest, http.StatusBadRequest, ""},
	{session.ErrAttemptExpired, protocol.CodeOutOfOrder, http.StatusConflict, "the login.start or reauth.start this answers has expired; start again"},
	{session.ErrAuthFailed, protocol.CodeAuthFailed, http.StatusUnauthorized, "wrong username or password"},
	{session.ErrUsernameTaken, protocol.CodeUsernameTaken, http.StatusConflict, "this username is taken"},
	{session.ErrInvalid, protocol.CodeSessionInvalid, http.StatusUnauthorized, "the session is invalid, expired or revoked"},
	{session.ErrSessionLimit, protocol.CodeSessionLimit, http.StatusConflict, "this account has reached its limit of signed-in devices"},
	{session.ErrNotFound, protocol.CodeNotFound, http.StatusNotFound, "not found"},
	{session.ErrPrecondition, protocol.CodePreconditionFailed, http.StatusPreconditionFailed, "the stored version differs from the one given"},
	{session.ErrConflict, protocol.CodeConflict, http.StatusConflict, ""},
	{session.ErrTooLarge, protocol.CodeTooLarge, http.StatusRequestEntityTooLarge, "too large"},
	{session.ErrNoOutbox, protocol.CodeUnavailable, http.StatusServiceUnavailable, "this deployment's store keeps no outbox"},
	{session.ErrNoServices, protocol.CodeUnavailable, http.StatusServiceUnavailable, "this deployment's store keeps no service clients"},
	{session.ErrUnavailable, protocol.CodeUnavailable, http.StatusServiceUnavailable, "the service is temporarily unavailable; try again"},
	{session.ErrReauthRequired, protocol.CodeReauthRequired, http.StatusForbidden, "prove the password again first (reauth.start / reauth.finish)"},
	{session.ErrProof, protocol.CodeProofInvalid, http.StatusUnauthorized, ""},
	{ErrRateLimited, protocol.CodeRateLimited, http.StatusTooManyRequests, "too many requests; slow down"},
}

// wireError is an error with its code, status and a message safe to show.
type wireError struct {
	code   string
	status int
	msg    string
}

func (e *wireError) Error() string { return e.code + ": " + e.msg }

func newWireError(code string, status int, msg string) *wireError {
	return &wireError{code: code, status: status, msg: msg}
}

// classify maps any error to its wire form. Unknown errors are internal: the caller logs them.
func classify(err error) (*wireError, bool) {
	var we *wireError
	if errors.As(err, &we) {
		return we, true
	}
	for _, e := range errorTable {
		if errors.Is(err, e.err) {
			msg := e.msg
			if msg == "" {
				msg = publicMessage(err)
			}
			return &wireError{code: e.code, status: e.status, msg: msg}, true
		}
	}
	return &wireError{code: protocol.CodeInternal, status: http.StatusInternalServerError, msg: "internal error"}, false
}

// publicMessage strips the package prefix of a domain error ("session: bad input: username is
// empty" → "username is empty"); domain errors carry no secrets.
func publicMessage(err error) string {
	s := err.Error()
	for _, p := range []string{"session: bad input: ", "session: conflicting update: ", "session: proof of possession failed: "} {
		if len(s) > len(p) && s[:len(p)] == p {
			return s[len(p):]
		}
	}
	return s
}
