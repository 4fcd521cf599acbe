package server

import (
	"errors"
	"time"

	"github.com/sessiond/sessiond/protocol"
	"github.com/sessiond/sessiond/session"
)

// lifecycle.go: a signed-in connection follows its session — the timer that prompts the device
// before its deadlines, and the endings (expired, revoked, logged out) told to the device.

// lifecycle is the timer state of a signed-in connection.
type lifecycle struct {
	timer          *time.Timer
	promptedIdle   time.Time // the idle deadline notice.refresh_due was sent for
	promptedReauth bool      // notice.reauth_due was sent
}

// authenticate binds the connection to session s, with proof as its proof of the password (the
// zero Proof after a resume): it joins the user's topic and starts the lifecycle timer.
func (c *conn) authenticate(s session.Session, proof session.Proof) {
	if err := c.srv.hub.Subscribe(c.ctx, userTopic(s.UserID), c); err != nil {
		c.log.Warn().Err(err).Msg("hub subscribe failed; notices for this device rely on validation")
	}
	c.srv.metrics.authConns.Inc()
	c.mu.Lock()
	c.st.sess = &s
	c.st.register, c.st.login, c.st.proof = nil, nil, proof
	if c.st.life.timer == nil {
		c.st.life.timer = time.AfterFunc(time.Hour, c.onTimer)
	}
	c.scheduleLocked()
	c.mu.Unlock()
}

// endSelf runs end, a logout of the connection's own session. The revocation it publishes
// reaches this connection too (synchronously on a single node); it must not close it with
// notice.revoked and 4403, since this connection ends with its reply and 1000. Should end fail,
// a revocation of the session that arrived meanwhile is delivered after all.
func (c *conn) endSelf(end func() error) error {
	c.mu.Lock()
	c.st.ending.self = true
	c.mu.Unlock()
	err := end()
	if err != nil {
		c.mu.Lock()
		held := c.st.ending.heldReason
		c.st.ending = ending{}
		c.mu.Unlock()
		if held != "" {
			c.revokedNotice(held)
		}
	}
	return err
}

func (c *conn) refreshed(id string, info session.Info, token string) {
	c.mu.Lock()
	if c.st.sess != nil && info.IdleExpiresAt.After(c.st.sess.IdleExpiresAt) {
		c.st.sess.IdleExpiresAt = info.IdleExpiresAt
	}
	c.scheduleLocked()
	c.mu.Unlock()
	c.reply(id, protocol.TypeSessionRefreshed, protocol.Refreshed{
		Token: token, IdleExpiresAt: wireTime(info.IdleExpiresAt), ExpiresAt: wireTime(info.ExpiresAt),
	})
}

// ended tells the device why its session is over and closes the connection.
func (c *conn) ended(s session.Session) {
	reason, revoked := session.EndReason(s, c.srv.mgr.Now())
	if revoked {
		c.revokedNotice(reason)
		return
	}
	c.expiredNotice(s, reason)
}

func (c *conn) revokedNotice(reason string) { c.revokedNoticeAt(reason, 0) }

// revokedNoticeAt sends notice.revoked and closes; at (unix ns, 0: unknown) is when the
// revocation was published, for sessiond_revocation_notice_seconds.
func (c *conn) revokedNoticeAt(reason string, at int64) {
	c.srv.metrics.notice(protocol.NoticeRevoked, "sent")
	c.closeAfter(encode(protocol.NoticeRevoked, "", map[string]string{"reason": reason}), protocol.CloseRevoked, "session revoked", at)
}

func (c *conn) expiredNotice(s session.Session, reason string) {
	c.srv.metrics.notice(protocol.NoticeExpired, "sent")
	c.srv.mgr.RecordExpiry(c.ctx, s, reason)
	c.closeAfter(encode(protocol.NoticeExpired, "", map[string]string{"reason": reason}), protocol.CloseExpired, "session expired", 0)
}

// scheduleLocked sets the lifecycle timer to the next moment something is due. c.mu is held.
func (c *conn) scheduleLocked() {
	if c.st.sess == nil || c.st.life.timer == nil {
		return
	}
	s := c.st.sess
	lead := c.srv.mgr.RefreshLead()
	next := s.IdleExpiresAt
	if s.ExpiresAt.Before(next) {
		next = s.ExpiresAt
	}
	if s.IdleExpiresAt.Before(s.ExpiresAt) && !c.st.life.promptedIdle.Equal(s.IdleExpiresAt) {
		if t := s.IdleExpiresAt.Add(-lead); t.Before(next) {
			next = t
		}
	}
	if !c.st.life.promptedReauth {
		if t := s.ExpiresAt.Add(-lead); t.Before(next) {
			next = t
		}
	}
	c.st.life.timer.Reset(max(next.Sub(c.srv.mgr.Now()), 0))
}

// onTimer runs when a deadline or prompt is due. It re-reads the session first: activity on
// another connection or node may have moved the idle deadline.
func (c *conn) onTimer() {
	c.mu.Lock()
	cur := c.st.sess
	c.mu.Unlock()
	if c.closing.Load() {
		return
	}
	if cur == nil { // the handshake deadline: no login or resume yet
		c.closeAfter(nil, protocol.CloseHandshakeTimeout, "no login or resume within the handshake deadline", 0)
		return
	}
	m := c.srv.mgr
	s, err := m.Check(c.ctx, cur.ID)
	if err != nil && !errors.Is(err, session.ErrInvalid) {
		// The store is unreachable: try again shortly rather than end a session on a guess.
		c.mu.Lock()
		c.st.life.timer.Reset(time.Second)
		c.mu.Unlock()
		return
	}
	if err != nil {
		c.ended(s)
		return
	}
	now := m.Now()
	lead := m.RefreshLead()
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.IdleExpiresAt.After(c.st.sess.IdleExpiresAt) {
		c.st.sess.IdleExpiresAt = s.IdleExpiresAt
	}
	idle, abs := c.st.sess.IdleExpiresAt, c.st.sess.ExpiresAt
	if idle.Before(abs) && !now.Before(idle.Add(-lead)) && !c.st.life.promptedIdle.Equal(idle) {
		c.st.life.promptedIdle = idle
		c.srv.metrics.notice(protocol.NoticeRefreshDue, "sent")
		c.send(encode(protocol.NoticeRefreshDue, "", map[string]any{"idle_expires_at": wireTime(idle), "in_ms": max(idle.Sub(now).Milliseconds(), 0)}))
	}
	if !now.Before(abs.Add(-lead)) && !c.st.life.promptedReauth {
		c.st.life.promptedReauth = true
		c.srv.metrics.notice(protocol.NoticeReauthDue, "sent")
		c.send(encode(protocol.NoticeReauthDue, "", map[string]any{"expires_at": wireTime(abs), "in_ms": max(abs.Sub(now).Milliseconds(), 0)}))
	}
	c.scheduleLocked()
}
