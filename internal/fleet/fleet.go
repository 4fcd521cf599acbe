// Package fleet is a crowd of devices behind one address: reconnecting Go clients of a third
// as many users, each calling the API about twice a second, whose connection events are timed.
// The load-balancer tests and `sessionbench -scenario rolling` disrupt the nodes behind it and
// read from a Phase what the devices saw: who was signed out, which API calls failed after the
// client's retries, how long reconnects took, and how late revoked devices heard.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/sessiond/sessiond/client"
	"github.com/sessiond/sessiond/internal/clientx"
)

// Password is every fleet account's password.
const Password = "fleet password"

// Fleet is the devices, and the API calls they make until ctx of Connect ends or Close.
type Fleet struct {
	base            string
	names           []string // the users' names
	opts            client.Options
	devs            []*device
	calls, failures atomic.Int64
	stop            chan struct{}
	loops           sync.WaitGroup
}

type device struct {
	c    *client.Client
	user int

	mu         sync.Mutex
	lostAt     time.Time // the last disconnect not yet followed by a resume
	reconnects []time.Duration
	endedAt    time.Time
	endReason  string
	revokedAt  time.Time
}

// Connect registers n/3 users (rounded up) through base and signs n devices in, three per
// user, then starts their API calls.
func Connect(ctx context.Context, base string, n int) (*Fleet, error) {
	opts := clientx.Cheap(client.Options{ReconnectMin: 100 * time.Millisecond, ReconnectMax: time.Second})
	run := fmt.Sprintf("fleet-%x", rand.Uint32())
	f := &Fleet{base: base, devs: make([]*device, n), stop: make(chan struct{}), opts: opts}
	for u := 0; u < (n+2)/3; u++ {
		f.names = append(f.names, fmt.Sprintf("%s-%d", run, u))
	}
	if err := parallel(ctx, len(f.names), 16, func(u int) error {
		c := client.NewClient(base, opts)
		defer c.Close()
		_, _, err := c.Register(ctx, f.names[u], Password)
		return err
	}); err != nil {
		return nil, fmt.Errorf("fleet: register: %w", err)
	}
	err := parallel(ctx, n, 16, func(i int) error {
		c := client.NewClient(base, opts)
		if _, _, err := c.Login(ctx, f.names[i/3], Password, fmt.Sprintf("device %d", i%3)); err != nil {
			c.Close()
			return err
		}
		d := &device{c: c, user: i / 3}
		f.devs[i] = d
		go d.follow()
		return nil
	})
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("fleet: login: %w", err)
	}
	for _, d := range f.devs {
		f.loops.Add(1)
		go f.callLoop(ctx, d)
	}
	return f, nil
}

// Close stops the API calls and closes every client.
func (f *Fleet) Close() {
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
	f.loops.Wait()
	for _, d := range f.devs {
		if d != nil {
			d.c.Close()
		}
	}
}

func (d *device) follow() {
	for ev := range d.c.Events() {
		now := time.Now()
		d.mu.Lock()
		switch ev.Type {
		case client.EventDisconnected:
			d.lostAt = now
		case client.EventResumed:
			if !d.lostAt.IsZero() {
				d.reconnects = append(d.reconnects, now.Sub(d.lostAt))
				d.lostAt = time.Time{}
			}
		case client.EventEnded:
			d.endedAt, d.endReason = now, ev.Reason
		}
		d.mu.Unlock()
	}
}

// callLoop calls the API about twice a second, each call retried for up to 15 s while it
// answers unavailable or cannot connect (as an app would); a failure of a device that was not
// revoked counts.
func (f *Fleet) callLoop(ctx context.Context, d *device) {
	defer f.loops.Done()
	t := time.NewTicker(time.Duration(400+rand.IntN(200)) * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.stop:
			return
		case <-t.C:
		}
		d.mu.Lock()
		gone := !d.revokedAt.IsZero() || !d.endedAt.IsZero()
		d.mu.Unlock()
		token := d.c.Token()
		if gone || token == "" {
			continue
		}
		err := retrying(ctx, 15*time.Second, func() error {
			_, err := client.NewAPI(f.base, token).Session(ctx)
			return err
		})
		f.calls.Add(1)
		d.mu.Lock()
		revoked := !d.revokedAt.IsZero()
		d.mu.Unlock()
		if err != nil && !revoked && ctx.Err() == nil {
			f.failures.Add(1)
		}
	}
}

// Away returns a device that is disconnected now (its node went away), waiting for one.
func (f *Fleet) Away(ctx context.Context) (int, error) {
	for ctx.Err() == nil {
		for i, d := range f.devs {
			d.mu.Lock()
			lost := !d.lostAt.IsZero() && d.revokedAt.IsZero()
			d.mu.Unlock()
			if lost {
				return i, nil
			}
		}
		time.Sleep(time.Millisecond)
	}
	return 0, errors.New("fleet: no device was disconnected")
}

// Revoke revokes device victim (-1: one at random among those signed in) from another device of its user, like an
// app (trying again while the revoking device reconnects), and checks that the victim's token
// is refused at once.
func (f *Fleet) Revoke(ctx context.Context, victim int) error {
	for victim < 0 { // one at random that is still signed in and not revoked yet
		i := rand.IntN(len(f.devs))
		d := f.devs[i]
		d.mu.Lock()
		live := d.revokedAt.IsZero() && d.endedAt.IsZero()
		d.mu.Unlock()
		if live {
			victim = i
		}
	}
	v := f.devs[victim]
	var by *device
	for _, d := range f.devs {
		d.mu.Lock()
		ok := d.user == v.user && d != v && d.revokedAt.IsZero() && d.endedAt.IsZero()
		d.mu.Unlock()
		if ok {
			by = d
			break
		}
	}
	if by == nil {
		return f.Revoke(ctx, -1)
	}
	token := v.c.Token()
	s, _ := v.c.Session()
	v.mu.Lock()
	v.revokedAt = time.Now()
	v.mu.Unlock()
	// A request that timed out (unavailable) may still have been written: trying again then
	// finds the session revoked (not_found), and the server tells its devices again.
	timedOut := false
	err := retrying(ctx, 30*time.Second, func() error {
		err := by.c.Revoke(ctx, s.ID)
		if client.IsCode(err, "unavailable") {
			timedOut = true
		}
		if timedOut && client.IsCode(err, "not_found") {
			return nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("fleet: revoke: %w", err)
	}
	// Never accepted again: session_invalid, or unavailable while the store cannot answer
	// (then asked again until it can).
	err = retrying(ctx, 30*time.Second, func() error {
		_, err := client.NewAPI(f.base, token).Session(ctx)
		if err == nil {
			return errors.New("accepted")
		}
		return err
	})
	if !client.IsCode(err, "session_invalid") {
		return fmt.Errorf("fleet: a revoked token was not refused at once: %v", err)
	}
	return nil
}

// SignIn signs one more device in (of the first user) and out again, as an app would: trying
// again while the server answers unavailable or cannot be reached.
func (f *Fleet) SignIn(ctx context.Context) error {
	return retrying(ctx, 30*time.Second, func() error {
		c := client.NewClient(f.base, f.opts)
		defer c.Close()
		if _, _, err := c.Login(ctx, f.names[0], Password, "one more"); err != nil {
			return err
		}
		return c.Logout(ctx)
	})
}

// retrying calls f until it succeeds, fails with an answer other than unavailable, or within
// has passed: what an app does about a transport error or a 503 (200 ms apart).
func retrying(ctx context.Context, within time.Duration, f func() error) error {
	deadline := time.Now().Add(within)
	for {
		err := f()
		var werr *client.Error
		if err == nil || (errors.As(err, &werr) && werr.Code != "unavailable") || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Phase is what one disruption did to the fleet.
type Phase struct {
	Devices, SignedOut, Calls, Failures int
	Reconnects                          []time.Duration // sorted
	Revoked, Told                       int
	ToldAfter                           []time.Duration // revocation → its device ended with revoked_by_user
	UnexpectedEnds                      []string        // end reasons of devices nobody revoked
}

// Run runs disrupt, waits (up to 30 s) for the devices it revoked to hear, lets the fleet
// call once more on the settled cluster, and sums up.
func (f *Fleet) Run(disrupt func() error) (Phase, error) {
	calls0, fail0 := f.calls.Load(), f.failures.Load()
	before := map[*device]int{}
	for _, d := range f.devs {
		d.mu.Lock()
		before[d] = len(d.reconnects)
		d.mu.Unlock()
	}
	start := time.Now()
	if err := disrupt(); err != nil {
		return Phase{}, err
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && f.pending(start) > 0; {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Second)
	p := Phase{Devices: len(f.devs)}
	for _, d := range f.devs {
		d.mu.Lock()
		p.Reconnects = append(p.Reconnects, d.reconnects[before[d]:]...)
		switch {
		case !d.revokedAt.IsZero() && !d.revokedAt.Before(start):
			p.Revoked++
			if !d.endedAt.IsZero() && d.endReason == "revoked_by_user" {
				p.Told++
				p.ToldAfter = append(p.ToldAfter, d.endedAt.Sub(d.revokedAt))
			}
		case d.revokedAt.IsZero() && !d.endedAt.IsZero():
			p.SignedOut++
			p.UnexpectedEnds = append(p.UnexpectedEnds, d.endReason)
		}
		d.mu.Unlock()
	}
	sort.Slice(p.Reconnects, func(i, j int) bool { return p.Reconnects[i] < p.Reconnects[j] })
	p.Calls, p.Failures = int(f.calls.Load()-calls0), int(f.failures.Load()-fail0)
	return p, nil
}

// pending counts devices revoked since start that have not heard yet.
func (f *Fleet) pending(start time.Time) int {
	n := 0
	for _, d := range f.devs {
		d.mu.Lock()
		if !d.revokedAt.IsZero() && !d.revokedAt.Before(start) && d.endedAt.IsZero() {
			n++
		}
		d.mu.Unlock()
	}
	return n
}

// OK reports whether nobody was signed out, no call failed and every revoked device heard.
func (p Phase) OK() bool { return p.SignedOut == 0 && p.Failures == 0 && p.Told == p.Revoked }

// Reconnect returns quantile q of the reconnect times (0 without any).
func (p Phase) Reconnect(q float64) time.Duration {
	if len(p.Reconnects) == 0 {
		return 0
	}
	return p.Reconnects[min(len(p.Reconnects)-1, int(q*float64(len(p.Reconnects))))]
}

func (p Phase) String() string {
	return fmt.Sprintf("%d devices: %d signed out %v; %d API calls, %d failed after retries; %d reconnects (p50 %s, p99 %s); %d of %d revoked devices told, %v after the revocation",
		p.Devices, p.SignedOut, p.UnexpectedEnds, p.Calls, p.Failures, len(p.Reconnects),
		p.Reconnect(0.5).Round(time.Millisecond), p.Reconnect(0.99).Round(time.Millisecond), p.Told, p.Revoked, p.ToldAfter)
}

// parallel runs f(i) for i in [0,n), conc at a time, and returns the first error.
func parallel(ctx context.Context, n, conc int, f func(i int) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(conc)
	for i := 0; i < n && gctx.Err() == nil; i++ {
		g.Go(func() error { return f(i) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}
