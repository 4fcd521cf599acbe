package server

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/sessiond/sessiond/protocol"
	"github.com/sessiond/sessiond/session"
)

// commands.go: what each client message does. One table names every message type, the state
// the connection must be in and the handler; one dispatcher decodes, rate-limits, checks the
// state (and, for a signed-in connection, the session itself), runs the handler and answers
// every error the same way.

// need is the connection state a command requires.
type need int

const (
	anyState  need = iota // ping
	signedOut             // register, login, resume
	signedIn              // everything about a session
)

// handler runs one command. s is the connection's session, checked and touched, for signedIn
// commands (the zero Session otherwise). An error is answered by the dispatcher.
type handler func(c *conn, ctx context.Context, in Inbound, s session.Session) error

type command struct {
	need  need
	limit *addrLimit // spent before the handler runs; nil: none
	run   handler
}

// addrLimit is a per-client-address budget a command spends (IPv6 by /64).
type addrLimit struct {
	name, prefix string
	max          func(Limits) int
}

var (
	registrationsPerAddr = &addrLimit{"registrations_per_address", "reg-addr:", func(l Limits) int { return l.RegistrationsPerAddr }}
	loginsPerAddr        = &addrLimit{"logins_per_address", "login-addr:", func(l Limits) int { return l.LoginsPerAddress }}
)

// commands is the protocol's message table.
var commands = map[string]command{
	protocol.TypePing:                 {anyState, nil, (*conn).ping},
	protocol.TypeRegisterStart:        {signedOut, registrationsPerAddr, (*conn).registerStart},
	protocol.TypeRegisterFinish:       {signedOut, nil, (*conn).registerFinish},
	protocol.TypeLoginStart:           {signedOut, loginsPerAddr, (*conn).loginStart},
	protocol.TypeLoginFinish:          {signedOut, nil, (*conn).loginFinish},
	protocol.TypeSessionResume:        {signedOut, nil, (*conn).resume},
	protocol.TypeSessionRefresh:       {signedIn, nil, (*conn).refresh},
	protocol.TypeSessionLogout:        {signedIn, nil, (*conn).logout},
	protocol.TypeSessionsList:         {signedIn, nil, (*conn).listSessions},
	protocol.TypeSessionsRevoke:       {signedIn, nil, (*conn).revokeSession},
	protocol.TypeSessionsRevokeOthers: {signedIn, nil, (*conn).revokeOthers},
	protocol.TypeActivityList:         {signedIn, nil, (*conn).activity},
	protocol.TypeReauthStart:          {signedIn, nil, (*conn).reauthStart},
	protocol.TypeReauthFinish:         {signedIn, nil, (*conn).reauthFinish},
	protocol.TypePasswordChangeStart:  {signedIn, nil, (*conn).passwordChangeStart},
	protocol.TypePasswordChangeFinish: {signedIn, nil, (*conn).passwordChangeFinish},
}

var (
	errUnknownType     = newWireError(protocol.CodeUnknownType, http.StatusBadRequest, "unknown message type")
	errSignedIn        = outOfOrder("this connection is already signed in")
	errNotSignedIn     = newWireError(protocol.CodeUnauthenticated, http.StatusUnauthorized, "sign in or resume first")
	errSessionRequired = newWireError(protocol.CodeBadRequest, http.StatusBadRequest, "session_id is required")
)

func outOfOrder(msg string) error {
	return newWireError(protocol.CodeOutOfOrder, http.StatusConflict, msg)
}

// handle dispatches one client message.
func (c *conn) handle(data []byte) {
	in, err := DecodeInbound(data)
	if err != nil {
		c.bad(in.ID, err)
		return
	}
	if !c.allow(in.ID) {
		return
	}
	cmd, ok := commands[in.Type]
	if !ok {
		c.bad(in.ID, errUnknownType)
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, requestDeadline)
	defer cancel()
	start := time.Now()
	err = c.dispatch(ctx, cmd, in)
	c.srv.metrics.command(in.Type, time.Since(start))
	if err != nil {
		c.replyErr(in.ID, err)
	}
	c.mu.Lock()
	c.st.badInARow = 0
	c.mu.Unlock()
}

// dispatch checks the state cmd needs and runs it.
func (c *conn) dispatch(ctx context.Context, cmd command, in Inbound) error {
	c.mu.Lock()
	cur := c.st.sess
	c.mu.Unlock()
	switch {
	case cmd.need == signedOut && cur != nil:
		return errSignedIn
	case cmd.need == signedIn && cur == nil:
		return errNotSignedIn
	case cmd.limit != nil && c.srv.limited(ctx, cmd.limit.name, cmd.limit.prefix+limitKey(c.ip), cmd.limit.max(c.srv.limits)):
		return ErrRateLimited
	case cmd.need != signedIn:
		return cmd.run(c, ctx, in, session.Session{})
	}
	s, err := c.checkSession(ctx, cur.ID)
	if errors.Is(err, session.ErrInvalid) {
		// The session ended: the answer, then the notice saying why and the close.
		c.replyErr(in.ID, err)
		c.ended(s)
		return nil
	}
	if err != nil {
		return err
	}
	return cmd.run(c, ctx, in, s)
}

// checkSession re-reads the connection's session before a command and records the activity.
// A session that has ended is ErrInvalid, with the row as the store has it.
func (c *conn) checkSession(ctx context.Context, id string) (session.Session, error) {
	m := c.srv.mgr
	s, err := m.Check(ctx, id)
	if err != nil {
		return s, err
	}
	s = m.Touch(s)
	c.mu.Lock()
	c.st.sess.IdleExpiresAt, c.st.sess.LastSeenAt = s.IdleExpiresAt, s.LastSeenAt
	c.scheduleLocked()
	c.mu.Unlock()
	return s, nil
}

// allow applies the per-connection message rate; a peer that keeps going over it is closed.
func (c *conn) allow(id string) bool {
	if c.limiter.Allow() {
		c.mu.Lock()
		c.st.overs = 0
		c.mu.Unlock()
		return true
	}
	c.srv.metrics.rateLimited.WithLabelValues("messages_per_connection").Inc()
	c.replyErr(id, ErrRateLimited)
	c.mu.Lock()
	c.st.overs++
	n := c.st.overs
	c.mu.Unlock()
	if n > c.srv.limits.MessageBurst {
		c.closeAfter(nil, protocol.CloseRateLimited, "rate limited", 0)
	}
	return false
}

// bad answers an invalid message; a peer that keeps sending them is not speaking the protocol.
func (c *conn) bad(id string, err error) {
	c.replyErr(id, err)
	c.mu.Lock()
	c.st.badInARow++
	n := c.st.badInARow
	c.mu.Unlock()
	if n >= maxBadInARow {
		c.closeAfter(nil, protocol.CloseProtocolViolation, "too many invalid messages", 0)
	}
}

func (c *conn) ping(_ context.Context, in Inbound, _ session.Session) error {
	c.reply(in.ID, protocol.TypePong, nil)
	return nil
}
