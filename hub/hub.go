package hub

import (
	"context"
	"hash/maphash"
	"sync"
)

// Sink receives the messages of the topics it subscribed to. Deliver must not block.
type Sink interface {
	Deliver(topic string, payload []byte)
}

// Broker carries messages between the nodes of a deployment.
type Broker interface {
	// Handle sets the function that receives every message of a topic this node subscribed to.
	// It is called once, before Run and before any other method.
	Handle(deliver func(topic string, payload []byte))
	// Publish sends payload to every node subscribed to topic, this one included. Delivery is
	// at most once. An error means the message must be treated as lost: a broker reached over
	// the network cannot always tell whether a write that timed out left the node.
	Publish(ctx context.Context, topic string, payload []byte) error
	// Subscribe makes this node receive topic's messages; when it returns nil, a message
	// published afterwards is delivered (if the link is up; a broker that is down records the
	// topic and subscribes it when it connects). It is idempotent. An error leaves it unknown
	// whether the node receives topic; calling Subscribe or Unsubscribe again settles it.
	Subscribe(ctx context.Context, topic string) error
	// Unsubscribe stops receiving topic's messages; messages already in flight may still be
	// delivered. It is idempotent.
	Unsubscribe(ctx context.Context, topic string) error
	// Run keeps the cross-node link up until ctx ends.
	Run(ctx context.Context) error
	// Healthy reports whether messages currently flow between nodes.
	Healthy() bool
}

// linkState is what the broker was last told about a topic.
type linkState uint8

const (
	linkNone  linkState = iota // not subscribed (the zero value: absent from Hub.links)
	linkUp                     // subscribed
	linkDirty                  // the last broker call failed: the next one must be made
)

// lockStripes bounds the memory of per-topic ordering locks; topics that share a stripe only
// wait for each other's broker round trip.
const lockStripes = 256

// Hub fans messages out to the sinks of this node.
type Hub struct {
	broker Broker
	seed   maphash.Seed

	mu    sync.RWMutex
	subs  map[string]map[Sink]struct{}
	links map[string]linkState

	// order serializes the broker calls of a topic. Without it a first Subscribe and a last
	// Unsubscribe racing on one topic could reach the broker in the opposite order and leave
	// the node unsubscribed while it has sinks.
	order [lockStripes]sync.Mutex

	onReconnect []func() // run after the broker re-connected
}

// New returns a Hub over broker.
func New(b Broker) *Hub {
	h := &Hub{
		broker: b,
		seed:   maphash.MakeSeed(),
		subs:   map[string]map[Sink]struct{}{},
		links:  map[string]linkState{},
	}
	b.Handle(h.deliver)
	if r, ok := b.(reconnecting); ok {
		r.afterReconnect(h.reconnected)
	}
	return h
}

// reconnecting is a broker that reports its re-connections (the Redis ones).
type reconnecting interface {
	// afterReconnect adds f to what runs after every re-connection. Called before Run.
	afterReconnect(f func())
}

// OnReconnect registers f to run after every re-connection of the broker: messages published
// meanwhile may be lost, so whoever holds state built from them re-checks it (the server
// reconciles its live connections with the store). Register before Run.
func (h *Hub) OnReconnect(f func()) {
	h.mu.Lock()
	h.onReconnect = append(h.onReconnect, f)
	h.mu.Unlock()
}

func (h *Hub) reconnected() {
	h.mu.RLock()
	fs := append([]func(){}, h.onReconnect...)
	h.mu.RUnlock()
	for _, f := range fs {
		f()
	}
}

// Subscribe adds s to topic. The node subscribes at the broker with its first local sink, and
// Subscribe returns once the broker has confirmed it, so a message published after Subscribe
// returns reaches s. On error s stays subscribed (Unsubscribe removes it) and the next
// Subscribe or Unsubscribe of topic retries the broker.
func (h *Hub) Subscribe(ctx context.Context, topic string, s Sink) error {
	h.mu.Lock()
	set, ok := h.subs[topic]
	if !ok {
		set = map[Sink]struct{}{}
		h.subs[topic] = set
	}
	set[s] = struct{}{}
	h.mu.Unlock()
	// Reconcile even when s is not the first sink: it waits for a first sink's broker call
	// still in flight, so the confirmation promise above holds for every sink.
	return h.reconcile(ctx, topic)
}

// Unsubscribe removes s from topic; the node unsubscribes at the broker with its last sink.
// Removing a sink that is not subscribed is a no-op.
func (h *Hub) Unsubscribe(ctx context.Context, topic string, s Sink) error {
	h.mu.Lock()
	if set, ok := h.subs[topic]; ok {
		delete(set, s)
		if len(set) == 0 {
			delete(h.subs, topic)
		}
	}
	h.mu.Unlock()
	return h.reconcile(ctx, topic)
}

// reconcile brings the broker in line with whether topic has local sinks. Each caller changed
// the sinks before calling it, and calls are serialized per topic, so the last one to run sees
// the final state: the broker converges whatever the interleaving.
func (h *Hub) reconcile(ctx context.Context, topic string) error {
	m := &h.order[maphash.String(h.seed, topic)%lockStripes]
	m.Lock()
	defer m.Unlock()

	h.mu.RLock()
	want := len(h.subs[topic]) > 0
	state := h.links[topic]
	h.mu.RUnlock()
	if (want && state == linkUp) || (!want && state == linkNone) {
		return nil
	}

	var err error
	if want {
		err = h.broker.Subscribe(ctx, topic)
	} else {
		err = h.broker.Unsubscribe(ctx, topic)
	}

	h.mu.Lock()
	switch {
	case err != nil:
		h.links[topic] = linkDirty
	case want:
		h.links[topic] = linkUp
	default:
		delete(h.links, topic)
	}
	h.mu.Unlock()
	return err
}

// Publish sends payload to every sink of topic on every node.
func (h *Hub) Publish(ctx context.Context, topic string, payload []byte) error {
	return h.broker.Publish(ctx, topic, payload)
}

// Message is one publish of PublishAll.
type Message struct {
	Topic   string
	Payload []byte
}

// BatchPublisher is a Broker that can send several messages in one round trip, in order.
type BatchPublisher interface {
	PublishAll(ctx context.Context, msgs []Message) error
}

// PublishAll publishes msgs in order: in one round trip when the broker can (Redis
// pipelining), else one by one.
func (h *Hub) PublishAll(ctx context.Context, msgs []Message) error {
	if b, ok := h.broker.(BatchPublisher); ok && len(msgs) > 1 {
		return b.PublishAll(ctx, msgs)
	}
	for _, m := range msgs {
		if err := h.broker.Publish(ctx, m.Topic, m.Payload); err != nil {
			return err
		}
	}
	return nil
}

// Run keeps the broker's link up until ctx ends.
func (h *Hub) Run(ctx context.Context) error { return h.broker.Run(ctx) }

// Healthy reports whether the cross-node link is up.
func (h *Hub) Healthy() bool { return h.broker.Healthy() }

func (h *Hub) deliver(topic string, payload []byte) {
	h.mu.RLock()
	set := h.subs[topic]
	sinks := make([]Sink, 0, len(set))
	for s := range set {
		sinks = append(sinks, s)
	}
	h.mu.RUnlock()
	for _, s := range sinks {
		s.Deliver(topic, payload)
	}
}
