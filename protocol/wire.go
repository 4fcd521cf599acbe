package protocol

import "time"

// TimeLayout is how times travel: RFC 3339 in UTC with milliseconds.
const TimeLayout = "2006-01-02T15:04:05.000Z07:00"

// Time formats t for the wire.
func Time(t time.Time) string { return t.UTC().Format(TimeLayout) }

// ParseTime reads a wire time.
func ParseTime(s string) (time.Time, error) { return time.Parse(time.RFC3339Nano, s) }

// Session is the session object of login.ok, session.ok and GET /api/v1/session.
type Session struct {
	ID            string `json:"id"`
	Token         string `json:"token,omitempty"` // login.ok only
	UserID        string `json:"user_id"`
	VaultID       string `json:"vault_id"`
	Device        string `json:"device"`
	CreatedAt     string `json:"created_at"`
	LastSeenAt    string `json:"last_seen_at"`
	IdleExpiresAt string `json:"idle_expires_at"`
	ExpiresAt     string `json:"expires_at"`
	// PoP is true when the session requires a proof of possession (addition).
	PoP bool `json:"pop,omitempty"`
}

// Device is one row of sessions.list and notice.sessions_changed.
type Device struct {
	ID            string `json:"id"`
	Current       bool   `json:"current"`
	Device        string `json:"device"`
	CreatedAt     string `json:"created_at"`
	LastSeenAt    string `json:"last_seen_at"`
	IdleExpiresAt string `json:"idle_expires_at"`
	ExpiresAt     string `json:"expires_at"`
}

// Activity is one entry of the recent security activity (activity.list, GET /api/v1/activity).
type Activity struct {
	Kind      string `json:"kind"`
	Reason    string `json:"reason,omitempty"`
	SessionID string `json:"session_id,omitempty"`
	Current   bool   `json:"current"`
	Device    string `json:"device,omitempty"`
	IP        string `json:"ip,omitempty"`
	At        string `json:"at"`
}

// Refreshed is the answer to a refresh (session.refreshed, POST /api/v1/session/refresh).
type Refreshed struct {
	Token         string `json:"token"`
	IdleExpiresAt string `json:"idle_expires_at"`
	ExpiresAt     string `json:"expires_at"`
}

// ErrorBody is an error: the fields of an `error` message, and the body of an HTTP error.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Reason is on session_invalid when the token is that of a session that has ended: why
	// it ended, with the words of notice.revoked / notice.expired ("revoked_by_user",
	// "password_changed", "idle", …). A device that was away when it ended learns why on its
	// next resume.
	Reason string `json:"reason,omitempty"`
}
