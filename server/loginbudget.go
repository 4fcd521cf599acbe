package server

import (
	"context"
	"errors"
	"time"

	"github.com/sessiond/sessiond/session"
)

// Password guesses are counted twice. Each (username, client address) pair has a budget of
// Limits.LoginFailuresPerUser failed or abandoned attempts a window, so that strangers guessing
// from elsewhere cannot lock the owner out. Each username also has a ceiling across all
// addresses, Limits.LoginCeilingPerUser, against guessing spread over many addresses; every
// window in which it is reached halves it for the next hour (down to the per-pair budget), so
// a sustained distributed attack gets ever fewer guesses. login.* and reauth.* spend the same
// budget: a stolen token is no extra guessing channel.

// ceilingMemory is how long a username remembers that its ceiling was reached.
const ceilingMemory = time.Hour

// loginBudget names the counters one attempt spends. The zero value counts nothing (a
// malformed username: the attempt fails before any guess).
type loginBudget struct {
	pair, user string
}

func (s *Server) loginBudgetFor(normalizedName, ip string) loginBudget {
	u := s.userLimitKey(normalizedName)
	return loginBudget{pair: u + "@" + limitKey(ip), user: u}
}

// spend counts one attempt and reports whether it is refused.
func (s *Server) spend(ctx context.Context, b loginBudget) bool {
	if b.user == "" {
		return false
	}
	if s.limited(ctx, "login_failures_per_user", b.pair, s.limits.LoginFailuresPerUser) {
		return true
	}
	strikes, _ := s.counter.Add(ctx, b.user+"/strikes", 0, ceilingMemory)
	ceiling := max(s.limits.LoginFailuresPerUser, s.limits.LoginCeilingPerUser>>min(strikes, 16))
	n, err := s.counter.Add(ctx, b.user, 1, s.limits.Window)
	if err != nil {
		s.log.Warn().Err(err).Str("limit", "login_ceiling_per_user").Msg("rate limit counter unavailable; allowing")
		return false
	}
	if n <= int64(ceiling) {
		return false
	}
	if n == int64(ceiling)+1 {
		_, _ = s.counter.Add(ctx, b.user+"/strikes", 1, ceilingMemory)
	}
	s.metrics.rateLimited.WithLabelValues("login_ceiling_per_user").Inc()
	return true
}

// refund takes an attempt back: it succeeded (the password was right), or it failed for want
// of the store (an outage is not a guess, and users retrying through one must not find
// themselves locked out once it is over).
func (s *Server) refund(ctx context.Context, b loginBudget) {
	if b.user == "" {
		return
	}
	ctx = context.WithoutCancel(ctx)
	_, _ = s.counter.Add(ctx, b.pair, -1, s.limits.Window)
	_, _ = s.counter.Add(ctx, b.user, -1, s.limits.Window)
}

// refundIfUnavailable refunds b when err is a store outage.
func (s *Server) refundIfUnavailable(ctx context.Context, b loginBudget, err error) {
	if errors.Is(err, session.ErrUnavailable) {
		s.refund(ctx, b)
	}
}
