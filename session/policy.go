package session

import (
	"fmt"
	"time"
)

// Limit policies for a user who already has MaxSessions live sessions.
const (
	EvictOldest = "evict_oldest" // the oldest session by creation ends with reason session_limit
	DenyNew     = "deny_new"     // the new login is refused with ErrSessionLimit
)

// Policy is the session lifecycle. Zero fields take the documented defaults (see Defaults).
type Policy struct {
	IdleTimeout     time.Duration // inactivity before a session ends (default 30m)
	AbsoluteTimeout time.Duration // lifetime from login, never extended (default 12h)
	RefreshLead     time.Duration // how long before a deadline the device is prompted (default 2m)
	RotationGrace   time.Duration // how long a rotated-away token still works (default 30s)
	MaxSessions     int           // live sessions per user (default 10; negative: unlimited)
	LimitPolicy     string        // EvictOldest (default) or DenyNew
	TouchInterval   time.Duration // activity writes per session are coalesced to one per interval (default min(idle/10, 30s))
	CacheTTL        time.Duration // the longest a validation is served from the node's cache while its hub is healthy; revocations and rotations drop entries at once (default 1m)
	Retention       time.Duration // ended sessions are kept this long before the sweeper deletes them (default 24h)
	SweepInterval   time.Duration // pause between sweeps (default 1m)
	SweepBatch      int           // rows per sweep transaction (default 1000)
	PendingTimeout  time.Duration // how long a login.start or reauth.start can be finished (default 10s)
}

// Defaults returns p with every zero field set to its default.
func (p Policy) Defaults() Policy {
	set := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	set(&p.IdleTimeout, 30*time.Minute)
	set(&p.AbsoluteTimeout, 12*time.Hour)
	set(&p.RefreshLead, 2*time.Minute)
	set(&p.RotationGrace, 30*time.Second)
	set(&p.TouchInterval, min(p.IdleTimeout/10, 30*time.Second))
	set(&p.CacheTTL, time.Minute)
	set(&p.Retention, 24*time.Hour)
	set(&p.SweepInterval, time.Minute)
	set(&p.PendingTimeout, 10*time.Second)
	if p.MaxSessions == 0 {
		p.MaxSessions = 10
	}
	if p.LimitPolicy == "" {
		p.LimitPolicy = EvictOldest
	}
	if p.SweepBatch == 0 {
		p.SweepBatch = 1000
	}
	return p
}

// Validate reports the first setting that makes no sense, naming it.
func (p Policy) Validate() error {
	switch {
	case p.IdleTimeout <= 0:
		return fmt.Errorf("idle timeout must be positive")
	case p.AbsoluteTimeout < p.IdleTimeout:
		return fmt.Errorf("absolute timeout (%s) must not be shorter than the idle timeout (%s)", p.AbsoluteTimeout, p.IdleTimeout)
	case p.RefreshLead <= 0 || p.RefreshLead >= p.IdleTimeout:
		return fmt.Errorf("refresh lead (%s) must be positive and shorter than the idle timeout (%s)", p.RefreshLead, p.IdleTimeout)
	case p.RotationGrace < 0:
		return fmt.Errorf("rotation grace must not be negative")
	case p.LimitPolicy != EvictOldest && p.LimitPolicy != DenyNew:
		return fmt.Errorf("session limit policy %q is not %s or %s", p.LimitPolicy, EvictOldest, DenyNew)
	case p.TouchInterval <= 0 || p.CacheTTL <= 0 || p.SweepInterval <= 0 || p.Retention < 0 || p.SweepBatch <= 0 || p.PendingTimeout <= 0:
		return fmt.Errorf("touch interval, cache TTL, sweep interval and batch must be positive")
	}
	return nil
}

func (p Policy) limit() Limit {
	if p.MaxSessions < 0 {
		return Limit{}
	}
	return Limit{Max: p.MaxSessions, EvictOldest: p.LimitPolicy == EvictOldest}
}

// Clock tells the time. Tests inject a settable one (internal/testclock) so that no deadline
// test sleeps.
type Clock interface {
	Now() time.Time
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now returns the current time.
func (SystemClock) Now() time.Time { return time.Now() }
