package server

import (
	"context"

	"github.com/coder/websocket"

	"github.com/sessiond/sessiond/protocol"
	"github.com/sessiond/sessiond/session"
)

// account.go: the commands of a signed-in connection — the session itself, the user's devices,
// the activity list, re-authentication and the password change.

func (c *conn) refresh(ctx context.Context, in Inbound, s session.Session) error {
	if !c.tokensOK {
		return errInsecure
	}
	info, token, err := c.srv.mgr.RefreshSession(ctx, s)
	if err != nil {
		return err
	}
	c.refreshed(in.ID, info, token)
	return nil
}

func (c *conn) logout(ctx context.Context, in Inbound, s session.Session) error {
	if err := c.endSelf(func() error { return c.srv.mgr.Logout(ctx, s) }); err != nil {
		return err
	}
	c.closeAfter(encode(protocol.TypeSessionEnded, in.ID, nil), websocket.StatusNormalClosure, "signed out", 0)
	return nil
}

func (c *conn) listSessions(ctx context.Context, in Inbound, s session.Session) error {
	list, err := c.srv.mgr.List(ctx, s.UserID)
	if err != nil {
		return err
	}
	c.reply(in.ID, protocol.TypeSessions, map[string]any{"sessions": deviceList(list, s.ID)})
	return nil
}

func (c *conn) revokeSession(ctx context.Context, in Inbound, s session.Session) error {
	if in.SessionID == "" {
		return errSessionRequired
	}
	if !session.ValidID(in.SessionID) {
		return errNoSuchSession
	}
	var ids []string
	revoke := func() (err error) { ids, err = c.srv.mgr.Revoke(ctx, s, in.SessionID); return err }
	own := in.SessionID == s.ID
	var err error
	if own {
		err = c.endSelf(revoke)
	} else {
		err = revoke()
	}
	if err != nil {
		return err
	}
	msg := encode(protocol.TypeSessionsRevoked, in.ID, map[string]any{"session_ids": ids})
	if own {
		c.closeAfter(msg, websocket.StatusNormalClosure, "signed out", 0)
		return nil
	}
	c.send(msg)
	return nil
}

func (c *conn) revokeOthers(ctx context.Context, in Inbound, s session.Session) error {
	ids, err := c.srv.mgr.RevokeOthers(ctx, s)
	if err != nil {
		return err
	}
	c.reply(in.ID, protocol.TypeSessionsRevoked, map[string]any{"session_ids": nonNil(ids)})
	return nil
}

func (c *conn) activity(ctx context.Context, in Inbound, s session.Session) error {
	list, err := c.srv.mgr.Activity(ctx, s.UserID, activityLimit)
	if err != nil {
		return err
	}
	c.reply(in.ID, protocol.TypeActivity, map[string]any{"events": activityList(list, s.ID)})
	return nil
}

func (c *conn) reauthStart(ctx context.Context, in Inbound, s session.Session) error {
	ke1, err := session.DecodeB64(in.KE1)
	if err != nil {
		return err
	}
	m := c.srv.mgr
	// The same budget as a login of the user from this address: a stolen token is no extra
	// guessing channel.
	name, err := m.Username(ctx, s.UserID)
	if err != nil {
		return err
	}
	budget := c.srv.loginBudgetFor(name, c.ip)
	if c.srv.spend(ctx, budget) {
		return ErrRateLimited
	}
	ke2, l, err := m.ReauthStart(ctx, s, ke1)
	c.mu.Lock()
	c.st.reauth = nil
	if err == nil {
		c.st.reauth = &reauthFlow{login: l, budget: budget}
	}
	c.mu.Unlock()
	if err != nil {
		c.srv.refundIfUnavailable(ctx, budget, err)
		return err
	}
	c.reply(in.ID, protocol.TypeReauthChallenge, map[string]string{"ke2": session.EncodeB64(ke2)})
	return nil
}

func (c *conn) reauthFinish(ctx context.Context, in Inbound, _ session.Session) error {
	c.mu.Lock()
	f := c.st.reauth
	c.st.reauth = nil
	c.mu.Unlock()
	if f == nil {
		return outOfOrder("reauth.finish must follow reauth.start")
	}
	ke3, err := session.DecodeB64(in.KE3)
	if err != nil {
		return err
	}
	m := c.srv.mgr
	if err := m.ReauthFinish(ctx, f.login, ke3); err != nil {
		c.srv.refundIfUnavailable(ctx, f.budget, err)
		return err
	}
	c.srv.refund(ctx, f.budget)
	c.mu.Lock()
	c.st.proof = m.ProofOf(f.login)
	c.mu.Unlock()
	c.reply(in.ID, protocol.TypeReauthOK, nil)
	return nil
}

func (c *conn) passwordChangeStart(ctx context.Context, in Inbound, s session.Session) error {
	m := c.srv.mgr
	c.mu.Lock()
	proof := c.st.proof
	c.mu.Unlock()
	if err := m.PasswordChangeAllowed(proof); err != nil {
		return err
	}
	req, err := session.DecodeB64(in.Request)
	if err != nil {
		return err
	}
	resp, err := m.PasswordChangeStart(ctx, s, req)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.st.pwChange = true
	c.mu.Unlock()
	c.reply(in.ID, protocol.TypePasswordChangeChallenge, map[string]string{"response": session.EncodeB64(resp)})
	return nil
}

func (c *conn) passwordChangeFinish(ctx context.Context, in Inbound, s session.Session) error {
	c.mu.Lock()
	started, proof := c.st.pwChange, c.st.proof
	c.mu.Unlock()
	if !started {
		return outOfOrder("password.change.finish must follow password.change.start")
	}
	rec, err := session.DecodeB64(in.Record)
	if err != nil {
		return err
	}
	next, err := c.srv.mgr.ChangePassword(ctx, s, proof, rec)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.st.pwChange, c.st.proof = false, next
	c.mu.Unlock()
	c.reply(in.ID, protocol.TypePasswordChangeOK, nil)
	return nil
}
