package client

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/sessiond/sessiond/protocol"
)

// Events a Client adds to the server's notices.
const (
	// EventDisconnected: the connection dropped and the Client reconnects and resumes by itself
	// (Reason says why, CloseCode is the close code, Delay is the wait before the first try).
	EventDisconnected = "disconnected"
	// EventResumed: the Client is connected again, with the same session.
	EventResumed = "resumed"
	// EventEnded: the session is over (Reason: the server's, e.g. "revoked_by_user", "idle",
	// "logout", or "session_invalid" when a resume was refused). Events is closed after it.
	EventEnded = "ended"
)

// ErrNotSignedIn is returned by a Client's calls before a login or resume, and after the end.
var ErrNotSignedIn = errors.New("client: not signed in")

// SessionInfo is the client's session, with times as time.Time.
type SessionInfo struct {
	ID, UserID, VaultID, Device                     string
	CreatedAt, LastSeenAt, IdleExpiresAt, ExpiresAt time.Time
	PoP                                             bool // requests must carry a proof of possession
}

// DeviceInfo is a row of the user's device list.
type DeviceInfo struct {
	ID, Device                                      string
	Current                                         bool // the session of the client that asked
	CreatedAt, LastSeenAt, IdleExpiresAt, ExpiresAt time.Time
}

// Event is a server notice or a change of the Client's connection.
type Event struct {
	// Type is a notice type (protocol.NoticeRefreshDue, NoticeReauthDue, NoticeExpired,
	// NoticeRevoked, NoticeSessionsChanged) or EventDisconnected, EventResumed, EventEnded.
	Type      string
	Reason    string        // expired/revoked/ended: why; disconnected: what the close code means
	Deadline  time.Time     // refresh_due: the idle deadline; reauth_due: the absolute one
	In        time.Duration // refresh_due, reauth_due: how long until Deadline
	Devices   []DeviceInfo  // sessions_changed: the whole list
	CloseCode int           // disconnected, ended: the connection's close code (0: none)
	Delay     time.Duration // disconnected: the wait before the first reconnect
}

// Client keeps one device signed in: it logs in (or resumes a stored token), reconnects after a
// dropped connection with exponential back-off and jitter and resumes the same session, stops
// for good on the close codes that end it (protocol.Disconnects), and delivers notices and its
// own events on Events, never dropping the ones that end the session. Every call takes a
// context; a call made while reconnecting waits for the connection (or the context).
type Client struct {
	base string
	opts Options

	mu        sync.Mutex
	conn      *Conn
	ready     chan struct{} // closed when conn is set or the session ended
	token     string
	popKey    []byte
	session   SessionInfo
	signedIn  bool
	closing   bool
	stop      chan struct{}
	events    *queue[Event]
	endReason string
}

// NewClient returns a Client of the server at base ("https://auth.example.com"), not yet signed in.
func NewClient(base string, opts Options) *Client {
	return &Client{base: base, opts: opts, ready: make(chan struct{}), stop: make(chan struct{}),
		events: newQueue(func(e Event) string { return e.Type })}
}

// Events delivers notices and connection events in order; it is closed after EventEnded or
// Close. A reader that falls behind loses nothing that ends the session.
func (c *Client) Events() <-chan Event { return c.events.out }

// Register creates an account on a connection of its own; it does not sign in.
func (c *Client) Register(ctx context.Context, username, password string) (userID string, exportKey []byte, err error) {
	conn, err := Dial(ctx, c.base, c.opts)
	if err != nil {
		return "", nil, err
	}
	defer conn.Close()
	return conn.Register(ctx, username, password)
}

// Login signs in and keeps the connection. It returns the OPAQUE export key, a stable secret of
// the password (keep it in memory only).
func (c *Client) Login(ctx context.Context, username, password, device string) (SessionInfo, []byte, error) {
	if err := c.notSignedIn(); err != nil {
		return SessionInfo{}, nil, err
	}
	conn, err := Dial(ctx, c.base, c.opts)
	if err != nil {
		return SessionInfo{}, nil, err
	}
	res, err := conn.Login(ctx, username, password, device)
	if err != nil {
		conn.Close()
		return SessionInfo{}, nil, err
	}
	return c.attach(conn, res.Session, res.Session.Token, res.PoPKey), res.ExportKey, nil
}

// Resume signs in with a stored token (and its proof-of-possession key, nil when the session
// has none). A token the server no longer accepts is an error with code session_invalid.
func (c *Client) Resume(ctx context.Context, token string, popKey []byte) (SessionInfo, error) {
	if err := c.notSignedIn(); err != nil {
		return SessionInfo{}, err
	}
	conn, err := Dial(ctx, c.base, c.opts)
	if err != nil {
		return SessionInfo{}, err
	}
	s, err := conn.ResumeWithProof(ctx, token, popKey)
	if err != nil {
		conn.Close()
		return SessionInfo{}, err
	}
	return c.attach(conn, s, token, popKey), nil
}

func (c *Client) notSignedIn() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || c.endReason != "" {
		return errors.New("client: closed or ended; make a new Client")
	}
	if c.signedIn {
		return errors.New("client: already signed in")
	}
	return nil
}

func (c *Client) attach(conn *Conn, s Session, token string, popKey []byte) SessionInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn, c.token, c.popKey, c.signedIn = conn, token, popKey, true
	c.session = sessionInfo(s)
	close(c.ready)
	go c.watch(conn)
	return c.session
}

// Session is the current session; false before sign-in and after the end.
func (c *Client) Session() (SessionInfo, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.session, c.signedIn
}

// Token is the current token (rotated by Refresh): store it with PoPKey to Resume later.
func (c *Client) Token() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.token
}

// PoPKey is the session's proof-of-possession key, nil when it has none.
func (c *Client) PoPKey() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.popKey
}

// API is an HTTP client of /api/v1 with the current token (and proof key).
func (c *Client) API() *API {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := NewAPI(c.base, c.token).WithProof(c.popKey)
	if c.opts.HTTPClient != nil {
		a.HTTP = c.opts.HTTPClient
	}
	a.Header = c.opts.Header
	return a
}

// current returns the connection, waiting while the Client reconnects.
func (c *Client) current(ctx context.Context) (*Conn, error) {
	for {
		c.mu.Lock()
		conn, ready, signedIn := c.conn, c.ready, c.signedIn
		c.mu.Unlock()
		if !signedIn {
			return nil, ErrNotSignedIn
		}
		if conn != nil {
			return conn, nil
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Refresh rotates the token and extends the idle deadline.
func (c *Client) Refresh(ctx context.Context) (SessionInfo, error) {
	conn, err := c.current(ctx)
	if err != nil {
		return SessionInfo{}, err
	}
	r, err := conn.Refresh(ctx)
	if err != nil {
		return SessionInfo{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.token = r.Token
	c.session.IdleExpiresAt, c.session.ExpiresAt = parseTime(r.IdleExpiresAt), parseTime(r.ExpiresAt)
	return c.session, nil
}

// Devices lists the user's sessions.
func (c *Client) Devices(ctx context.Context) ([]DeviceInfo, error) {
	conn, err := c.current(ctx)
	if err != nil {
		return nil, err
	}
	list, err := conn.Sessions(ctx)
	if err != nil {
		return nil, err
	}
	return deviceInfos(list), nil
}

// Revoke signs one device out (this one: a logout, and EventEnded follows).
func (c *Client) Revoke(ctx context.Context, sessionID string) error {
	conn, err := c.current(ctx)
	if err != nil {
		return err
	}
	_, err = conn.Revoke(ctx, sessionID)
	return err
}

// RevokeOthers signs every other device of the user out and returns their session ids.
func (c *Client) RevokeOthers(ctx context.Context) ([]string, error) {
	conn, err := c.current(ctx)
	if err != nil {
		return nil, err
	}
	return conn.RevokeOthers(ctx)
}

// Reauth proves the password again on the connection (before ChangePassword); the session stays.
func (c *Client) Reauth(ctx context.Context, password string) error {
	conn, err := c.current(ctx)
	if err != nil {
		return err
	}
	return conn.Reauth(ctx, password)
}

// Logout ends the session; EventEnded (reason "logout") follows and Events closes.
func (c *Client) Logout(ctx context.Context) error {
	conn, err := c.current(ctx)
	if err != nil {
		return err
	}
	if err := conn.Logout(ctx); err != nil {
		return err
	}
	c.end("logout", protocol.CloseNormal)
	return nil
}

// Close stops the Client without ending the session (Token and PoPKey can resume it later).
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return nil
	}
	c.closing = true
	conn := c.conn
	close(c.stop)
	c.mu.Unlock()
	c.events.close()
	if conn != nil {
		return conn.Close()
	}
	return nil
}

// watch forwards conn's notices and, when it ends, either reconnects or ends the session.
func (c *Client) watch(conn *Conn) {
	ended := ""
	for m := range conn.Notices() {
		ev := eventOf(m)
		if m.Type == protocol.NoticeRevoked || m.Type == protocol.NoticeExpired {
			ended = ev.Reason
		}
		if m.Type == protocol.NoticeRefreshDue {
			c.mu.Lock()
			c.session.IdleExpiresAt = ev.Deadline
			c.mu.Unlock()
		}
		c.events.push(ev)
	}
	code := conn.CloseCode()
	c.mu.Lock()
	if c.conn != conn || c.closing || !c.signedIn {
		c.mu.Unlock()
		return
	}
	d := protocol.DisconnectFor(code)
	if ended != "" || !d.Reconnect {
		c.mu.Unlock()
		if ended == "" {
			ended = d.Reason
		}
		c.end(ended, code)
		return
	}
	c.conn, c.ready = nil, make(chan struct{})
	c.mu.Unlock()
	go c.reconnect(code, d.Reason)
}

// Backoff is the wait before reconnect attempt n (0-based): exponential from min, capped at
// max, with "equal jitter" (between half and all of it) so that clients dropped together do
// not return together.
func Backoff(n int, min, max time.Duration) time.Duration {
	ceiling := max
	if n < 30 && min<<n < max {
		ceiling = min << n
	}
	return ceiling/2 + rand.N(ceiling/2+1)
}

func (c *Client) backoff(n int) time.Duration {
	lo, hi := c.opts.ReconnectMin, c.opts.ReconnectMax
	if lo <= 0 {
		lo = 250 * time.Millisecond
	}
	if hi <= 0 {
		hi = 30 * time.Second
	}
	return Backoff(n, lo, max(lo, hi))
}

// reconnect dials and resumes until it succeeds, the session is refused, or Close.
func (c *Client) reconnect(code int, why string) {
	for n := 0; ; n++ {
		delay := c.backoff(n)
		if n == 0 {
			c.events.push(Event{Type: EventDisconnected, Reason: why, CloseCode: code, Delay: delay})
		}
		select {
		case <-c.stop:
			return
		case <-time.After(delay):
		}
		done, err := c.tryResume()
		if done {
			return
		}
		if IsCode(err, protocol.CodeSessionInvalid) {
			// The session ended while the device was away: the reason the server gives
			// (revoked_by_user, idle, …) when it knows the token, else session_invalid.
			reason := protocol.CodeSessionInvalid
			var e *Error
			if errors.As(err, &e) && e.Reason != "" {
				reason = e.Reason
			}
			c.end(reason, 0)
			return
		}
	}
}

// tryResume makes one attempt; done when the Client is connected again or closed.
func (c *Client) tryResume() (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := Dial(ctx, c.base, c.opts)
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	token, popKey := c.token, c.popKey
	c.mu.Unlock()
	s, err := conn.ResumeWithProof(ctx, token, popKey)
	if err != nil {
		conn.Close()
		return false, err
	}
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		conn.Close()
		return true, nil
	}
	c.conn, c.session = conn, sessionInfo(s)
	close(c.ready)
	c.mu.Unlock()
	c.events.push(Event{Type: EventResumed})
	go c.watch(conn)
	return true, nil
}

// end marks the session over, tells the reader and closes Events.
func (c *Client) end(reason string, code int) {
	c.mu.Lock()
	if !c.signedIn {
		c.mu.Unlock()
		return
	}
	c.signedIn, c.endReason, c.token, c.popKey = false, reason, "", nil
	conn := c.conn
	c.conn = nil
	select {
	case <-c.ready:
	default:
		close(c.ready)
	}
	c.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
	c.events.push(Event{Type: EventEnded, Reason: reason, CloseCode: code})
	c.events.close()
}

func parseTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

func sessionInfo(s Session) SessionInfo {
	return SessionInfo{ID: s.ID, UserID: s.UserID, VaultID: s.VaultID, Device: s.Device, PoP: s.PoP,
		CreatedAt: parseTime(s.CreatedAt), LastSeenAt: parseTime(s.LastSeenAt),
		IdleExpiresAt: parseTime(s.IdleExpiresAt), ExpiresAt: parseTime(s.ExpiresAt)}
}

func deviceInfos(list []Device) []DeviceInfo {
	out := make([]DeviceInfo, len(list))
	for i, d := range list {
		out[i] = DeviceInfo{ID: d.ID, Device: d.Device, Current: d.Current,
			CreatedAt: parseTime(d.CreatedAt), LastSeenAt: parseTime(d.LastSeenAt),
			IdleExpiresAt: parseTime(d.IdleExpiresAt), ExpiresAt: parseTime(d.ExpiresAt)}
	}
	return out
}

// eventOf translates a server notice.
func eventOf(m Message) Event {
	var f struct {
		Reason        string   `json:"reason"`
		IdleExpiresAt string   `json:"idle_expires_at"`
		ExpiresAt     string   `json:"expires_at"`
		InMS          int64    `json:"in_ms"`
		Sessions      []Device `json:"sessions"`
	}
	_ = m.Decode(&f)
	ev := Event{Type: m.Type, Reason: f.Reason, In: time.Duration(f.InMS) * time.Millisecond}
	switch m.Type {
	case protocol.NoticeRefreshDue:
		ev.Deadline = parseTime(f.IdleExpiresAt)
	case protocol.NoticeReauthDue:
		ev.Deadline = parseTime(f.ExpiresAt)
	case protocol.NoticeSessionsChanged:
		ev.Devices = deviceInfos(f.Sessions)
	case protocol.TypeError:
		ev.Reason = m.Code
	}
	return ev
}
