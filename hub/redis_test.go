package hub

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// redisURL returns TEST_REDIS_URL, skipping the test when it is unset, except in CI where a
// missing Redis must not pass silently.
func redisURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv("TEST_REDIS_URL")
	if u == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("TEST_REDIS_URL must be set in CI")
		}
		t.Skip("TEST_REDIS_URL not set")
	}
	return u
}

// newTestClient returns a client of url, closed when the test ends; edit adjusts its options.
func newTestClient(t *testing.T, url string, edit func(*redis.Options)) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("TEST_REDIS_URL: %v", err)
	}
	if edit != nil {
		edit(opt)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// newTestRedis returns a broker (one node) with its own client unless cfg has one, logging to
// the test.
func newTestRedis(t *testing.T, url, prefix string, cfg RedisConfig) *Redis {
	t.Helper()
	if cfg.Client == nil {
		cfg.Client = newTestClient(t, url, nil)
	}
	cfg.Prefix = prefix
	cfg.Logger = zerolog.New(zerolog.NewTestWriter(t))
	r, err := NewRedis(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestNewRedis(t *testing.T) {
	if _, err := NewRedis(RedisConfig{}); err == nil {
		t.Fatal("NewRedis without a client succeeded")
	}
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	r, err := NewRedis(RedisConfig{Client: c})
	if err != nil {
		t.Fatal(err)
	}
	if r.prefix != "sessiond:" {
		t.Fatalf("default prefix %q", r.prefix)
	}
	if r.Healthy() {
		t.Fatal("healthy before Run")
	}
}

// Without a reachable Redis: Subscribe records the topic, Publish fails (and respects ctx),
// the broker stays unhealthy, and Run still ends cleanly.
func TestRedisUnreachable(t *testing.T) {
	release := make(chan struct{})
	dialed := make(chan struct{}, 1)
	c := redis.NewClient(&redis.Options{
		Addr:       "127.0.0.1:1",
		MaxRetries: -1,
		Dialer: func(ctx context.Context, _, _ string) (net.Conn, error) {
			select {
			case dialed <- struct{}{}:
			default:
			}
			select { // a Redis that never answers
			case <-release:
			case <-ctx.Done():
			}
			return nil, errors.New("test: unreachable")
		},
	})
	defer c.Close()
	defer close(release) // before Close: unblocks the abandoned Publish
	r, err := NewRedis(RedisConfig{Client: c, Prefix: randomPrefix()})
	if err != nil {
		t.Fatal(err)
	}
	h := New(r)
	ctx, cancel := context.WithCancel(t.Context())
	runErr := make(chan error, 1)
	go func() { runErr <- h.Run(ctx) }()
	<-dialed // Run is trying to connect

	if err := h.Subscribe(t.Context(), "t", newSink()); err != nil {
		t.Fatalf("Subscribe while disconnected = %v, want nil (recorded for later)", err)
	}
	if h.Healthy() {
		t.Fatal("healthy without Redis")
	}

	pctx, pcancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer pcancel()
	start := time.Now()
	err = h.Publish(pctx, "t", []byte("x"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Publish = %v, want the ctx deadline", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Publish took %v with a 50ms ctx", d)
	}
	if err := h.Publish(pctx, "t", []byte("x")); err == nil {
		t.Fatal("Publish with an ended ctx succeeded")
	}

	cancel()
	if err := <-runErr; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

func TestRedisPublishFailsWhenRefused(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1}) // nothing listens on port 1
	defer c.Close()
	r, err := NewRedis(RedisConfig{Client: c})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Publish(context.Background(), "t", []byte("x")); err == nil {
		t.Fatal("Publish to a refused address succeeded")
	}
}

// The node holds a channel subscription exactly while it has a sink for the topic.
func TestRedisChannelFollowsSinks(t *testing.T) {
	url := redisURL(t)
	prefix := randomPrefix()
	h := startHub(t, newTestRedis(t, url, prefix, RedisConfig{}))
	admin := newTestClient(t, url, nil)
	numsub := func() int64 {
		n, err := admin.PubSubNumSub(t.Context(), prefix+"t").Result()
		if err != nil {
			t.Fatal(err)
		}
		return n[prefix+"t"]
	}

	s1, s2 := newSink(), newSink()
	subscribe(t, h, "t", s1)
	if n := numsub(); n != 1 { // Subscribe returned: Redis has confirmed it
		t.Fatalf("subscribers of the channel = %d, want 1", n)
	}
	subscribe(t, h, "t", s2)
	if n := numsub(); n != 1 {
		t.Fatalf("subscribers with two local sinks = %d, want 1 (one per node)", n)
	}
	unsubscribe(t, h, "t", s1)
	unsubscribe(t, h, "t", s2)
	waitUntil(t, "the channel to be unsubscribed", func() bool { return numsub() == 0 })
}

// gatedDialer dials normally while open and fails while closed, so a test can hold a node
// disconnected for as long as it needs. It can also freeze the connections it made.
type gatedDialer struct {
	closed atomic.Bool
	mu     sync.Mutex
	conns  []*freezableConn
}

func (g *gatedDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if g.closed.Load() {
		return nil, errors.New("test: dialing is closed")
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	fc := &freezableConn{Conn: c}
	g.mu.Lock()
	g.conns = append(g.conns, fc)
	g.mu.Unlock()
	return fc, nil
}

// freeze makes every connection dialed so far swallow its writes: a half-open connection
// that neither fails nor answers.
func (g *gatedDialer) freeze() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range g.conns {
		c.frozen.Store(true)
	}
}

type freezableConn struct {
	net.Conn
	frozen atomic.Bool
}

func (c *freezableConn) Write(b []byte) (int, error) {
	if c.frozen.Load() {
		return len(b), nil
	}
	return c.Conn.Write(b)
}

// killPubSub kills, from the server side, the pub/sub connection of the client named name.
func killPubSub(t *testing.T, admin *redis.Client, name string) {
	t.Helper()
	var ids []string
	waitUntil(t, "the pub/sub connection in CLIENT LIST", func() bool {
		list, err := admin.ClientList(t.Context()).Result()
		if err != nil {
			t.Fatal(err)
		}
		ids = ids[:0]
		for line := range strings.Lines(list) {
			f := map[string]string{}
			for kv := range strings.FieldsSeq(line) {
				k, v, _ := strings.Cut(kv, "=")
				f[k] = v
			}
			if f["name"] == name && (strings.Contains(f["flags"], "P") || f["sub"] != "0") {
				ids = append(ids, f["id"])
			}
		}
		return len(ids) == 1
	})
	if err := admin.ClientKillByFilter(t.Context(), "ID", ids[0]).Err(); err != nil {
		t.Fatalf("CLIENT KILL ID %s: %v", ids[0], err)
	}
}

// Killing a node's subscriber connection from the server: the node turns unhealthy, comes
// back, calls OnReconnect (messages of the gap are lost) and receives again.
func TestRedisReconnect(t *testing.T) {
	url := redisURL(t)
	prefix := randomPrefix()
	name := strings.ReplaceAll(prefix, ":", "-") + "b"
	gate := &gatedDialer{}
	var reconnects atomic.Int32
	reconnected := make(chan struct{}, 8)

	a := newTestRedis(t, url, prefix, RedisConfig{})
	b := newTestRedis(t, url, prefix, RedisConfig{
		Client: newTestClient(t, url, func(o *redis.Options) {
			o.ClientName = name
			o.Dialer = gate.dial
		}),
		OnReconnect: func() {
			reconnects.Add(1)
			reconnected <- struct{}{}
		},
	})
	b.backoff = 20 * time.Millisecond // keep the test quick; the schedule itself is not under test
	ha, hb := startHub(t, a), startHub(t, b)
	admin := newTestClient(t, url, nil)

	s := newSink()
	subscribe(t, hb, "user:1", s)
	publish(t, ha, "user:1", "before")
	expectDelivery(t, s, "user:1", "before")

	gate.closed.Store(true)
	killPubSub(t, admin, name)
	waitUntil(t, "the node to notice the loss", func() bool { return !hb.Healthy() })

	// Node b is not subscribed anywhere now: this notice is lost for it, which is what
	// OnReconnect exists for.
	publish(t, ha, "user:1", "during")
	// Subscribing while down is recorded and honoured on reconnect.
	s2 := newSink()
	subscribe(t, hb, "user:2", s2)
	if hb.Healthy() {
		t.Fatal("healthy while it cannot connect")
	}

	gate.closed.Store(false)
	select {
	case <-reconnected:
	case <-time.After(waitFor):
		t.Fatal("OnReconnect was not called")
	}
	if !hb.Healthy() {
		t.Fatal("OnReconnect ran before the link was healthy again")
	}

	publish(t, ha, "user:1", "after")
	publish(t, ha, "user:2", "after 2")
	expectDelivery(t, s, "user:1", "after") // "during" was lost
	expectDelivery(t, s2, "user:2", "after 2")
	if n := reconnects.Load(); n != 1 {
		t.Fatalf("OnReconnect called %d times, want 1 (not for the first connection)", n)
	}
}

// An idle link is probed with PINGs and stays up; a connection that stops answering without
// failing (half-open) is detected by its missing PONG and replaced, with OnReconnect.
func TestRedisKeepalive(t *testing.T) {
	url := redisURL(t)
	prefix := randomPrefix()
	dialer := &gatedDialer{}
	var reconnects atomic.Int32
	reconnected := make(chan struct{}, 8)
	b := newTestRedis(t, url, prefix, RedisConfig{
		Client: newTestClient(t, url, func(o *redis.Options) { o.Dialer = dialer.dial }),
		OnReconnect: func() {
			reconnects.Add(1)
			reconnected <- struct{}{}
		},
	})
	b.pingEvery, b.pongWait, b.backoff = 20*time.Millisecond, 300*time.Millisecond, 20*time.Millisecond
	hb := startHub(t, b)
	ha := startHub(t, newTestRedis(t, url, prefix, RedisConfig{}))
	s := newSink()
	subscribe(t, hb, "t", s)

	// Idle: keepalive PINGs go out and are answered; nothing is torn down.
	sent := b.seq.Load()
	waitUntil(t, "keepalive pings", func() bool { return b.seq.Load() >= sent+5 })
	if n := reconnects.Load(); n != 0 || !hb.Healthy() {
		t.Fatalf("idle link: %d reconnects, healthy %v", n, hb.Healthy())
	}
	publish(t, ha, "t", "idle")
	expectDelivery(t, s, "t", "idle")

	dialer.freeze()
	select {
	case <-reconnected:
	case <-time.After(waitFor):
		t.Fatal("a connection that stopped answering was not replaced")
	}
	publish(t, ha, "t", "after")
	expectDelivery(t, s, "t", "after")
	if n := reconnects.Load(); n != 1 {
		t.Fatalf("OnReconnect called %d times, want 1", n)
	}
}

// The link checks that replies arrive in the order its commands were sent; anything else
// means go-redis replaced the connection underneath and messages may have been lost.
func TestRedisLinkDetectsReplacedConnection(t *testing.T) {
	tests := []struct {
		name    string
		replies func(l *redisLink) error
		gap     bool
	}{
		{"pongs in order", func(l *redisLink) error {
			if err := l.pongLocked("1"); err != nil {
				return err
			}
			return l.pongLocked("2")
		}, false},
		{"pong overtakes an older ping", func(l *redisLink) error { return l.pongLocked("2") }, true},
		{"pong nobody sent", func(l *redisLink) error {
			_ = l.pongLocked("1")
			_ = l.pongLocked("2")
			return l.pongLocked("3")
		}, true},
		{"expected confirmation", func(l *redisLink) error { return l.confirmLocked("ch") }, false},
		{"confirmation repeated as often as sent", func(l *redisLink) error {
			l.pending["ch"]++
			if err := l.confirmLocked("ch"); err != nil {
				return err
			}
			return l.confirmLocked("ch")
		}, false},
		{"confirmation of a re-subscription", func(l *redisLink) error {
			_ = l.confirmLocked("ch")
			return l.confirmLocked("ch")
		}, true},
		{"confirmation of another channel", func(l *redisLink) error { return l.confirmLocked("other") }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			done := make(chan struct{})
			l := &redisLink{
				pings:   []redisPing{{token: "1", done: done}, {token: "2"}},
				pending: map[string]int{"ch": 1},
			}
			err := tt.replies(l)
			var gap gapError
			if got := errors.As(err, &gap); got != tt.gap {
				t.Fatalf("gap detected = %v (%v), want %v", got, err, tt.gap)
			}
		})
	}
}
