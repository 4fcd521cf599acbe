package server

import (
	"context"
	"sync"
	"time"
)

// Limits are the abuse limits. Zero fields take the defaults, which stop password guessing
// against one username (10 failed or abandoned logins a minute) yet let one address perform
// 100 logins and 100 registrations a minute with room to spare.
type Limits struct {
	Window               time.Duration // counting window of the login limits (default 1m)
	LoginFailuresPerUser int           // failed or abandoned logins and re-authentications per username and client address per window (default 10)
	LoginCeilingPerUser  int           // the same per username from all addresses together, halved for an hour by every window that reaches it (default 100)
	LoginsPerAddress     int           // login.start per client address per window (default 200)
	RegistrationsPerAddr int           // register.start per client address per window (default 200)
	MessagesPerSecond    float64       // sustained client messages per connection (default 50)
	MessageBurst         int           // burst above that rate (default 100)
	ConnectionsPerAddr   int           // concurrent WebSockets per client address (default 2000)
	BadTokensPerAddr     int           // refused tokens (unknown, ended, malformed) per client address per minute on this node (default 100)
}

func (l Limits) withDefaults() Limits {
	if l.Window == 0 {
		l.Window = time.Minute
	}
	if l.LoginFailuresPerUser == 0 {
		l.LoginFailuresPerUser = 10
	}
	if l.LoginCeilingPerUser == 0 {
		l.LoginCeilingPerUser = 10 * l.LoginFailuresPerUser
	}
	if l.LoginsPerAddress == 0 {
		l.LoginsPerAddress = 200
	}
	if l.RegistrationsPerAddr == 0 {
		l.RegistrationsPerAddr = 200
	}
	if l.MessagesPerSecond == 0 {
		l.MessagesPerSecond = 50
	}
	if l.MessageBurst == 0 {
		l.MessageBurst = 100
	}
	if l.ConnectionsPerAddr == 0 {
		l.ConnectionsPerAddr = 2000
	}
	if l.BadTokensPerAddr == 0 {
		l.BadTokensPerAddr = 100
	}
	return l
}

// Counter counts events per key in fixed windows. MemoryCounter serves one node; an
// implementation over a shared store makes N nodes share one budget.
type Counter interface {
	// Add adds delta to key's count in the current window of length window and returns the
	// count after the addition.
	Add(ctx context.Context, key string, delta int64, window time.Duration) (int64, error)
}

// MemoryCounter is an in-process Counter.
type MemoryCounter struct {
	mu      sync.Mutex
	now     func() time.Time
	buckets map[string]*bucket
	ops     int
}

type bucket struct {
	start time.Time
	win   time.Duration
	n     int64
}

// NewMemoryCounter returns an empty in-process counter.
func NewMemoryCounter() *MemoryCounter {
	return &MemoryCounter{now: time.Now, buckets: map[string]*bucket{}}
}

// Add implements Counter.
func (c *MemoryCounter) Add(_ context.Context, key string, delta int64, window time.Duration) (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	c.ops++
	if c.ops%4096 == 0 {
		for k, b := range c.buckets {
			if now.Sub(b.start) >= b.win {
				delete(c.buckets, k)
			}
		}
	}
	b, ok := c.buckets[key]
	if !ok || now.Sub(b.start) >= window {
		b = &bucket{start: now, win: window}
		c.buckets[key] = b
	}
	b.n += delta
	if b.n < 0 {
		b.n = 0
	}
	return b.n, nil
}

// connCounter tracks concurrent connections per client address on this node.
type connCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *connCounter) acquire(addr string, max int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	if c.n[addr] >= max {
		return false
	}
	c.n[addr]++
	return true
}

func (c *connCounter) release(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[addr]--; c.n[addr] <= 0 {
		delete(c.n, addr)
	}
}

// over adds one event to key and reports whether it went over max. A counter that fails
// (a shared store is down) lets the event through: availability over strictness, and the
// failure is the caller's to log.
func over(ctx context.Context, c Counter, key string, max int, window time.Duration) (bool, error) {
	n, err := c.Add(ctx, key, 1, window)
	if err != nil {
		return false, err
	}
	return n > int64(max), nil
}

// addrCounter counts events per client address (limit key) in one-minute windows on this node
// alone: a bound on the store reads that refused tokens cost, checked on every token
// presentation, so it must cost no network round trip.
type addrCounter struct {
	c *MemoryCounter
}

func newAddrCounter() addrCounter { return addrCounter{c: NewMemoryCounter()} }

// over reports whether ip has used up max in the current window.
func (a addrCounter) over(ip string, max int) bool {
	n, _ := a.c.Add(context.Background(), limitKey(ip), 0, time.Minute)
	return n >= int64(max)
}

func (a addrCounter) add(ip string) {
	_, _ = a.c.Add(context.Background(), limitKey(ip), 1, time.Minute)
}
