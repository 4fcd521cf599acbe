package server

import (
	"context"
	"errors"
	"strings"

	"github.com/sessiond/sessiond/protocol"
	"github.com/sessiond/sessiond/session"
)

// flows.go: the commands of a signed-out connection — registration, login and resume — each
// flow's state kept between its two steps in connState.

func (c *conn) registerStart(ctx context.Context, in Inbound, _ session.Session) error {
	// Registration is a password exchange like login: over TLS only, by the same rule.
	if !c.tokensOK {
		return errInsecure
	}
	req, err := session.DecodeB64(in.Request)
	if err != nil {
		return err
	}
	resp, reg, err := c.srv.mgr.RegisterStart(ctx, in.Username, req)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.st.register = reg
	c.mu.Unlock()
	c.reply(in.ID, protocol.TypeRegisterChallenge, map[string]string{"response": session.EncodeB64(resp)})
	return nil
}

func (c *conn) registerFinish(ctx context.Context, in Inbound, _ session.Session) error {
	c.mu.Lock()
	reg := c.st.register
	c.mu.Unlock()
	if reg == nil {
		return outOfOrder("register.finish must follow register.start")
	}
	rec, err := session.DecodeB64(in.Record)
	if err != nil {
		return err
	}
	uid, err := c.srv.mgr.RegisterFinish(ctx, reg, rec)
	if errors.Is(err, session.ErrBadInput) {
		return err // the client may retry finish with a valid record
	}
	c.mu.Lock()
	c.st.register = nil
	c.mu.Unlock()
	if err != nil {
		return err
	}
	c.reply(in.ID, protocol.TypeRegisterOK, map[string]string{"user_id": uid})
	return nil
}

func (c *conn) loginStart(ctx context.Context, in Inbound, _ session.Session) error {
	if !c.tokensOK {
		return errInsecure
	}
	ke1, err := session.DecodeB64(in.KE1)
	if err != nil {
		return err
	}
	if err := session.CheckLabel(in.Device); err != nil {
		return err
	}
	// Every login.start counts against the username until a login.finish succeeds: wrong
	// passwords and abandoned attempts (a client that cannot open its envelope just stops)
	// alike.
	var budget loginBudget
	if name, err := session.NormalizeUsername(in.Username); err == nil {
		budget = c.srv.loginBudgetFor(name, c.ip)
		if c.srv.spend(ctx, budget) {
			return ErrRateLimited
		}
	}
	ke2, l, err := c.srv.mgr.LoginStart(ctx, in.Username, ke1)
	c.mu.Lock()
	c.st.login = nil // a new login.start restarts the login, even a failed one
	if err == nil {
		c.st.login = &loginFlow{login: l, label: c.deviceLabel(in.Device), budget: budget}
	}
	c.mu.Unlock()
	if err != nil {
		c.srv.refundIfUnavailable(ctx, budget, err)
		return err
	}
	c.reply(in.ID, protocol.TypeLoginChallenge, map[string]string{"ke2": session.EncodeB64(ke2)})
	return nil
}

// deviceLabel is the label for a login: the client's, else one derived from the User-Agent.
func (c *conn) deviceLabel(given string) string {
	if label := strings.TrimSpace(given); label != "" {
		return label
	}
	return session.DeviceLabel(c.userAgent)
}

func (c *conn) loginFinish(ctx context.Context, in Inbound, _ session.Session) error {
	c.mu.Lock()
	f := c.st.login
	c.st.login = nil
	c.mu.Unlock()
	if f == nil {
		return outOfOrder("login.finish must follow login.start")
	}
	ke3, err := session.DecodeB64(in.KE3)
	if err != nil {
		return err
	}
	m := c.srv.mgr
	info, token, err := m.LoginFinish(ctx, f.login, ke3, session.DeviceInfo{Label: f.label, IP: c.ip, UserAgent: c.userAgent})
	if err != nil {
		c.srv.refundIfUnavailable(ctx, f.budget, err)
		return err
	}
	c.srv.refund(ctx, f.budget)
	s, err := m.Check(ctx, info.ID)
	if errors.Is(err, session.ErrUnavailable) {
		// The session is stored and its token minted; only the re-read failed. Answering
		// unavailable would leave a session nobody holds the token of: sign the connection in
		// with what the login returned (every later message re-checks the store).
		s, err = info.Session(), nil
	}
	if err != nil {
		return err
	}
	c.authenticate(s, m.ProofOf(f.login))
	c.reply(in.ID, protocol.TypeLoginOK, map[string]any{"session": sessionObject(info, token)})
	// The device list notice of this login was published before this connection joined
	// the user's topic; it is the one that caused it, so it gets the list too.
	if list, err := m.List(ctx, s.UserID); err == nil {
		c.send(encode(protocol.NoticeSessionsChanged, "", map[string]any{"sessions": deviceList(list, s.ID)}))
	}
	return nil
}

func (c *conn) resume(ctx context.Context, in Inbound, _ session.Session) error {
	if c.srv.badTokens.over(c.ip, c.srv.limits.BadTokensPerAddr) {
		c.srv.metrics.rateLimited.WithLabelValues("bad_tokens_per_address").Inc()
		return ErrRateLimited
	}
	m := c.srv.mgr
	s, err := m.Validate(ctx, in.Token)
	if err != nil {
		if errors.Is(err, session.ErrInvalid) {
			c.srv.badTokens.add(c.ip)
		}
		return err
	}
	// A resume proves possession over the token itself. The proof comes first, so that a
	// token alone cannot trigger the fingerprint's revocation.
	if err := m.VerifyProof(s, in.Proof, protocol.ResumeMethod, protocol.ResumePath, []byte(in.Token), c.srv.proofSeen(ctx)); err != nil {
		return err
	}
	if err := m.CheckClient(ctx, s, session.Client{IP: c.ip, UserAgent: c.userAgent}); err != nil {
		return err
	}
	s = m.Touch(s)
	c.authenticate(s, session.Proof{})
	c.reply(in.ID, protocol.TypeSessionOK, map[string]any{"session": sessionObject(m.Info(s), "")})
	return nil
}
