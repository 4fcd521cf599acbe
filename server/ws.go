package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"

	"github.com/sessiond/sessiond/protocol"
	"github.com/sessiond/sessiond/session"
)

// outQueueLen bounds a connection's queue of outgoing messages.
const outQueueLen = 32

// requestDeadline bounds the work of one client message or API request, store round trips
// included. A store that refuses connections fails at once; one that stops answering (a network
// partition, a hung server) would otherwise hold the request until TCP gives up, minutes later.
// With it the device is told unavailable and can retry.
const requestDeadline = 5 * time.Second

// maxBadInARow is how many invalid messages in a row make a peer "clearly not speaking the
// protocol" (close 4400).
const maxBadInARow = 10

type outItem struct {
	data   []byte
	close  bool
	code   websocket.StatusCode
	reason string
}

// conn is one device connection.
type conn struct {
	srv       *Server
	ws        *websocket.Conn
	ctx       context.Context
	cancel    context.CancelFunc
	ip        string
	userAgent string
	tokensOK  bool // tokens may be issued on this connection (TLS, or insecure allowed)

	limiter *rate.Limiter // client messages
	overs   int           // messages refused by the limiter in a row

	// The outgoing queue. A writer goroutine runs only while it is not empty: an idle
	// connection holds no writer (nor its stack), which is most of what 10,000 idle devices
	// would otherwise cost. At most one writer runs at a time.
	outMu   sync.Mutex
	out     []outItem // at most outQueueLen
	changed []byte    // newest coalesced notice.sessions_changed, written after the queue
	writing bool      // a writer goroutine is running
	stopped bool      // nothing more is written: the connection is closing or over
	writers sync.WaitGroup
	closing atomic.Bool

	mu             sync.Mutex // guards the fields below
	sess           *session.Session
	reg            *session.Registration
	login          *session.Login
	pwChange       bool
	recentAuth     time.Time      // the last proof of the password on this connection
	recentCred     int64          // the credential version that proof was for
	reauth         *session.Login // a re-authentication in progress
	pendingLabel   string
	loginBudget    loginBudget // what the login or re-authentication in progress spent
	timer          *time.Timer
	promptedIdle   time.Time
	promptedReauth bool
	badInARow      int
	endingSelf     bool   // a logout of this connection's own session is under way
	heldReason     string // a revocation of the own session that arrived meanwhile
}

// offersSubprotocol reports whether the upgrade request lists ours.
func offersSubprotocol(r *http.Request) bool {
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(h, ",") {
			if strings.TrimSpace(p) == protocol.Subprotocol {
				return true
			}
		}
	}
	return false
}

func (s *Server) handleWS(w http.ResponseWriter, r *http.Request) {
	if !offersSubprotocol(r) {
		s.httpError(w, r, newWireError(protocol.CodeBadRequest, http.StatusBadRequest, "the WebSocket subprotocol "+protocol.Subprotocol+" must be offered"))
		return
	}
	if !s.originAllowed(r) {
		s.httpError(w, r, newWireError(protocol.CodeForbidden, http.StatusForbidden, "this Origin may not open a WebSocket here"))
		return
	}
	ip := s.clientIP(r)
	if !s.connsPerAddr.acquire(limitKey(ip), s.limits.ConnectionsPerAddr) {
		s.metrics.rateLimited.WithLabelValues("connections_per_address").Inc()
		s.httpError(w, r, newWireError(protocol.CodeRateLimited, http.StatusTooManyRequests, "too many connections from this address"))
		return
	}
	// The HTTP server's read and write deadlines bound requests; a WebSocket lives on after
	// the upgrade with deadlines of its own (handshake, pings, the write queue).
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	ws, err := websocket.Accept(smallBuffers{w}, r, &websocket.AcceptOptions{
		Subprotocols:       []string{protocol.Subprotocol},
		InsecureSkipVerify: true, // the Origin was checked above against our own allow-list
		CompressionMode:    websocket.CompressionDisabled,
	})
	if err != nil {
		s.connsPerAddr.release(limitKey(ip))
		return // Accept has answered the request
	}
	ws.SetReadLimit(protocol.MaxMessageBytes)
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	c := &conn{
		srv: s, ws: ws, ctx: ctx, cancel: cancel, ip: ip, userAgent: r.UserAgent(), tokensOK: s.tokensAllowed(r),
		limiter: rate.NewLimiter(rate.Limit(s.limits.MessagesPerSecond), s.limits.MessageBurst),
	}
	if !s.track(c) {
		ws.Close(websocket.StatusGoingAway, "server shutting down")
		cancel()
		s.connsPerAddr.release(limitKey(ip))
		return
	}
	// The connection outlives this handler: the hijacked socket is the WebSocket's now, and
	// returning lets net/http free the request, its buffers and this goroutine's stack, which
	// every idle connection would otherwise keep.
	go c.serve()
}

// serve runs the connection: its reader, and a writer while there is something to write.
func (c *conn) serve() {
	s := c.srv
	defer s.connsPerAddr.release(limitKey(c.ip))
	defer s.untrack(c)
	handshake := time.AfterFunc(s.cfg.HandshakeTimeout, func() {
		c.mu.Lock()
		authed := c.sess != nil
		c.mu.Unlock()
		if !authed {
			c.closeAfter(nil, protocol.CloseHandshakeTimeout, "no login or resume within the handshake deadline")
		}
	})
	c.readLoop()
	handshake.Stop()
	c.cancel()
	c.outMu.Lock()
	c.stopped = true
	c.outMu.Unlock()
	c.writers.Wait()
	c.cleanup()
}

func (c *conn) readLoop() {
	for {
		typ, data, err := c.ws.Read(c.ctx)
		if err != nil {
			return
		}
		if c.closing.Load() {
			// A close is under way: read on until the close handshake ends the connection.
			continue
		}
		switch {
		case typ != websocket.MessageText:
			c.closeNow(websocket.StatusUnsupportedData, "binary frames are not part of the protocol")
		case !utf8.Valid(data):
			c.closeNow(websocket.StatusInvalidFramePayloadData, "text frames must be UTF-8")
		default:
			c.handleOwnGoroutine(data)
		}
	}
}

// handleOwnGoroutine handles one message on a short-lived goroutine and waits for it, so that
// messages are still handled one at a time and in order. Handlers run deep (OPAQUE, the store)
// and would grow the reader's stack, which an idle connection then keeps for good; a goroutine
// that ends gives its stack back. A panic in a handler ends this connection, not the process.
func (c *conn) handleOwnGoroutine(data []byte) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if p := recover(); p != nil {
				c.srv.log.Error().Str("panic", fmt.Sprint(p)).Str("stack", string(debug.Stack())).Msg("panic handling a message; closing the connection")
				c.closeNow(websocket.StatusInternalError, "internal error")
			}
		}()
		c.handle(data)
	}()
	<-done
}

// enqueue adds it to the outgoing queue and starts the writer if none runs. It reports false
// when the queue is full. After the connection stopped writing, it drops it.
func (c *conn) enqueue(it outItem) bool {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	if c.stopped {
		return true
	}
	if len(c.out) >= outQueueLen {
		return false
	}
	c.out = append(c.out, it)
	c.startWriterLocked()
	return true
}

// startWriterLocked starts the writer unless one runs. c.outMu is held.
func (c *conn) startWriterLocked() {
	if c.writing || c.stopped {
		return
	}
	c.writing = true
	c.writers.Add(1)
	go c.writeLoop()
}

// writeLoop is the connection's only writer: it writes the queue, then the newest coalesced
// device list, and ends when both are empty (the next enqueue starts another). A failed
// write or a close frame stops all writing and ends the connection.
func (c *conn) writeLoop() {
	defer c.writers.Done()
	for {
		c.outMu.Lock()
		var it outItem
		switch {
		case len(c.out) > 0:
			it = c.out[0]
			c.out[0] = outItem{}
			c.out = c.out[1:]
			if len(c.out) == 0 {
				c.out = nil // an idle connection keeps no queue
			}
		case c.changed != nil:
			it.data, c.changed = c.changed, nil
		default:
			c.writing = false
			c.outMu.Unlock()
			return
		}
		c.outMu.Unlock()
		if (it.data != nil && !c.write(it.data)) || it.close {
			c.outMu.Lock()
			c.writing, c.stopped, c.out, c.changed = false, true, nil, nil
			c.outMu.Unlock()
			if it.close {
				c.ws.Close(it.code, it.reason)
			}
			c.cancel()
			return
		}
	}
}

func (c *conn) write(data []byte) bool {
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	return c.ws.Write(ctx, websocket.MessageText, data) == nil
}

// send queues a message. A connection that cannot keep up is closed with 1013 so that it
// reconnects and resumes: nothing it must see is skipped silently.
func (c *conn) send(data []byte) {
	if c.closing.Load() {
		return
	}
	if !c.enqueue(outItem{data: data}) {
		c.srv.metrics.notice("any", "closed_slow")
		c.closeNow(websocket.StatusTryAgainLater, "too slow to keep up; reconnect and resume")
	}
}

// closeAfter queues data (may be nil) followed by a close frame with code.
func (c *conn) closeAfter(data []byte, code websocket.StatusCode, reason string) {
	if !c.closing.CompareAndSwap(false, true) {
		return
	}
	if !c.enqueue(outItem{data: data, close: true, code: code, reason: reason}) {
		go c.ws.Close(websocket.StatusTryAgainLater, "too slow to keep up; reconnect and resume")
	}
}

// closeNow closes at once, bypassing the queue.
func (c *conn) closeNow(code websocket.StatusCode, reason string) {
	c.closing.Store(true)
	go func() {
		c.ws.Close(code, reason)
		c.cancel()
	}()
}

func (c *conn) cleanup() {
	c.mu.Lock()
	sess := c.sess
	if c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Unlock()
	if sess != nil {
		c.srv.metrics.authConns.Dec()
		_ = c.srv.hub.Unsubscribe(context.Background(), userTopic(sess.UserID), c)
	}
	c.ws.CloseNow()
}

func (c *conn) reply(id, typ string, fields any) { c.send(encode(typ, id, fields)) }

func (c *conn) replyErr(id string, err error) {
	we, known := classify(err)
	if !known {
		c.srv.log.Error().Err(err).Msg("internal error on a connection")
	}
	c.send(encode("error", id, protocol.ErrorBody{Code: we.code, Message: we.msg}))
}

// handle dispatches one client message.
func (c *conn) handle(data []byte) {
	in, err := DecodeInbound(data)
	if err != nil {
		c.bad(in.ID, err)
		return
	}
	if !c.limiter.Allow() {
		c.srv.metrics.rateLimited.WithLabelValues("messages_per_connection").Inc()
		c.replyErr(in.ID, ErrRateLimited)
		c.mu.Lock()
		c.overs++
		n := c.overs
		c.mu.Unlock()
		if n > c.srv.limits.MessageBurst {
			c.closeAfter(nil, protocol.CloseRateLimited, "rate limited")
		}
		return
	}
	c.mu.Lock()
	c.overs = 0
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(c.ctx, requestDeadline)
	defer cancel()
	switch in.Type {
	case "register.start", "register.finish", "login.start", "login.finish", "session.resume":
		c.handleUnauthenticated(ctx, in)
	case "ping":
		c.reply(in.ID, "pong", nil)
	case "session.refresh", "session.logout", "sessions.list", "sessions.revoke", "sessions.revoke_others",
		"password.change.start", "password.change.finish", "activity.list", "reauth.start", "reauth.finish":
		c.handleAuthenticated(ctx, in)
	default:
		c.bad(in.ID, newWireError(protocol.CodeUnknownType, http.StatusBadRequest, "unknown message type"))
		return
	}
	c.mu.Lock()
	c.badInARow = 0
	c.mu.Unlock()
}

// bad answers an invalid message; a peer that keeps sending them is not speaking the protocol.
func (c *conn) bad(id string, err error) {
	c.replyErr(id, err)
	c.mu.Lock()
	c.badInARow++
	n := c.badInARow
	c.mu.Unlock()
	if n >= maxBadInARow {
		c.closeAfter(nil, protocol.CloseProtocolViolation, "too many invalid messages")
	}
}

func outOfOrder(msg string) error {
	return newWireError(protocol.CodeOutOfOrder, http.StatusConflict, msg)
}

func (c *conn) handleUnauthenticated(ctx context.Context, in Inbound) {
	c.mu.Lock()
	authed := c.sess != nil
	c.mu.Unlock()
	m := c.srv.mgr
	if authed {
		c.replyErr(in.ID, outOfOrder("this connection is already signed in"))
		return
	}
	switch in.Type {
	case "register.start":
		// Registration is a password exchange like login: over TLS only, by the same rule.
		if !c.tokensOK {
			c.replyErr(in.ID, errInsecure)
			return
		}
		if c.srv.limited(ctx, "registrations_per_address", "reg-addr:"+limitKey(c.ip), c.srv.limits.RegistrationsPerAddr) {
			c.replyErr(in.ID, ErrRateLimited)
			return
		}
		req, err := session.DecodeB64(in.Request)
		if err != nil {
			c.replyErr(in.ID, err)
			return
		}
		resp, reg, err := m.RegisterStart(ctx, in.Username, req)
		if err != nil {
			c.replyErr(in.ID, err)
			return
		}
		c.mu.Lock()
		c.reg = reg
		c.mu.Unlock()
		c.reply(in.ID, "register.challenge", map[string]string{"response": session.EncodeB64(resp)})
	case "register.finish":
		c.mu.Lock()
		reg := c.reg
		c.mu.Unlock()
		if reg == nil {
			c.replyErr(in.ID, outOfOrder("register.finish must follow register.start"))
			return
		}
		rec, err := session.DecodeB64(in.Record)
		if err != nil {
			c.replyErr(in.ID, err)
			return
		}
		uid, err := m.RegisterFinish(ctx, reg, rec)
		if errors.Is(err, session.ErrBadInput) {
			c.replyErr(in.ID, err) // the client may retry finish with a valid record
			return
		}
		c.mu.Lock()
		c.reg = nil
		c.mu.Unlock()
		if err != nil {
			c.replyErr(in.ID, err)
			return
		}
		c.reply(in.ID, "register.ok", map[string]string{"user_id": uid})
	case "login.start":
		if !c.tokensOK {
			c.replyErr(in.ID, errInsecure)
			return
		}
		ke1, err := session.DecodeB64(in.KE1)
		if err != nil {
			c.replyErr(in.ID, err)
			return
		}
		if err := session.CheckLabel(in.Device); err != nil {
			c.replyErr(in.ID, err)
			return
		}
		if c.srv.limited(ctx, "logins_per_address", "login-addr:"+limitKey(c.ip), c.srv.limits.LoginsPerAddress) {
			c.replyErr(in.ID, ErrRateLimited)
			return
		}
		// Every login.start counts against the username until a login.finish succeeds: wrong
		// passwords and abandoned attempts (a client that cannot open its envelope just stops)
		// alike.
		var budget loginBudget
		if name, err := session.NormalizeUsername(in.Username); err == nil {
			budget = c.srv.loginBudgetFor(name, c.ip)
			if c.srv.spend(ctx, budget) {
				c.replyErr(in.ID, ErrRateLimited)
				return
			}
		}
		ke2, l, err := m.LoginStart(ctx, in.Username, ke1)
		c.mu.Lock()
		c.login = nil // a new login.start restarts the login, even a failed one
		if err == nil {
			c.login = l
			c.loginBudget = budget
		}
		c.mu.Unlock()
		if err != nil {
			c.srv.refundIfUnavailable(ctx, budget, err)
			c.replyErr(in.ID, err)
			return
		}
		c.deviceLabel(in.Device)
		c.reply(in.ID, "login.challenge", map[string]string{"ke2": session.EncodeB64(ke2)})
	case "login.finish":
		c.mu.Lock()
		l := c.login
		c.login = nil
		label := c.pendingLabel
		budget := c.loginBudget
		c.mu.Unlock()
		if l == nil {
			c.replyErr(in.ID, outOfOrder("login.finish must follow login.start"))
			return
		}
		ke3, err := session.DecodeB64(in.KE3)
		if err != nil {
			c.replyErr(in.ID, err)
			return
		}
		info, token, err := m.LoginFinish(ctx, l, ke3, session.DeviceInfo{Label: label, IP: c.ip, UserAgent: c.userAgent})
		if err != nil {
			c.srv.refundIfUnavailable(ctx, budget, err)
			c.replyErr(in.ID, err)
			return
		}
		c.srv.refund(ctx, budget)
		s, err := m.Check(ctx, info.ID)
		if errors.Is(err, session.ErrUnavailable) {
			// The session is stored and its token minted; only the re-read failed. Answering
			// unavailable would leave a session nobody holds the token of: sign the connection in
			// with what the login returned (every later message re-checks the store).
			s, err = session.Session{ID: info.ID, UserID: info.UserID, VaultID: info.VaultID, CreatedAt: info.CreatedAt,
				LastSeenAt: info.LastSeenAt, IdleExpiresAt: info.IdleExpiresAt, ExpiresAt: info.ExpiresAt}, nil
		}
		if err != nil {
			c.replyErr(in.ID, err)
			return
		}
		c.authenticate(s)
		c.mu.Lock()
		c.recentAuth, c.recentCred = m.Now(), l.CredVersion()
		c.mu.Unlock()
		c.reply(in.ID, "login.ok", map[string]any{"session": sessionObject(info, token)})
		// The device list notice of this login was published before this connection joined
		// the user's topic; it is the one that caused it, so it gets the list too.
		if list, err := m.List(ctx, s.UserID); err == nil {
			c.send(encode("notice.sessions_changed", "", map[string]any{"sessions": deviceList(list, s.ID)}))
		}
	case "session.resume":
		if c.srv.badTokens.over(c.ip, c.srv.limits.BadTokensPerAddr) {
			c.srv.metrics.rateLimited.WithLabelValues("bad_tokens_per_address").Inc()
			c.replyErr(in.ID, ErrRateLimited)
			return
		}
		s, err := m.Validate(ctx, in.Token)
		if err != nil {
			if errors.Is(err, session.ErrInvalid) {
				c.srv.badTokens.add(c.ip)
			}
			c.replyErr(in.ID, err)
			return
		}
		// A resume proves possession over the token itself: method RESUME, path /ws. The proof
		// comes first, so that a token alone cannot trigger the fingerprint's revocation.
		if err := m.VerifyProof(s, in.Proof, "RESUME", "/ws", []byte(in.Token), c.srv.proofSeen(ctx)); err != nil {
			c.replyErr(in.ID, err)
			return
		}
		if err := m.CheckClient(ctx, s, session.Client{IP: c.ip, UserAgent: c.userAgent}); err != nil {
			c.replyErr(in.ID, err)
			return
		}
		s = m.Touch(s)
		c.authenticate(s)
		c.reply(in.ID, "session.ok", map[string]any{"session": sessionObject(m.Info(s), "")})
	}
}

// deviceLabel remembers the label for the login in progress: the client's, else one derived
// from the User-Agent.
func (c *conn) deviceLabel(given string) {
	label := strings.TrimSpace(given)
	if label == "" {
		label = labelFromUserAgent(c.userAgent)
	}
	c.mu.Lock()
	c.pendingLabel = label
	c.mu.Unlock()
}

// authenticate binds the connection to session s: it joins the user's topic and starts the
// lifecycle timer.
func (c *conn) authenticate(s session.Session) {
	if err := c.srv.hub.Subscribe(c.ctx, userTopic(s.UserID), c); err != nil {
		c.srv.log.Warn().Err(err).Msg("hub subscribe failed; notices for this device rely on validation")
	}
	c.srv.metrics.authConns.Inc()
	c.mu.Lock()
	c.sess = &s
	c.reg, c.login = nil, nil
	c.timer = time.AfterFunc(time.Hour, c.onTimer)
	c.scheduleLocked()
	c.mu.Unlock()
}

func (c *conn) handleAuthenticated(ctx context.Context, in Inbound) {
	c.mu.Lock()
	cur := c.sess
	c.mu.Unlock()
	if cur == nil {
		c.replyErr(in.ID, newWireError(protocol.CodeUnauthenticated, http.StatusUnauthorized, "sign in or resume first"))
		return
	}
	m := c.srv.mgr
	s, err := m.Check(ctx, cur.ID)
	if err != nil {
		if errors.Is(err, session.ErrInvalid) {
			c.replyErr(in.ID, err)
			c.ended(s)
			return
		}
		c.replyErr(in.ID, err)
		return
	}
	s = m.Touch(s)
	c.mu.Lock()
	c.sess.IdleExpiresAt, c.sess.LastSeenAt = s.IdleExpiresAt, s.LastSeenAt
	c.scheduleLocked()
	c.mu.Unlock()

	switch in.Type {
	case "session.refresh":
		c.refresh(ctx, in, s)
	case "activity.list":
		list, err := m.Activity(ctx, s.UserID, activityLimit)
		if err != nil {
			c.replyErr(in.ID, err)
			return
		}
		c.reply(in.ID, "activity", map[string]any{"events": activityList(list, s.ID)})
	case "session.logout":
		if err := c.endSelf(func() error { return m.Logout(ctx, s) }); err != nil {
			c.replyErr(in.ID, err)
			return
		}
		c.closeAfter(encode("session.ended", in.ID, nil), websocket.StatusNormalClosure, "signed out")
	case "sessions.list":
		list, err := m.List(ctx, s.UserID)
		if err != nil {
			c.replyErr(in.ID, err)
			return
		}
		c.reply(in.ID, "sessions", map[string]any{"sessions": deviceList(list, s.ID)})
	case "sessions.revoke":
		if in.SessionID == "" {
			c.replyErr(in.ID, newWireError(protocol.CodeBadRequest, http.StatusBadRequest, "session_id is required"))
			return
		}
		if !session.ValidID(in.SessionID) {
			c.replyErr(in.ID, errNoSuchSession)
			return
		}
		var ids []string
		revoke := func() (err error) { ids, err = m.Revoke(ctx, s, in.SessionID); return err }
		if in.SessionID == s.ID {
			err = c.endSelf(revoke)
		} else {
			err = revoke()
		}
		if err != nil {
			c.replyErr(in.ID, err)
			return
		}
		msg := encode("sessions.revoked", in.ID, map[string]any{"session_ids": ids})
		if in.SessionID == s.ID {
			c.closeAfter(msg, websocket.StatusNormalClosure, "signed out")
			return
		}
		c.send(msg)
	case "sessions.revoke_others":
		ids, err := m.RevokeOthers(ctx, s)
		if err != nil {
			c.replyErr(in.ID, err)
			return
		}
		c.reply(in.ID, "sessions.revoked", map[string]any{"session_ids": nonNil(ids)})
	case "reauth.start":
		ke1, err := session.DecodeB64(in.KE1)
		if err != nil {
			c.replyErr(in.ID, err)
			return
		}
		// The same budget as a login of the user from this address: a stolen token is no
		// extra guessing channel.
		name, err := m.Username(ctx, s.UserID)
		if err != nil {
			c.replyErr(in.ID, err)
			return
		}
		budget := c.srv.loginBudgetFor(name, c.ip)
		if c.srv.spend(ctx, budget) {
			c.replyErr(in.ID, ErrRateLimited)
			return
		}
		ke2, l, err := m.ReauthStart(ctx, s, ke1)
		c.mu.Lock()
		c.reauth, c.loginBudget = l, budget
		c.mu.Unlock()
		if err != nil {
			c.srv.refundIfUnavailable(ctx, budget, err)
			c.replyErr(in.ID, err)
			return
		}
		c.reply(in.ID, "reauth.challenge", map[string]string{"ke2": session.EncodeB64(ke2)})
	case "reauth.finish":
		c.mu.Lock()
		l, budget := c.reauth, c.loginBudget
		c.reauth = nil
		c.mu.Unlock()
		if l == nil {
			c.replyErr(in.ID, outOfOrder("reauth.finish must follow reauth.start"))
			return
		}
		ke3, err := session.DecodeB64(in.KE3)
		if err != nil {
			c.replyErr(in.ID, err)
			return
		}
		if err := m.ReauthFinish(ctx, l, ke3); err != nil {
			c.srv.refundIfUnavailable(ctx, budget, err)
			c.replyErr(in.ID, err)
			return
		}
		c.srv.refund(ctx, budget)
		c.mu.Lock()
		c.recentAuth, c.recentCred = m.Now(), l.CredVersion()
		c.mu.Unlock()
		c.reply(in.ID, "reauth.ok", nil)
	case "password.change.start":
		c.mu.Lock()
		fresh := !c.recentAuth.IsZero() && m.Now().Sub(c.recentAuth) < session.ReauthWindow
		c.mu.Unlock()
		if !fresh {
			c.replyErr(in.ID, session.ErrReauthRequired)
			return
		}
		req, err := session.DecodeB64(in.Request)
		if err != nil {
			c.replyErr(in.ID, err)
			return
		}
		resp, err := m.PasswordChangeStart(ctx, s, req)
		if err != nil {
			c.replyErr(in.ID, err)
			return
		}
		c.mu.Lock()
		c.pwChange = true
		c.mu.Unlock()
		c.reply(in.ID, "password.change.challenge", map[string]string{"response": session.EncodeB64(resp)})
	case "password.change.finish":
		c.mu.Lock()
		started, cred := c.pwChange, c.recentCred
		c.mu.Unlock()
		if !started {
			c.replyErr(in.ID, outOfOrder("password.change.finish must follow password.change.start"))
			return
		}
		rec, err := session.DecodeB64(in.Record)
		if err != nil {
			c.replyErr(in.ID, err)
			return
		}
		if _, err := m.PasswordChangeFinish(ctx, s, cred, rec); err != nil {
			c.replyErr(in.ID, err)
			return
		}
		c.mu.Lock()
		// The connection proved the password it just set: its proof is for the new version.
		c.pwChange, c.recentCred = false, cred+1
		c.mu.Unlock()
		c.reply(in.ID, "password.change.ok", nil)
	}
}

// endSelf runs end, a logout of the connection's own session. The revocation it publishes
// reaches this connection too (synchronously on a single node); it must not close it with
// notice.revoked and 4403, since this connection ends with its reply and 1000. Should end fail,
// a revocation of the session that arrived meanwhile is delivered after all.
func (c *conn) endSelf(end func() error) error {
	c.mu.Lock()
	c.endingSelf = true
	c.mu.Unlock()
	err := end()
	if err != nil {
		c.mu.Lock()
		c.endingSelf = false
		held := c.heldReason
		c.heldReason = ""
		c.mu.Unlock()
		if held != "" {
			c.revokedNotice(held)
		}
	}
	return err
}

func (c *conn) refresh(ctx context.Context, in Inbound, s session.Session) {
	if !c.tokensOK {
		c.replyErr(in.ID, errInsecure)
		return
	}
	info, token, err := c.srv.mgr.RefreshSession(ctx, s)
	if err != nil {
		c.replyErr(in.ID, err)
		return
	}
	c.refreshed(in.ID, info, token)
}

func (c *conn) refreshed(id string, info session.Info, token string) {
	c.mu.Lock()
	if c.sess != nil && info.IdleExpiresAt.After(c.sess.IdleExpiresAt) {
		c.sess.IdleExpiresAt = info.IdleExpiresAt
	}
	c.scheduleLocked()
	c.mu.Unlock()
	c.reply(id, "session.refreshed", map[string]string{
		"token": token, "idle_expires_at": wireTime(info.IdleExpiresAt), "expires_at": wireTime(info.ExpiresAt),
	})
}

// ended tells the device why its session is over and closes the connection.
func (c *conn) ended(s session.Session) {
	if s.ID == "" {
		// The row is gone: swept after its end, or its user deleted.
		c.revokedNotice(session.ReasonAdmin)
		return
	}
	now := c.srv.mgr.Now()
	switch {
	case !s.RevokedAt.IsZero():
		c.revokedNotice(s.RevokeReason)
	case !now.Before(s.ExpiresAt):
		c.expiredNotice(s, session.ReasonAbsolute)
	default:
		c.expiredNotice(s, session.ReasonIdle)
	}
}

func (c *conn) revokedNotice(reason string) {
	c.srv.metrics.notice("notice.revoked", "sent")
	c.closeAfter(encode("notice.revoked", "", map[string]string{"reason": reason}), protocol.CloseRevoked, "session revoked")
}

func (c *conn) expiredNotice(s session.Session, reason string) {
	c.srv.metrics.notice("notice.expired", "sent")
	c.srv.mgr.RecordExpiry(c.ctx, s, reason)
	c.closeAfter(encode("notice.expired", "", map[string]string{"reason": reason}), protocol.CloseExpired, "session expired")
}

// scheduleLocked sets the lifecycle timer to the next moment something is due. c.mu is held.
func (c *conn) scheduleLocked() {
	if c.sess == nil || c.timer == nil {
		return
	}
	s := c.sess
	lead := c.srv.mgr.Policy().RefreshLead
	next := s.IdleExpiresAt
	if s.ExpiresAt.Before(next) {
		next = s.ExpiresAt
	}
	if s.IdleExpiresAt.Before(s.ExpiresAt) && !c.promptedIdle.Equal(s.IdleExpiresAt) {
		if t := s.IdleExpiresAt.Add(-lead); t.Before(next) {
			next = t
		}
	}
	if !c.promptedReauth {
		if t := s.ExpiresAt.Add(-lead); t.Before(next) {
			next = t
		}
	}
	c.timer.Reset(max(next.Sub(c.srv.mgr.Now()), 0))
}

// onTimer runs when a deadline or prompt is due. It re-reads the session first: activity on
// another connection or node may have moved the idle deadline.
func (c *conn) onTimer() {
	c.mu.Lock()
	cur := c.sess
	c.mu.Unlock()
	if cur == nil || c.closing.Load() {
		return
	}
	m := c.srv.mgr
	s, err := m.Check(c.ctx, cur.ID)
	if err != nil && !errors.Is(err, session.ErrInvalid) {
		// The store is unreachable: try again shortly rather than end a session on a guess.
		c.mu.Lock()
		c.timer.Reset(time.Second)
		c.mu.Unlock()
		return
	}
	if err != nil {
		c.ended(s)
		return
	}
	now := m.Now()
	lead := m.Policy().RefreshLead
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.IdleExpiresAt.After(c.sess.IdleExpiresAt) {
		c.sess.IdleExpiresAt = s.IdleExpiresAt
	}
	idle, abs := c.sess.IdleExpiresAt, c.sess.ExpiresAt
	if idle.Before(abs) && !now.Before(idle.Add(-lead)) && !c.promptedIdle.Equal(idle) {
		c.promptedIdle = idle
		c.srv.metrics.notice("notice.refresh_due", "sent")
		c.send(encode("notice.refresh_due", "", map[string]any{"idle_expires_at": wireTime(idle), "in_ms": max(idle.Sub(now).Milliseconds(), 0)}))
	}
	if !now.Before(abs.Add(-lead)) && !c.promptedReauth {
		c.promptedReauth = true
		c.srv.metrics.notice("notice.reauth_due", "sent")
		c.send(encode("notice.reauth_due", "", map[string]any{"expires_at": wireTime(abs), "in_ms": max(abs.Sub(now).Milliseconds(), 0)}))
	}
	c.scheduleLocked()
}

// Deliver receives a hub message for the user's topic. It never blocks.
func (c *conn) Deliver(_ string, payload []byte) {
	var ev event
	if err := json.Unmarshal(payload, &ev); err != nil {
		return
	}
	c.mu.Lock()
	cur := c.sess
	c.mu.Unlock()
	if cur == nil {
		return
	}
	switch ev.Kind {
	case eventRevoked:
		for _, id := range ev.IDs {
			if id == cur.ID {
				c.mu.Lock()
				if c.endingSelf {
					c.heldReason = ev.Reason
					c.mu.Unlock()
					return
				}
				c.mu.Unlock()
				c.revokedNotice(ev.Reason)
				return
			}
		}
	case eventChanged:
		list := make([]protocol.Device, len(ev.Sessions))
		copy(list, ev.Sessions)
		for i := range list {
			list[i].Current = list[i].ID == cur.ID
		}
		msg := encode("notice.sessions_changed", "", map[string]any{"sessions": list})
		if c.closing.Load() {
			return
		}
		c.outMu.Lock()
		switch {
		case c.stopped:
		case len(c.out) < outQueueLen:
			c.out = append(c.out, outItem{data: msg})
			c.startWriterLocked()
			c.srv.metrics.notice("notice.sessions_changed", "sent")
		default:
			// The list supersedes older ones: keep only the newest for when the writer catches
			// up (a full queue means a writer runs).
			c.srv.metrics.notice("notice.sessions_changed", "coalesced")
			c.changed = msg
		}
		c.outMu.Unlock()
	}
}

func nonNil(ids []string) []string {
	if ids == nil {
		return []string{}
	}
	return ids
}
