package hub

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// Tuning of the pub/sub connection. They are fields of Redis so tests can shorten them.
const (
	defaultRedisPrefix = "sessiond:"
	// redisBatch channels go in one SUBSCRIBE when re-subscribing; the confirmations of a batch
	// are read before the next one is sent, so Redis's pub/sub output buffer (8 MiB soft limit
	// by default) never holds more than a batch of them.
	redisBatch = 1000
	// After redisPingEvery without traffic the link sends a PING; a PING unanswered for
	// redisPongWait means the connection is dead (or was replaced underneath, see gapError).
	redisPingEvery = 10 * time.Second
	redisPongWait  = 15 * time.Second
	redisBackoff   = 100 * time.Millisecond
	redisMaxWait   = 5 * time.Second
)

// RedisConfig configures a Redis broker. Zero fields mean the documented defaults.
type RedisConfig struct {
	// Client reaches Redis. Required. The caller owns it and closes it after Run returns; the
	// broker takes one dedicated pub/sub connection from it while Run runs and publishes
	// through its pool. A *redis.ClusterClient works too (see the package doc).
	Client redis.UniversalClient
	// Prefix is prepended to every topic to form its channel name; default "sessiond:".
	// Deployments sharing one Redis keep apart by giving each its own prefix.
	Prefix string
	// Logger receives connection losses and reconnects; the zero Logger discards them.
	// Payloads and topic names are never logged.
	Logger zerolog.Logger
	// OnReconnect is called after every successful re-connection (not after the first
	// connection), once every wanted topic is subscribed again. Messages published while the
	// link was down are lost, so the server uses it to re-check its live connections against
	// the store. It runs on a goroutine of Run, never concurrently with itself; reconnects that
	// happen while it runs are coalesced into one more call. Run waits for it before returning.
	OnReconnect func()
}

// Redis is the Broker for a deployment of several nodes: messages travel through Redis
// pub/sub, one channel per topic.
//
// A node holds exactly one pub/sub connection and subscribes to the channels of the topics its
// local sinks need, nothing more: with a topic per user, 100k users with a live device on a
// node make up to 100k channel subscriptions on that one connection, which Redis handles well
// (a subscription is a hash-table entry; re-subscribing after a reconnect is batched). A
// publisher sends each message to exactly the channel of the user it concerns, and Redis fans
// it out only to the nodes subscribed to it, so cross-node traffic grows with the notices, not
// with the number of nodes times users.
//
// The set of wanted topics lives in memory, so a connection can be rebuilt from it at any time.
// Redis pub/sub is at most once: whatever is published while the connection is down is lost,
// which is why every re-connection is reported through RedisConfig.OnReconnect.
type Redis struct {
	client      redis.UniversalClient
	prefix      string
	log         zerolog.Logger
	onReconnect func()

	deliver atomic.Pointer[func(string, []byte)]
	healthy atomic.Bool
	running atomic.Bool
	seq     atomic.Uint64 // PING tokens

	batch     int
	pingEvery time.Duration
	pongWait  time.Duration
	backoff   time.Duration
	maxWait   time.Duration

	// mu guards wanted and link, and is held across every write to the pub/sub connection, so
	// the order of SUBSCRIBE/UNSUBSCRIBE on the wire matches the order of changes to wanted:
	// Redis ends up subscribed to exactly the wanted topics.
	mu     sync.Mutex
	wanted map[string]struct{}
	link   *redisLink // nil while disconnected
}

var _ Broker = (*Redis)(nil)

// NewRedis returns a Redis broker. It starts no goroutine and does no I/O: Run connects.
func NewRedis(cfg RedisConfig) (*Redis, error) {
	if cfg.Client == nil {
		return nil, errors.New("hub: RedisConfig.Client is required")
	}
	prefix := cfg.Prefix
	if prefix == "" {
		prefix = defaultRedisPrefix
	}
	return &Redis{
		client:      cfg.Client,
		prefix:      prefix,
		log:         cfg.Logger,
		onReconnect: cfg.OnReconnect,
		batch:       redisBatch,
		pingEvery:   redisPingEvery,
		pongWait:    redisPongWait,
		backoff:     redisBackoff,
		maxWait:     redisMaxWait,
		wanted:      map[string]struct{}{},
	}, nil
}

func (r *Redis) afterReconnect(f func()) { r.onReconnect = chain(r.onReconnect, f) }

// chain returns a function running first, then then (either may be nil).
func chain(first, then func()) func() {
	if first == nil {
		return then
	}
	return func() {
		first()
		then()
	}
}

// Handle sets the function that receives messages; it is called from Run's goroutine.
func (r *Redis) Handle(deliver func(topic string, payload []byte)) { r.deliver.Store(&deliver) }

// Healthy reports whether the pub/sub connection is up and subscribed to every wanted topic.
func (r *Redis) Healthy() bool { return r.healthy.Load() }

// Publish PUBLISHes payload on topic's channel. It fails when Redis cannot be reached and
// returns when ctx ends even if the client's own timeouts are longer (go-redis ignores ctx
// deadlines on I/O unless the client has ContextTimeoutEnabled).
func (r *Redis) Publish(ctx context.Context, topic string, payload []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("hub: publish: %w", err)
	}
	channel := r.prefix + topic
	if ctx.Done() == nil { // cannot be cancelled: the client's timeouts bound the call
		return wrapPublish(r.client.Publish(ctx, channel, payload).Err())
	}
	done := make(chan error, 1)
	go func() { done <- r.client.Publish(ctx, channel, payload).Err() }()
	select {
	case err := <-done:
		return wrapPublish(err)
	case <-ctx.Done():
		// The goroutine ends with the client's timeouts; its result no longer matters.
		return fmt.Errorf("hub: publish: %w", context.Cause(ctx))
	}
}

// PublishAll implements [BatchPublisher]: the messages go in one pipeline, so they cost one
// round trip and reach every subscriber in order. Like Publish, an error means they must be
// treated as lost.
func (r *Redis) PublishAll(ctx context.Context, msgs []Message) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("hub: publish: %w", err)
	}
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, m := range msgs {
			p.Publish(ctx, r.prefix+m.Topic, m.Payload)
		}
		return nil
	})
	return wrapPublish(err)
}

func wrapPublish(err error) error {
	if err != nil {
		return fmt.Errorf("hub: publish: %w", err)
	}
	return nil
}

// Subscribe records topic as wanted and, when connected, subscribes its channel and returns
// once Redis has confirmed it. When not connected, or when the connection drops before the
// confirmation, it returns nil: the topic is subscribed with all others when Run reconnects.
// It fails only when ctx ends first; the topic then stays wanted.
func (r *Redis) Subscribe(ctx context.Context, topic string) error {
	r.mu.Lock()
	r.wanted[topic] = struct{}{}
	l := r.link
	if l == nil {
		r.mu.Unlock()
		return nil
	}
	// The PING after SUBSCRIBE is the confirmation marker: replies come in order, so its PONG
	// means Redis has executed the SUBSCRIBE.
	confirmed := make(chan struct{})
	err := l.subscribeLocked([]string{r.prefix + topic})
	if err == nil {
		err = l.pingLocked(context.Background(), r.token(), confirmed)
	}
	r.mu.Unlock()
	if err != nil {
		l.fail()
		r.log.Debug().Err(err).Msg("hub: redis subscribe not sent; the topic is subscribed on reconnect")
		return nil
	}
	select {
	case <-confirmed: // or the link dropped: either way the topic is in the hands of Run
		return nil
	case <-ctx.Done():
		return fmt.Errorf("hub: subscribe: %w", context.Cause(ctx))
	}
}

// Unsubscribe forgets topic and, when connected, unsubscribes its channel. It does not wait
// for Redis: a message still in flight reaches the Hub, which has no sink left for it.
func (r *Redis) Unsubscribe(_ context.Context, topic string) error {
	r.mu.Lock()
	if _, ok := r.wanted[topic]; !ok {
		r.mu.Unlock()
		return nil
	}
	delete(r.wanted, topic)
	l := r.link
	var err error
	if l != nil {
		err = l.ps.Unsubscribe(context.Background(), r.prefix+topic)
	}
	r.mu.Unlock()
	if err != nil {
		// The topic is no longer wanted, so the next connection will not subscribe it.
		l.fail()
	}
	return nil
}

// Run keeps the pub/sub connection up until ctx ends: it connects, subscribes every wanted
// topic, delivers messages, and after a loss reconnects with exponential back-off and jitter
// (100ms doubling to 5s), calling OnReconnect after each re-connection. It returns nil when ctx
// ends, and an error only when called while already running.
func (r *Redis) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("hub: Redis.Run is already running")
	}
	defer r.running.Store(false)

	reconnected := make(chan struct{}, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-reconnected:
				if r.onReconnect != nil {
					r.onReconnect()
				}
			}
		}
	})

	wait, connectedBefore := r.backoff, false
	for {
		up, err := r.session(ctx, connectedBefore, reconnected)
		if ctx.Err() != nil {
			return nil
		}
		if up {
			connectedBefore = true
			wait = r.backoff
			r.log.Warn().Err(err).Msg("hub: redis pub/sub connection lost; reconnecting")
		} else {
			r.log.Warn().Err(err).Dur("retry_in", wait).Msg("hub: redis pub/sub connection failed")
		}
		t := time.NewTimer(wait/2 + rand.N(wait/2+1)) // jitter spreads the nodes' reconnects
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		if !up {
			wait = min(wait*2, r.maxWait)
		}
	}
}

// session runs one pub/sub connection from dial to loss. up reports whether it got as far as
// being subscribed to every wanted topic.
//
// Each session uses a fresh redis.PubSub and abandons it at the first error. A PubSub
// reconnects by itself after an error and re-subscribes its channels, which would hide the
// messages lost meanwhile; abandoning it instead makes every loss go through Run's loop and
// OnReconnect. go-redis can also swap the connection without an error (endpoint hand-off on
// maintenance notifications); the link notices that from its replies (see gapError).
func (r *Redis) session(ctx context.Context, reconnect bool, reconnected chan<- struct{}) (up bool, err error) {
	// The caller's cancellation must not reach go-redis: a cancelled context counts as a bad
	// connection there and triggers the silent reconnect. Closing the PubSub stops it instead.
	ioCtx := context.WithoutCancel(ctx)
	ps := r.client.Subscribe(ioCtx)
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer stop()
	defer ps.Close()

	l := &redisLink{ps: ps, pending: map[string]int{}}
	// A PubSub dials on its first command; dial before publishing the link so Subscribe never
	// waits for a dial while holding r.mu. This one command gets the cancellable ctx so that
	// Run ends promptly even while a dial hangs; a cancellation here can only end the session.
	if err := l.pingLocked(ctx, r.token(), nil); err != nil {
		return false, err
	}
	r.mu.Lock()
	r.link = l
	topics := slices.Collect(maps.Keys(r.wanted))
	r.mu.Unlock()
	defer r.drop(l)

	for i := 0; ; i += r.batch {
		batch := topics[i:min(i+r.batch, len(topics))]
		confirmed := make(chan struct{})
		r.mu.Lock()
		// Topics unsubscribed since the snapshot already sent UNSUBSCRIBE on this link;
		// subscribing them now would resurrect them.
		batch = slices.DeleteFunc(batch, func(t string) bool { _, ok := r.wanted[t]; return !ok })
		channels := make([]string, len(batch))
		for j, t := range batch {
			channels[j] = r.prefix + t
		}
		err := l.subscribeLocked(channels)
		if err == nil {
			err = l.pingLocked(context.Background(), r.token(), confirmed)
		}
		r.mu.Unlock()
		if err != nil {
			return false, err
		}
		if err := r.receive(ioCtx, l, confirmed); err != nil {
			return false, err
		}
		if i+r.batch >= len(topics) {
			break
		}
	}

	r.healthy.Store(true) // first, so OnReconnect sees the link up
	if reconnect {
		select {
		case reconnected <- struct{}{}:
		default: // a call is already pending; it will see the current state
		}
	}
	r.log.Info().Int("topics", len(topics)).Bool("reconnect", reconnect).Msg("hub: redis pub/sub connected")
	return true, r.receive(ioCtx, l, nil)
}

// drop retires l: the node is unhealthy until the next session is subscribed, and whoever
// waits for a confirmation on l is released (their topics are wanted and will be subscribed).
func (r *Redis) drop(l *redisLink) {
	r.healthy.Store(false)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.link == l {
		r.link = nil
	}
	for _, p := range l.pings {
		if p.done != nil {
			close(p.done)
		}
	}
	l.pings, l.pending = nil, nil
}

// receive reads l until until is closed (nil: until the connection fails), delivering
// messages and checking that the replies to the link's own commands arrive as sent.
func (r *Redis) receive(ioCtx context.Context, l *redisLink, until <-chan struct{}) error {
	for {
		select {
		case <-until:
			return nil
		default:
		}

		timeout := r.pingEvery
		r.mu.Lock()
		if len(l.pings) > 0 {
			timeout = min(timeout, time.Until(l.pings[0].sent.Add(r.pongWait)))
		}
		r.mu.Unlock()
		if timeout <= 0 {
			return errors.New("hub: redis did not answer PING in time")
		}

		msg, err := l.ps.ReceiveTimeout(ioCtx, timeout)
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return err
			}
			// Silence: probe the connection unless a PING is already out (its deadline is
			// checked at the top of the loop).
			r.mu.Lock()
			if len(l.pings) == 0 {
				err = l.pingLocked(context.Background(), r.token(), nil)
			} else {
				err = nil
			}
			r.mu.Unlock()
			if err != nil {
				return err
			}
			continue
		}

		switch m := msg.(type) {
		case *redis.Message:
			topic, ok := strings.CutPrefix(m.Channel, r.prefix)
			if d := r.deliver.Load(); ok && d != nil {
				(*d)(topic, []byte(m.Payload))
			}
		case *redis.Pong:
			r.mu.Lock()
			err = l.pongLocked(m.Payload)
			r.mu.Unlock()
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				r.mu.Lock()
				err = l.confirmLocked(m.Channel)
				r.mu.Unlock()
			}
		}
		if err != nil {
			return err
		}
	}
}

func (r *Redis) token() string { return strconv.FormatUint(r.seq.Add(1), 36) }

// gapError reports that the replies on a link do not match what was sent on it. go-redis
// replaced the connection underneath and re-subscribed on a new one: messages may have been
// lost in between, so the link is dropped and rebuilt like after any other failure.
type gapError struct{ what string }

func (e gapError) Error() string {
	return "hub: redis pub/sub connection was replaced underneath (" + e.what + ")"
}

// redisLink is one pub/sub connection. Its fields are guarded by Redis.mu, which is held while
// writing to ps, so pings and pending record the commands in the order they hit the wire.
type redisLink struct {
	ps *redis.PubSub
	// pings are the PINGs sent and not yet answered, oldest first. A connection answers in
	// order, so a PONG for anything but the oldest means earlier PINGs went down with a
	// connection that go-redis silently replaced.
	pings []redisPing
	// pending counts the SUBSCRIBE confirmations still expected per channel. A confirmation
	// nobody asked for comes from go-redis re-subscribing on a replacement connection.
	pending map[string]int
}

type redisPing struct {
	token string
	sent  time.Time
	done  chan struct{} // closed on the PONG or when the link drops; nil when nobody waits
}

func (l *redisLink) subscribeLocked(channels []string) error {
	if len(channels) == 0 {
		return nil
	}
	for _, c := range channels {
		l.pending[c]++
	}
	return l.ps.Subscribe(context.Background(), channels...)
}

func (l *redisLink) pingLocked(ctx context.Context, token string, done chan struct{}) error {
	l.pings = append(l.pings, redisPing{token: token, sent: time.Now(), done: done})
	return l.ps.Ping(ctx, token)
}

func (l *redisLink) pongLocked(token string) error {
	if len(l.pings) == 0 || l.pings[0].token != token {
		return gapError{"unexpected PONG"}
	}
	if done := l.pings[0].done; done != nil {
		close(done)
	}
	l.pings[0] = redisPing{}
	l.pings = l.pings[1:]
	return nil
}

func (l *redisLink) confirmLocked(channel string) error {
	n := l.pending[channel]
	if n == 0 {
		return gapError{"unexpected subscription"}
	}
	if n == 1 {
		delete(l.pending, channel)
	} else {
		l.pending[channel] = n - 1
	}
	return nil
}

// fail closes the connection after a failed write so the receive loop ends the session
// (rather than go-redis reconnecting quietly on the next read).
func (l *redisLink) fail() { _ = l.ps.Close() }
