// Package protocol is the sessiond.v1 wire contract as Go: the subprotocol, message types, the
// wire objects, error and close codes (with whether a client should reconnect after each), the
// OPAQUE configuration and proof-of-possession signing. The server and the Go client both use it
// and nothing else defines these; docs/PROTOCOL.md describes them in prose.
//
// It imports nothing of sessiond's.
package protocol

// Subprotocol is the WebSocket subprotocol a client must offer.
const Subprotocol = "sessiond.v1"

// MaxMessageBytes is the largest client message.
const MaxMessageBytes = 64 << 10

// Client messages.
const (
	TypePing                 = "ping"
	TypeRegisterStart        = "register.start"
	TypeRegisterFinish       = "register.finish"
	TypeLoginStart           = "login.start"
	TypeLoginFinish          = "login.finish"
	TypeSessionResume        = "session.resume"
	TypeSessionRefresh       = "session.refresh"
	TypeSessionLogout        = "session.logout"
	TypeSessionsList         = "sessions.list"
	TypeSessionsRevoke       = "sessions.revoke"
	TypeSessionsRevokeOthers = "sessions.revoke_others"
	TypePasswordChangeStart  = "password.change.start"
	TypePasswordChangeFinish = "password.change.finish"
	TypeReauthStart          = "reauth.start"
	TypeReauthFinish         = "reauth.finish"
	TypeActivityList         = "activity.list"
)

// Server replies.
const (
	TypePong                    = "pong"
	TypeError                   = "error"
	TypeRegisterChallenge       = "register.challenge"
	TypeRegisterOK              = "register.ok"
	TypeLoginChallenge          = "login.challenge"
	TypeLoginOK                 = "login.ok"
	TypeSessionOK               = "session.ok"
	TypeSessionRefreshed        = "session.refreshed"
	TypeSessionEnded            = "session.ended"
	TypeSessions                = "sessions"
	TypeSessionsRevoked         = "sessions.revoked"
	TypePasswordChangeChallenge = "password.change.challenge"
	TypePasswordChangeOK        = "password.change.ok"
	TypeReauthChallenge         = "reauth.challenge"
	TypeReauthOK                = "reauth.ok"
	TypeActivity                = "activity"
)

// Notices (no id): pushed by the server.
const (
	NoticeRefreshDue      = "notice.refresh_due"
	NoticeReauthDue       = "notice.reauth_due"
	NoticeExpired         = "notice.expired"
	NoticeRevoked         = "notice.revoked"
	NoticeSessionsChanged = "notice.sessions_changed"
)

// Reasons a session ended, as notice.revoked and notice.expired carry them.
const (
	ReasonLogout          = "logout"
	ReasonRevokedByUser   = "revoked_by_user"
	ReasonPasswordChanged = "password_changed"
	ReasonTokenReuse      = "token_reuse"
	ReasonFingerprint     = "fingerprint_mismatch"
	ReasonSessionLimit    = "session_limit"
	ReasonAdmin           = "admin"
	ReasonIdle            = "idle"
	ReasonAbsolute        = "absolute"
)
