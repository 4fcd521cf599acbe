package server

import (
	"context"
	"time"

	"github.com/sessiond/sessiond/session"
)

// The server consumes the session domain through these interfaces, declared here by the
// consumer: it depends on the operations it uses, not on the Manager's whole surface, and not
// on the Manager's keys, policy or clock (*session.Manager implements Domain).

// Authenticator runs the password exchanges: registration, login, re-authentication and the
// password change, and the proof of the password a connection holds.
type Authenticator interface {
	RegisterStart(ctx context.Context, username string, request []byte) ([]byte, *session.Registration, error)
	RegisterFinish(ctx context.Context, r *session.Registration, record []byte) (string, error)
	LoginStart(ctx context.Context, username string, ke1 []byte) ([]byte, *session.Login, error)
	LoginFinish(ctx context.Context, l *session.Login, ke3 []byte, dev session.DeviceInfo) (session.Info, string, error)
	ReauthStart(ctx context.Context, caller session.Session, ke1 []byte) ([]byte, *session.Login, error)
	ReauthFinish(ctx context.Context, l *session.Login, ke3 []byte) error
	ProofOf(l *session.Login) session.Proof
	PasswordChangeAllowed(p session.Proof) error
	PasswordChangeStart(ctx context.Context, caller session.Session, request []byte) ([]byte, error)
	ChangePassword(ctx context.Context, caller session.Session, p session.Proof, record []byte) (session.Proof, error)
	Username(ctx context.Context, userID string) (string, error)
	UsernameKey(name string) string
	ServerPublicKey() []byte
}

// Sessions validates tokens and manages a user's sessions.
type Sessions interface {
	Validate(ctx context.Context, token string) (session.Session, error)
	Check(ctx context.Context, id string) (session.Session, error)
	CheckClient(ctx context.Context, s session.Session, c session.Client) error
	VerifyProof(s session.Session, header, method, path string, body []byte, seen func([]byte) (bool, error)) error
	Touch(s session.Session) session.Session
	Info(s session.Session) session.Info
	Device(s session.Session) session.DeviceInfo
	Refresh(ctx context.Context, token string) (session.Info, string, error)
	RefreshSession(ctx context.Context, s session.Session) (session.Info, string, error)
	Logout(ctx context.Context, s session.Session) error
	List(ctx context.Context, userID string) ([]session.Info, error)
	Revoke(ctx context.Context, caller session.Session, id string) ([]string, error)
	RevokeOthers(ctx context.Context, caller session.Session) ([]string, error)
	Activity(ctx context.Context, userID string, limit int) ([]session.Activity, error)
	GetVault(ctx context.Context, caller session.Session) (session.Vault, error)
	PutVault(ctx context.Context, caller session.Session, data []byte, ifMatch string, ifNoneMatch bool) (string, error)
	RecordExpiry(ctx context.Context, s session.Session, reason string)
	Invalidate(sessionIDs ...string)
	RefreshLead() time.Duration
	Now() time.Time
}

// Admin is the administrator's view of users and sessions.
type Admin interface {
	UserSessions(ctx context.Context, username string) (session.User, []session.Info, error)
	AdminRevoke(ctx context.Context, sessionID string) error
	AdminRevokeUser(ctx context.Context, username string) ([]string, error)
	DeleteUser(ctx context.Context, username string) ([]string, error)
	AdminToken() string
	CreateServiceClient(ctx context.Context, name string) (session.ServiceClient, string, error)
	ListServiceClients(ctx context.Context) ([]session.ServiceClient, error)
	RevokeServiceClient(ctx context.Context, id string) error
}

// Services is what the app's own servers use.
type Services interface {
	AuthenticateService(ctx context.Context, secret string) (session.ServiceClient, error)
	Introspect(ctx context.Context, token string, client *session.Client, touch bool) (session.Session, bool, error)
	ChangesAfter(ctx context.Context, seq int64, limit int) ([]session.Change, error)
	LastChangeSeq(ctx context.Context) (int64, error)
}

// Domain is all the server needs of the domain.
type Domain interface {
	Authenticator
	Sessions
	Admin
	Services
}

var _ Domain = (*session.Manager)(nil)
