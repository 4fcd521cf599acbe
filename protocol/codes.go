package protocol

// Error codes. They are stable: clients switch on them.
const (
	CodeBadRequest         = "bad_request"
	CodeUnknownType        = "unknown_type"
	CodeOutOfOrder         = "out_of_order"
	CodeAuthFailed         = "auth_failed"
	CodeUsernameTaken      = "username_taken"
	CodeUnauthenticated    = "unauthenticated"
	CodeSessionInvalid     = "session_invalid"
	CodeSessionLimit       = "session_limit"
	CodeForbidden          = "forbidden"
	CodeNotFound           = "not_found"
	CodeRateLimited        = "rate_limited"
	CodeUnavailable        = "unavailable"
	CodeInternal           = "internal"
	CodePreconditionFailed = "precondition_failed"
	CodeConflict           = "conflict"
	CodeTooLarge           = "too_large"
	CodeProofInvalid       = "proof_invalid"
	CodeReauthRequired     = "reauth_required"
	CodeMethodNotAllowed   = "method_not_allowed"
)

// WebSocket close codes of the protocol beyond RFC 6455's.
const (
	CloseNormal            = 1000
	CloseGoingAway         = 1001
	CloseUnsupportedData   = 1003
	CloseInvalidData       = 1007
	CloseMessageTooBig     = 1009
	CloseTryAgainLater     = 1013
	CloseProtocolViolation = 4400
	CloseExpired           = 4401
	CloseRevoked           = 4403
	CloseHandshakeTimeout  = 4408
	CloseRateLimited       = 4429
)

// Disconnect says what a close code means and whether a client should reconnect after it (and
// resume its session) by itself.
type Disconnect struct {
	Code      int
	Reason    string
	Reconnect bool
}

// Disconnects is every close code the server sends.
var Disconnects = []Disconnect{
	{CloseNormal, "normal closure (logout, the connection's own session revoked)", false},
	{CloseGoingAway, "server going away (drain, restart): reconnect with back-off and resume", true},
	{CloseUnsupportedData, "binary frame: fix the client", false},
	{CloseInvalidData, "invalid UTF-8: fix the client", false},
	{CloseMessageTooBig, "message too big: fix the client", false},
	{CloseTryAgainLater, "too slow to keep up: reconnect and resume", true},
	{CloseProtocolViolation, "protocol violation: fix the client", false},
	{CloseExpired, "session expired: sign in again", false},
	{CloseRevoked, "session revoked: sign in again", false},
	{CloseHandshakeTimeout, "no login or resume within the handshake deadline: connect again when there is something to do", false},
	{CloseRateLimited, "rate limited: back off", false},
}

// DisconnectFor returns the meaning of a close code. An unknown code (an abnormal closure, a
// network failure) is one to reconnect after, with back-off.
func DisconnectFor(code int) Disconnect {
	for _, d := range Disconnects {
		if d.Code == code {
			return d
		}
	}
	return Disconnect{Code: code, Reason: "connection lost", Reconnect: true}
}
