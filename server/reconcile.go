package server

import (
	"context"
	"errors"

	"github.com/sessiond/sessiond/session"
)

// Reconcile re-checks every signed-in connection of this node against the store and ends
// those whose session was revoked or expired. Notices are delivered at most once, so after the
// cross-node link was down (messages published meanwhile are lost) this is what closes a
// device that was revoked during the gap. It returns how many connections it ended.
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
	ended := 0
	for _, c := range conns {
		cur := c.current()
		if cur == nil || c.closing.Load() {
			continue
		}
		sess, err := s.mgr.Check(ctx, cur.ID)
		if errors.Is(err, session.ErrInvalid) {
			c.ended(sess)
			ended++
		}
	}
	if ended > 0 {
		s.log.Info().Int("ended", ended).Int("checked", len(ids)).Msg("reconciled live connections with the store")
	}
	return ended
}

// current returns the connection's session, nil before sign-in.
func (c *conn) current() *session.Session {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st.sess
}
