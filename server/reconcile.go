package server

import (
	"context"
	"errors"
	"time"

	"github.com/sessiond/sessiond/session"
)

// reconcileRetry bounds the wait between rounds of a Reconcile whose store did not answer.
var reconcileRetry = struct{ first, max time.Duration }{100 * time.Millisecond, 5 * time.Second}

// Reconcile re-checks every signed-in connection of this node against the store and ends
// those whose session was revoked or expired. Notices are delivered at most once, so after the
// cross-node link was down (messages published meanwhile are lost) this is what closes a
// device that was revoked during the gap. A connection the store could not answer for (it is
// restarting, say: the link and the store often fail together) is checked again, with
// back-off, until it is or ctx ends; its cached validation is dropped meanwhile, so its token
// is checked against the store on every use. It returns how many connections it ended.
func (s *Server) Reconcile(ctx context.Context) int {
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	ids := make([]string, 0, len(conns))
	for _, c := range conns {
		if cur := c.current(); cur != nil {
			ids = append(ids, cur.ID)
		}
	}
	// Cached validations may be as stale as the notices we missed.
	s.mgr.Invalidate(ids...)
	checked, ended := len(ids), 0
	for wait := reconcileRetry.first; ; wait = min(2*wait, reconcileRetry.max) {
		var again []*conn
		for _, c := range conns {
			cur := c.current()
			if cur == nil || c.closing.Load() {
				continue
			}
			sess, err := s.mgr.Check(ctx, cur.ID)
			switch {
			case errors.Is(err, session.ErrInvalid):
				c.ended(sess)
				ended++
			case err != nil:
				again = append(again, c)
			}
		}
		if len(again) == 0 || ctx.Err() != nil {
			if len(again) > 0 {
				s.log.Warn().Int("unchecked", len(again)).Msg("gave up re-checking live connections: the store did not answer")
			}
			break
		}
		s.log.Warn().Int("unchecked", len(again)).Dur("retry_in", wait).Msg("the store did not answer the re-check of live connections; trying again")
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		conns = again
	}
	if ended > 0 {
		s.log.Info().Int("ended", ended).Int("checked", checked).Msg("reconciled live connections with the store")
	}
	return ended
}

// current returns the connection's session, nil before sign-in.
func (c *conn) current() *session.Session {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st.sess
}
