package hub

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// RedisShardedConfig configures a RedisSharded broker. Zero fields mean the documented defaults.
type RedisShardedConfig struct {
	// Client reaches the cluster. Required; the caller closes it after Run returns.
	Client *redis.ClusterClient
	// Prefix, Logger and OnReconnect are as in RedisConfig.
	Prefix      string
	Logger      zerolog.Logger
	OnReconnect func()
}

// RedisSharded is the Broker for a Redis Cluster (Redis 7 or later): notices use sharded
// pub/sub, SPUBLISH and SSUBSCRIBE. A channel belongs to the shard that owns its slot, and a
// message published on it travels only within that shard, so the cluster's pub/sub capacity
// grows with its shards (a plain PUBLISH is broadcast to every node of the cluster). A node
// keeps one pub/sub connection per master that owns a channel it wants.
//
// Any trouble on any of those connections (a master that restarts or fails over, a slot that
// moves) tears them all down; Run connects again with back-off, subscribes every wanted topic
// at its current owner, and reports the re-connection (OnReconnect) so that the server
// re-checks its live connections against the store: what was published meanwhile is lost.
type RedisSharded struct {
	client      *redis.ClusterClient
	prefix      string
	log         zerolog.Logger
	onReconnect func()

	deliver atomic.Pointer[func(string, []byte)]
	healthy atomic.Bool

	backoff, maxWait, checkEvery time.Duration

	// mu guards wanted, links and down, and is held across the commands sent on the pub/sub
	// connections, so that what each master was told follows the order of changes to wanted.
	mu     sync.Mutex
	wanted map[string]struct{}
	links  map[string]*redis.PubSub // by master address; nil while disconnected
	down   chan struct{}            // closed when the current links are torn down
	failed chan error               // a receive loop that ended reports here

	wmu     sync.Mutex
	waiters map[string][]chan struct{} // channel → Subscribe calls awaiting its confirmation
	ours    map[string][]chan struct{} // channel → Unsubscribe calls awaiting their SUNSUBSCRIBE's confirmation, in order
}

var (
	_ Broker         = (*RedisSharded)(nil)
	_ BatchPublisher = (*RedisSharded)(nil)
)

// NewRedisSharded returns a sharded broker. It does no I/O: Run connects.
func NewRedisSharded(cfg RedisShardedConfig) (*RedisSharded, error) {
	if cfg.Client == nil {
		return nil, errors.New("hub: RedisShardedConfig.Client is required")
	}
	prefix := cfg.Prefix
	if prefix == "" {
		prefix = defaultRedisPrefix
	}
	return &RedisSharded{client: cfg.Client, prefix: prefix, log: cfg.Logger, onReconnect: cfg.OnReconnect,
		backoff: redisBackoff, maxWait: redisMaxWait, checkEvery: time.Second,
		wanted: map[string]struct{}{}, waiters: map[string][]chan struct{}{}, ours: map[string][]chan struct{}{}}, nil
}

func (r *RedisSharded) afterReconnect(f func()) { r.onReconnect = chain(r.onReconnect, f) }

// Handle implements Broker.
func (r *RedisSharded) Handle(deliver func(topic string, payload []byte)) { r.deliver.Store(&deliver) }

// Healthy implements Broker.
func (r *RedisSharded) Healthy() bool { return r.healthy.Load() }

// Publish implements Broker: SPUBLISH on the topic's channel.
func (r *RedisSharded) Publish(ctx context.Context, topic string, payload []byte) error {
	return wrapPublish(r.client.SPublish(ctx, r.prefix+topic, payload).Err())
}

// PublishAll implements BatchPublisher. The channels of the messages may live on different
// shards: they are sent one after the other, so that each is in Redis before the next leaves
// (the cache invalidation before the device's notice). A subscriber receives each shard on its
// own link, so the order holds within a topic but not across topics: on a cluster a device may
// hear of its revocation a few milliseconds before every node has dropped the token from its
// cache (the store refuses it already; docs/OPERATIONS.md).
func (r *RedisSharded) PublishAll(ctx context.Context, msgs []Message) error {
	for _, m := range msgs {
		if err := r.Publish(ctx, m.Topic, m.Payload); err != nil {
			return err
		}
	}
	return nil
}

// Subscribe implements Broker. Connected, it returns once the topic's master confirmed the
// subscription (or the links went down: the topic is subscribed again with all others).
func (r *RedisSharded) Subscribe(ctx context.Context, topic string) error {
	r.mu.Lock()
	r.wanted[topic] = struct{}{}
	if r.links == nil {
		r.mu.Unlock()
		return nil
	}
	confirmed := r.await(r.prefix + topic)
	err := r.subscribeLocked(ctx, topic)
	down, failed := r.down, r.failed
	r.mu.Unlock()
	return settle(ctx, "subscribe", err, failed, confirmed, down)
}

// settle finishes a Subscribe or Unsubscribe: a command that could not be sent is reported to
// Run (which rebuilds the links; the broker's wanted set already says what to subscribe), else
// it waits for the master's confirmation, the links going down, or ctx.
func settle(ctx context.Context, what string, err error, failed chan<- error, confirmed, down <-chan struct{}) error {
	if err != nil {
		report(failed, err)
		return nil
	}
	select {
	case <-confirmed:
		return nil
	case <-down:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("hub: %s: %w", what, ctx.Err())
	}
}

// Unsubscribe implements Broker. Connected, it returns once the topic's master confirmed that
// the link left the channel (or the links went down), so nothing published after it returns
// is delivered: a later Subscribe of the same topic never receives an older message.
func (r *RedisSharded) Unsubscribe(ctx context.Context, topic string) error {
	r.mu.Lock()
	delete(r.wanted, topic)
	if r.links == nil {
		r.mu.Unlock()
		return nil
	}
	channel := r.prefix + topic
	master, err := r.client.MasterForKey(ctx, channel)
	if err != nil {
		report(r.failed, err)
		r.mu.Unlock()
		return nil
	}
	ps := r.links[master.Options().Addr]
	if ps == nil {
		r.mu.Unlock()
		return nil
	}
	confirmed := make(chan struct{})
	r.wmu.Lock()
	r.ours[channel] = append(r.ours[channel], confirmed)
	r.wmu.Unlock()
	err = ps.SUnsubscribe(ctx, channel)
	down, failed := r.down, r.failed
	r.mu.Unlock()
	return settle(ctx, "unsubscribe", err, failed, confirmed, down)
}

// subscribeLocked sends SSUBSCRIBE for topic on the link to the master owning its slot,
// opening that link first if there is none. Called with mu held and links set.
func (r *RedisSharded) subscribeLocked(ctx context.Context, topic string) error {
	channel := r.prefix + topic
	master, err := r.client.MasterForKey(ctx, channel)
	if err != nil {
		return err
	}
	addr := master.Options().Addr
	ps := r.links[addr]
	if ps == nil {
		ps = master.SSubscribe(ctx)
		r.links[addr] = ps
		go r.receive(ps, r.failed)
	}
	return ps.SSubscribe(ctx, channel)
}

// await registers a wait for channel's subscription confirmation.
func (r *RedisSharded) await(channel string) <-chan struct{} {
	ch := make(chan struct{})
	r.wmu.Lock()
	r.waiters[channel] = append(r.waiters[channel], ch)
	r.wmu.Unlock()
	return ch
}

func (r *RedisSharded) confirm(channel string) {
	r.wmu.Lock()
	for _, ch := range r.waiters[channel] {
		close(ch)
	}
	delete(r.waiters, channel)
	r.wmu.Unlock()
}

// report tells Run (through failed) of trouble on the links: it tears them down and connects
// again. It never blocks: one report is enough.
func report(failed chan<- error, err error) {
	select {
	case failed <- err:
	default:
	}
}

// receive reads one link until it ends. Messages go to the hub; an end that nobody asked for
// (the link was not torn down) is reported on failed.
func (r *RedisSharded) receive(ps *redis.PubSub, failed chan<- error) {
	for {
		msg, err := ps.Receive(context.Background())
		if err != nil {
			report(failed, err)
			return
		}
		switch m := msg.(type) {
		case *redis.Message:
			if d := r.deliver.Load(); d != nil {
				(*d)(strings.TrimPrefix(m.Channel, r.prefix), []byte(m.Payload))
			}
		case *redis.Subscription:
			switch m.Kind {
			case "ssubscribe":
				r.confirm(m.Channel)
			case "sunsubscribe":
				// One this node did not ask for: the channel's slot moved to another shard
				// (Redis unsubscribes its subscribers). Connect again, at the new owner.
				r.wmu.Lock()
				asked := len(r.ours[m.Channel]) > 0
				if asked {
					close(r.ours[m.Channel][0])
					if r.ours[m.Channel] = r.ours[m.Channel][1:]; len(r.ours[m.Channel]) == 0 {
						delete(r.ours, m.Channel)
					}
				}
				r.wmu.Unlock()
				if !asked {
					report(failed, errors.New("hub: a sharded channel's slot moved"))
				}
			}
		}
	}
}

// Run implements Broker: it connects, watches the links, and connects again after trouble.
func (r *RedisSharded) Run(ctx context.Context) error {
	wait, before := r.backoff, false
	for ctx.Err() == nil {
		err := r.connect(ctx)
		if err == nil {
			if before && r.onReconnect != nil {
				r.onReconnect()
			}
			before, wait = true, r.backoff
			err = r.watch(ctx)
		}
		r.teardown()
		if ctx.Err() != nil {
			return nil
		}
		r.log.Warn().Err(err).Msg("hub: redis cluster pub/sub link lost; reconnecting")
		t := time.NewTimer(wait/2 + rand.N(wait/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		wait = min(2*wait, r.maxWait)
	}
	return nil
}

// connect checks every master, opens the links for the wanted topics and waits until every
// subscription is confirmed; then the broker is healthy.
func (r *RedisSharded) connect(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := r.client.ForEachMaster(cctx, func(ctx context.Context, m *redis.Client) error { return m.Ping(ctx).Err() }); err != nil {
		return err
	}
	r.mu.Lock()
	r.links, r.down, r.failed = map[string]*redis.PubSub{}, make(chan struct{}), make(chan error, 1)
	r.wmu.Lock()
	r.ours = map[string][]chan struct{}{} // what the old links were asked is no longer awaited (down released it)
	r.wmu.Unlock()
	var pending []<-chan struct{}
	var err error
	for topic := range r.wanted {
		pending = append(pending, r.await(r.prefix+topic))
		if err = r.subscribeLocked(cctx, topic); err != nil {
			break
		}
	}
	failed := r.failed
	r.mu.Unlock()
	if err != nil {
		return err
	}
	for _, ch := range pending {
		select {
		case <-ch:
		case err := <-failed:
			return err
		case <-cctx.Done():
			return fmt.Errorf("hub: cluster subscriptions not confirmed: %w", cctx.Err())
		}
	}
	r.healthy.Store(true)
	return nil
}

// watch returns when a link fails or a master stops answering, or nil when ctx ends.
func (r *RedisSharded) watch(ctx context.Context) error {
	r.mu.Lock()
	failed := r.failed
	r.mu.Unlock()
	t := time.NewTicker(r.checkEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-failed:
			return err
		case <-t.C:
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := r.client.ForEachMaster(cctx, func(ctx context.Context, m *redis.Client) error { return m.Ping(ctx).Err() })
			cancel()
			if err != nil && ctx.Err() == nil {
				return err
			}
		}
	}
}

// teardown closes every link; the broker is unhealthy until the next connect.
func (r *RedisSharded) teardown() {
	r.healthy.Store(false)
	r.mu.Lock()
	links, down := r.links, r.down
	r.links = nil
	r.mu.Unlock()
	for _, ps := range links {
		_ = ps.Close()
	}
	if down != nil {
		close(down)
	}
}
