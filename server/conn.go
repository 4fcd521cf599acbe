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
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/sessiond/sessiond/protocol"
	"github.com/sessiond/sessiond/session"
)

// conn.go: one device's WebSocket — accept, the read loop, the write queue with its coalesced
// device list, and the close paths. What a message does is in commands.go; the session's
// deadlines and endings are in lifecycle.go.

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
	data      []byte
	close     bool
	code      websocket.StatusCode
	reason    string
	revokedAt int64 // a revocation notice: when the revoking node published it (unix ns)
}

// conn is one device connection.
type conn struct {
	srv       *Server
	log       zerolog.Logger // the server's, with the upgrade request's id
	ws        *websocket.Conn
	ctx       context.Context
	ip        string
	userAgent string
	tokensOK  bool // tokens may be issued on this connection (TLS, or insecure allowed)

	limiter *rate.Limiter // client messages

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

	mu sync.Mutex // guards st
	st connState
}

// connState is what a connection knows of its device, guarded by conn.mu.
type connState struct {
	sess      *session.Session // nil until a login or resume
	register  *session.Registration
	login     *loginFlow
	reauth    *reauthFlow
	pwChange  bool          // password.change.start answered
	proof     session.Proof // the last proof of the password on this connection
	life      lifecycle
	ending    ending
	overs     int // messages refused by the limiter in a row
	badInARow int // invalid messages in a row
}

// loginFlow is a login between login.start and login.finish.
type loginFlow struct {
	login  *session.Login
	label  string      // the device label the session will get
	budget loginBudget // what login.start spent
}

// reauthFlow is a re-authentication between reauth.start and reauth.finish.
type reauthFlow struct {
	login  *session.Login
	budget loginBudget
}

// ending is a logout of the connection's own session under way (see endSelf).
type ending struct {
	self       bool
	heldReason string // a revocation of the own session that arrived meanwhile
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
	// The connection's context is not the request's (which would keep net/http's contexts of
	// the upgrade request alive) and has no cancellation: a cancelable one would keep, for as
	// long as the device stays connected, the bookkeeping of every timeout derived from it
	// (and the library's per-read callback). A connection ends by closing its WebSocket,
	// which ends the read and every write; work already under way finishes within its own
	// deadline.
	ctx := context.Background()
	c := &conn{
		srv: s, log: s.requestLogger(w), ws: ws, ctx: ctx, ip: ip, userAgent: r.UserAgent(), tokensOK: s.tokensAllowed(r),
		limiter: rate.NewLimiter(rate.Limit(s.limits.MessagesPerSecond), s.limits.MessageBurst),
	}
	if !s.track(c) {
		ws.Close(websocket.StatusGoingAway, "server shutting down")
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
	// One timer per connection: the handshake deadline first, then the session's prompts
	// and deadlines (lifecycle.go).
	c.mu.Lock()
	c.st.life.timer = time.AfterFunc(s.cfg.HandshakeTimeout, c.onTimer)
	c.mu.Unlock()
	c.readLoop()
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
				c.log.Error().Str("panic", fmt.Sprint(p)).Str("stack", string(debug.Stack())).Msg("panic handling a message; closing the connection")
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
		ok := it.data == nil || c.write(it.data)
		if ok && it.revokedAt != 0 {
			c.srv.metrics.revocation.Observe(time.Since(time.Unix(0, it.revokedAt)).Seconds())
		}
		if !ok || it.close {
			c.outMu.Lock()
			c.writing, c.stopped, c.out, c.changed = false, true, nil, nil
			c.outMu.Unlock()
			if it.close {
				c.ws.Close(it.code, it.reason)
			} else {
				c.ws.CloseNow() // the write failed: end the read too
			}
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
func (c *conn) closeAfter(data []byte, code websocket.StatusCode, reason string, revokedAt int64) {
	if !c.closing.CompareAndSwap(false, true) {
		return
	}
	if !c.enqueue(outItem{data: data, close: true, code: code, reason: reason, revokedAt: revokedAt}) {
		go c.ws.Close(websocket.StatusTryAgainLater, "too slow to keep up; reconnect and resume")
	}
}

// closeNow closes at once, bypassing the queue.
func (c *conn) closeNow(code websocket.StatusCode, reason string) {
	c.closing.Store(true)
	go func() {
		c.ws.Close(code, reason)
	}()
}

func (c *conn) cleanup() {
	c.mu.Lock()
	sess := c.st.sess
	if c.st.life.timer != nil {
		c.st.life.timer.Stop()
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
		c.log.Error().Err(err).Msg("internal error on a connection")
	}
	c.srv.metrics.errorAnswer(we.code)
	body := protocol.ErrorBody{Code: we.code, Message: we.msg}
	var ended *session.EndedError
	if errors.As(err, &ended) {
		body.Reason = ended.Reason
	}
	c.send(encode("error", id, body))
}

// Deliver receives a hub message for the user's topic. It never blocks.
func (c *conn) Deliver(_ string, payload []byte) {
	var ev event
	if err := json.Unmarshal(payload, &ev); err != nil {
		return
	}
	c.mu.Lock()
	cur := c.st.sess
	c.mu.Unlock()
	if cur == nil {
		return
	}
	switch ev.Kind {
	case eventRevoked:
		for _, id := range ev.IDs {
			if id == cur.ID {
				c.mu.Lock()
				if c.st.ending.self {
					c.st.ending.heldReason = ev.Reason
					c.mu.Unlock()
					return
				}
				c.mu.Unlock()
				c.revokedNoticeAt(ev.Reason, ev.At)
				return
			}
		}
	case eventChanged:
		c.deliverChanged(ev.Sessions, cur.ID)
	}
}

// deliverChanged queues a device list; with the queue full it keeps only the newest list, which
// supersedes the older ones, for when the writer catches up.
func (c *conn) deliverChanged(sessions []protocol.Device, currentID string) {
	list := make([]protocol.Device, len(sessions))
	copy(list, sessions)
	for i := range list {
		list[i].Current = list[i].ID == currentID
	}
	msg := encode(protocol.NoticeSessionsChanged, "", map[string]any{"sessions": list})
	if c.closing.Load() {
		return
	}
	c.outMu.Lock()
	defer c.outMu.Unlock()
	switch {
	case c.stopped:
	case len(c.out) < outQueueLen:
		c.out = append(c.out, outItem{data: msg})
		c.startWriterLocked()
		c.srv.metrics.notice(protocol.NoticeSessionsChanged, "sent")
	default:
		// A full queue means a writer runs: it writes this list after the queue.
		c.srv.metrics.notice(protocol.NoticeSessionsChanged, "coalesced")
		c.changed = msg
	}
}

func nonNil(ids []string) []string {
	if ids == nil {
		return []string{}
	}
	return ids
}
