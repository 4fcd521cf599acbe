// Package client is the Go client of sessiond: OPAQUE registration and login over the
// WebSocket, the pushed session notices, device management, and an HTTP client for /api/v1.
//
// Client is what an application uses: it keeps one device signed in, reconnects with back-off
// and jitter and resumes the same session after a dropped connection or a server restart,
// stops on the close codes that end the session, and delivers notices with time.Time fields on
// a channel that never drops a revocation or an expiry. Conn is one WebSocket connection
// speaking the protocol message by message (the tests and the load generator use it).
//
// Concurrency: Client and Conn are safe for concurrent use; replies are matched to requests by
// id, and notices arrive in order.
package client

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bytemare/opaque"
	"github.com/coder/websocket"

	"github.com/sessiond/sessiond/internal/clienthook"
	"github.com/sessiond/sessiond/protocol"
)

// Subprotocol is the protocol's WebSocket subprotocol.
const Subprotocol = protocol.Subprotocol

var b64 = base64.RawURLEncoding

// ksfOptions are the Argon2id options of opts: the protocol's, or minimal ones for tests and
// load generation (internal/clientx.Cheap).
func ksfOptions(opts Options) *opaque.ClientOptions {
	p := protocol.KSF
	if opts.cheapKSF {
		p.Time, p.MemoryKiB, p.Threads = 1, 64, 1
	}
	return p.ClientOptions()
}

// Options configures a connection. Zero values are fine.
type Options struct {
	Origin     string      // sent as the Origin header when set (browsers always send one)
	Header     http.Header // extra upgrade headers (e.g. User-Agent)
	HTTPClient *http.Client
	// ReconnectMin and ReconnectMax bound a Client's reconnect back-off (defaults 250 ms, 30 s).
	ReconnectMin, ReconnectMax time.Duration

	cheapKSF      bool // test hook: internal/clientx.Cheap
	noSubprotocol bool // test hook: internal/clientx.NoSubprotocol
}

func init() {
	clienthook.Cheap = func(o any) any { opts := o.(Options); opts.cheapKSF = true; return opts }
	clienthook.NoSubprotocol = func(o any) any { opts := o.(Options); opts.noSubprotocol = true; return opts }
	clienthook.SendRaw = func(conn any, ctx context.Context, binary bool, data []byte) error {
		typ := websocket.MessageText
		if binary {
			typ = websocket.MessageBinary
		}
		return conn.(*Conn).ws.Write(ctx, typ, data)
	}
}

// Message is one server message: its type, id and the raw JSON for decoding its fields.
type Message struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Code string `json:"code"`
	Msg  string `json:"message"`
	// Reason is the error's reason (session_invalid for an ended session), if any.
	Reason string          `json:"reason"`
	Raw    json.RawMessage `json:"-"`
}

// Decode unmarshals the message's fields into v.
func (m Message) Decode(v any) error { return json.Unmarshal(m.Raw, v) }

// Error is an error reply of the server.
type Error struct {
	Code    string
	Message string
	Reason  string // session_invalid for an ended session: why it ended (may be empty)
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// IsCode reports whether err is a server error with this code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// Session is the wire session object.
type Session = protocol.Session

// Device is a row of the device list.
type Device = protocol.Device

// Conn is one WebSocket connection to sessiond.
type Conn struct {
	base string
	opts Options
	ws   *websocket.Conn

	seq     atomic.Uint64
	mu      sync.Mutex
	pending map[string]chan Message
	token   string
	popKey  []byte

	notices *noticeQueue
	done    chan struct{}
	status  atomic.Int32 // close code once done
}

// Dial connects to a server at base ("http://127.0.0.1:8080").
func Dial(ctx context.Context, base string, opts Options) (*Conn, error) {
	base = strings.TrimRight(base, "/")
	wsURL := "ws" + strings.TrimPrefix(base, "http") + "/ws"
	h := http.Header{}
	for k, v := range opts.Header {
		h[k] = v
	}
	if opts.Origin != "" {
		h.Set("Origin", opts.Origin)
	}
	do := &websocket.DialOptions{HTTPHeader: h, HTTPClient: opts.HTTPClient, CompressionMode: websocket.CompressionDisabled}
	if !opts.noSubprotocol {
		do.Subprotocols = []string{Subprotocol}
	}
	ws, resp, err := websocket.Dial(ctx, wsURL, do)
	if err != nil {
		if resp != nil {
			return nil, &DialError{Status: resp.StatusCode, Err: err}
		}
		return nil, err
	}
	ws.SetReadLimit(1 << 20)
	c := &Conn{base: base, opts: opts, ws: ws, pending: map[string]chan Message{}, notices: newNoticeQueue(), done: make(chan struct{})}
	go c.readLoop()
	return c, nil
}

// DialError is a refused upgrade.
type DialError struct {
	Status int
	Err    error
}

func (e *DialError) Error() string { return "upgrade refused with HTTP " + strconv.Itoa(e.Status) }
func (e *DialError) Unwrap() error { return e.Err }

func (c *Conn) readLoop() {
	// Done closes before Notices does, so that a reader that sees the notices end finds the
	// close code already known.
	defer c.notices.close()
	defer close(c.done)
	for {
		_, data, err := c.ws.Read(context.Background())
		if err != nil {
			c.status.Store(int32(websocket.CloseStatus(err)))
			c.mu.Lock()
			for id, ch := range c.pending {
				close(ch)
				delete(c.pending, id)
			}
			c.mu.Unlock()
			return
		}
		var m Message
		if json.Unmarshal(data, &m) != nil {
			continue
		}
		m.Raw = data
		c.mu.Lock()
		ch, ok := c.pending[m.ID]
		if ok && m.ID != "" {
			delete(c.pending, m.ID)
		}
		c.mu.Unlock()
		if ok && m.ID != "" {
			ch <- m
			continue
		}
		c.notices.push(m) // never blocks the read loop; see noticeQueue
	}
}

// Notices delivers server messages that answer no request (notice.*, errors without id), in
// order. A reader that falls behind loses nothing that matters: notice.revoked and
// notice.expired are never dropped, and of several waiting notice.sessions_changed only the
// newest is kept. It is closed when the connection has ended and every notice was delivered.
func (c *Conn) Notices() <-chan Message { return c.notices.out }

// Done is closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// CloseCode is the close code the connection ended with (-1 while open or when none).
func (c *Conn) CloseCode() int {
	select {
	case <-c.done:
		return int(c.status.Load())
	default:
		return -1
	}
}

// Close closes the connection normally.
func (c *Conn) Close() error { return c.ws.Close(websocket.StatusNormalClosure, "") }

// Token is the current session token (after Login, Resume or Refresh).
func (c *Conn) Token() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.token
}

func (c *Conn) setToken(t string) {
	c.mu.Lock()
	c.token = t
	c.mu.Unlock()
}

// Call sends a message of type typ with fields and waits for its reply. An error reply is
// returned as *Error.
func (c *Conn) Call(ctx context.Context, typ string, fields map[string]any) (Message, error) {
	id := "c" + strconv.FormatUint(c.seq.Add(1), 10)
	msg := map[string]any{"type": typ, "id": id}
	for k, v := range fields {
		msg[k] = v
	}
	data, err := json.Marshal(msg)
	if err != nil {
		return Message{}, err
	}
	ch := make(chan Message, 1)
	c.mu.Lock()
	c.pending[id] = ch
	c.mu.Unlock()
	if err := c.ws.Write(ctx, websocket.MessageText, data); err != nil {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
		return Message{}, err
	}
	select {
	case m, ok := <-ch:
		if !ok {
			return Message{}, fmt.Errorf("connection closed (code %d)", c.status.Load())
		}
		if m.Type == "error" {
			return m, &Error{Code: m.Code, Message: m.Msg, Reason: m.Reason}
		}
		return m, nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
		return Message{}, ctx.Err()
	}
}

// Register creates an account and returns its user id and the OPAQUE export key.
func (c *Conn) Register(ctx context.Context, username, password string) (string, []byte, error) {
	oc, err := protocol.OPAQUE().Client()
	if err != nil {
		return "", nil, err
	}
	req, err := oc.RegistrationInit([]byte(password))
	if err != nil {
		return "", nil, err
	}
	m, err := c.Call(ctx, "register.start", map[string]any{"username": username, "request": b64.EncodeToString(req.Serialize())})
	if err != nil {
		return "", nil, err
	}
	record, exportKey, err := c.finishRegistration(oc, m, password)
	if err != nil {
		return "", nil, err
	}
	m, err = c.Call(ctx, "register.finish", map[string]any{"record": record})
	if err != nil {
		return "", nil, err
	}
	var ok struct {
		UserID string `json:"user_id"`
	}
	if err := m.Decode(&ok); err != nil {
		return "", nil, err
	}
	return ok.UserID, exportKey, nil
}

func (c *Conn) finishRegistration(oc *opaque.Client, m Message, password string) (string, []byte, error) {
	var ch struct {
		Response string `json:"response"`
	}
	if err := m.Decode(&ch); err != nil {
		return "", nil, err
	}
	raw, err := b64.DecodeString(ch.Response)
	if err != nil {
		return "", nil, fmt.Errorf("server sent a malformed response: %w", err)
	}
	resp, err := oc.Deserialize.RegistrationResponse(raw)
	if err != nil {
		return "", nil, err
	}
	opts := ksfOptions(c.opts)
	rec, exportKey, err := oc.RegistrationFinalize(resp, nil, nil, opts)
	if err != nil {
		return "", nil, err
	}
	return b64.EncodeToString(rec.Serialize()), exportKey, nil
}

// LoginResult is what a successful login yields.
type LoginResult struct {
	Session    Session
	ExportKey  []byte
	SessionKey []byte
	// PoPKey is the proof-of-possession key when the session requires one: keep it with the
	// token (NewAPI(...).WithProof(key), Conn.ResumeWithProof).
	PoPKey []byte
}

// Login runs the OPAQUE login and authenticates the connection. A wrong password still
// completes the exchange (with a KE3 that cannot verify) so the server sees and counts the
// failure; the error is then the server's auth_failed.
func (c *Conn) Login(ctx context.Context, username, password, device string) (LoginResult, error) {
	oc, err := protocol.OPAQUE().Client()
	if err != nil {
		return LoginResult{}, err
	}
	ke1, err := oc.GenerateKE1([]byte(password))
	if err != nil {
		return LoginResult{}, err
	}
	fields := map[string]any{"username": username, "ke1": b64.EncodeToString(ke1.Serialize())}
	if device != "" {
		fields["device"] = device
	}
	m, err := c.Call(ctx, "login.start", fields)
	if err != nil {
		return LoginResult{}, err
	}
	var ch struct {
		KE2 string `json:"ke2"`
	}
	if err := m.Decode(&ch); err != nil {
		return LoginResult{}, err
	}
	raw, err := b64.DecodeString(ch.KE2)
	if err != nil {
		return LoginResult{}, fmt.Errorf("server sent a malformed ke2: %w", err)
	}
	ke2, err := oc.Deserialize.KE2(raw)
	if err != nil {
		return LoginResult{}, err
	}
	var ke3b []byte
	var res LoginResult
	ke3, sessionKey, exportKey, err := oc.GenerateKE3(ke2, nil, nil, ksfOptions(c.opts))
	if err != nil {
		ke3b = make([]byte, 64)
		_, _ = rand.Read(ke3b)
	} else {
		ke3b = ke3.Serialize()
		res.ExportKey, res.SessionKey = exportKey, sessionKey
	}
	m, err = c.Call(ctx, "login.finish", map[string]any{"ke3": b64.EncodeToString(ke3b)})
	if err != nil {
		return LoginResult{}, err
	}
	var ok struct {
		Session Session `json:"session"`
	}
	if err := m.Decode(&ok); err != nil {
		return LoginResult{}, err
	}
	res.Session = ok.Session
	if ok.Session.PoP {
		res.PoPKey = protocol.DerivePoPKey(res.SessionKey, ok.Session.ID)
	}
	c.mu.Lock()
	c.token, c.popKey = ok.Session.Token, res.PoPKey
	c.mu.Unlock()
	return res, nil
}

// Resume authenticates the connection with an existing token.
func (c *Conn) Resume(ctx context.Context, token string) (Session, error) {
	return c.ResumeWithProof(ctx, token, nil)
}

// ResumeWithProof resumes a session that requires a proof of possession, signing the resume
// with popKey (nil: no proof).
func (c *Conn) ResumeWithProof(ctx context.Context, token string, popKey []byte) (Session, error) {
	fields := map[string]any{"token": token}
	if popKey != nil {
		fields["proof"] = protocol.SignProof(popKey, "RESUME", "/ws", time.Now().UnixMilli(), []byte(token))
	}
	m, err := c.Call(ctx, "session.resume", fields)
	if err != nil {
		return Session{}, err
	}
	var ok struct {
		Session Session `json:"session"`
	}
	if err := m.Decode(&ok); err != nil {
		return Session{}, err
	}
	c.setToken(token)
	return ok.Session, nil
}

// Refreshed is the answer to a refresh.
type Refreshed = protocol.Refreshed

// Refresh rotates the session's token.
func (c *Conn) Refresh(ctx context.Context) (Refreshed, error) {
	m, err := c.Call(ctx, "session.refresh", nil)
	if err != nil {
		return Refreshed{}, err
	}
	var r Refreshed
	if err := m.Decode(&r); err != nil {
		return Refreshed{}, err
	}
	c.setToken(r.Token)
	return r, nil
}

// Sessions lists the user's devices.
func (c *Conn) Sessions(ctx context.Context) ([]Device, error) {
	m, err := c.Call(ctx, "sessions.list", nil)
	if err != nil {
		return nil, err
	}
	var r struct {
		Sessions []Device `json:"sessions"`
	}
	return r.Sessions, m.Decode(&r)
}

// Revoke signs one of the user's devices out.
func (c *Conn) Revoke(ctx context.Context, sessionID string) ([]string, error) {
	m, err := c.Call(ctx, "sessions.revoke", map[string]any{"session_id": sessionID})
	if err != nil {
		return nil, err
	}
	var r struct {
		IDs []string `json:"session_ids"`
	}
	return r.IDs, m.Decode(&r)
}

// RevokeOthers signs every other device of the user out.
func (c *Conn) RevokeOthers(ctx context.Context) ([]string, error) {
	m, err := c.Call(ctx, "sessions.revoke_others", nil)
	if err != nil {
		return nil, err
	}
	var r struct {
		IDs []string `json:"session_ids"`
	}
	return r.IDs, m.Decode(&r)
}

// Logout ends the session; the server then closes the connection with 1000.
func (c *Conn) Logout(ctx context.Context) error {
	_, err := c.Call(ctx, "session.logout", nil)
	return err
}

// Reauth proves the password again on a signed-in connection, as a password change requires
// when the connection did not log in within the last 10 minutes (e.g. after a resume).
func (c *Conn) Reauth(ctx context.Context, password string) error {
	oc, err := protocol.OPAQUE().Client()
	if err != nil {
		return err
	}
	ke1, err := oc.GenerateKE1([]byte(password))
	if err != nil {
		return err
	}
	m, err := c.Call(ctx, "reauth.start", map[string]any{"ke1": b64.EncodeToString(ke1.Serialize())})
	if err != nil {
		return err
	}
	var ch struct {
		KE2 string `json:"ke2"`
	}
	if err := m.Decode(&ch); err != nil {
		return err
	}
	raw, err := b64.DecodeString(ch.KE2)
	if err != nil {
		return fmt.Errorf("server sent a malformed ke2: %w", err)
	}
	ke2, err := oc.Deserialize.KE2(raw)
	if err != nil {
		return err
	}
	ke3b := make([]byte, 64)
	if ke3, _, _, err := oc.GenerateKE3(ke2, nil, nil, ksfOptions(c.opts)); err == nil {
		ke3b = ke3.Serialize()
	} else {
		_, _ = rand.Read(ke3b) // let the server see and count the failure
	}
	_, err = c.Call(ctx, "reauth.finish", map[string]any{"ke3": b64.EncodeToString(ke3b)})
	return err
}

// ChangePassword re-registers the signed-in user with a new password and returns the new
// export key. Every other session of the user ends.
func (c *Conn) ChangePassword(ctx context.Context, newPassword string) ([]byte, error) {
	oc, err := protocol.OPAQUE().Client()
	if err != nil {
		return nil, err
	}
	req, err := oc.RegistrationInit([]byte(newPassword))
	if err != nil {
		return nil, err
	}
	m, err := c.Call(ctx, "password.change.start", map[string]any{"request": b64.EncodeToString(req.Serialize())})
	if err != nil {
		return nil, err
	}
	record, exportKey, err := c.finishRegistration(oc, m, newPassword)
	if err != nil {
		return nil, err
	}
	if _, err := c.Call(ctx, "password.change.finish", map[string]any{"record": record}); err != nil {
		return nil, err
	}
	return exportKey, nil
}

// WaitNotice returns the next notice of type typ, skipping others, or an error when ctx ends
// or the connection closes first.
func (c *Conn) WaitNotice(ctx context.Context, typ string) (Message, error) {
	for {
		select {
		case m, ok := <-c.notices.out:
			if !ok {
				return Message{}, fmt.Errorf("connection closed with %d before %s", c.status.Load(), typ)
			}
			if m.Type == typ {
				return m, nil
			}
		case <-ctx.Done():
			return Message{}, fmt.Errorf("waiting for %s: %w", typ, ctx.Err())
		}
	}
}
