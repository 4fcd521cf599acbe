package session

import "time"

// Security event kinds. Each is logged as one structured line with a stable `event` name, kept
// for the user's "recent security activity" list, and counted in the metrics.
const (
	EventLogin           = "login"             // a session was created by a successful login
	EventLoginFailed     = "login_failed"      // a wrong password for a known user
	EventRefresh         = "session_refreshed" // the token was rotated
	EventRevoked         = "session_revoked"   // a session was ended; Reason says why
	EventExpired         = "session_expired"   // a session reached a deadline while a device watched
	EventPasswordChanged = "password_changed"
	EventTokenReuse      = "token_reuse"
	EventFingerprint     = "fingerprint_mismatch"
	EventUserDeleted     = "user_deleted"
	EventRegistered      = "user_registered"
	EventAdminAction     = "admin_action" // an administrator acted on the user; Reason names the action
)

// Event is one security-relevant happening in a user's account.
type Event struct {
	ID        string
	UserID    string
	SessionID string // may be empty
	Kind      string
	Reason    string // for session_revoked / session_expired: the wire reason
	Detail    []byte // sealed EventDetail (device label, address): metadata never rests in clear
	At        time.Time
}

// EventDetail is the part of an event that is sealed at rest.
type EventDetail struct {
	Device string `json:"device,omitempty"`
	IP     string `json:"ip,omitempty"`
}

// Observer receives what the metrics count. Nil fields of Config mean no observer.
type Observer interface {
	// SecurityEvent is called once per event (and per revoked session).
	SecurityEvent(kind, reason string)
	// CacheLookup is called for every validation lookup.
	CacheLookup(hit bool)
	// Swept is called with the number of sessions a sweep deleted.
	Swept(n int)
}

type nopObserver struct{}

func (nopObserver) SecurityEvent(string, string) {}
func (nopObserver) CacheLookup(bool)             {}
func (nopObserver) Swept(int)                    {}

// persisted says which kinds enter the user's activity list: what a person would want to see
// ("a new sign-in", "signed out by …"), not routine token rotation.
var persisted = map[string]bool{
	EventLogin: true, EventLoginFailed: true, EventRevoked: true, EventExpired: false,
	EventPasswordChanged: true, EventTokenReuse: true, EventFingerprint: true, EventRegistered: true,
	EventAdminAction: true, EventUserDeleted: true,
}

// EventsRetention is how long security events are kept for the activity list.
const EventsRetention = 30 * 24 * time.Hour
