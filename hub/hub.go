package hub

import (
	"context"
	"errors"
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
	// at most once; an error means the message certainly did not leave this node.
	Publish(ctx context.Context, topic string, payload []byte) error
	// Subscribe makes this node receive topic's messages.
	Subscribe(ctx context.Context, topic string) error
	// Unsubscribe stops receiving topic's messages.
	Unsubscribe(ctx context.Context, topic string) error
	// Run keeps the cross-node link up until ctx ends.
	Run(ctx context.Context) error
	// Healthy reports whether messages currently flow between nodes.
	Healthy() bool
}

// ErrClosed is returned by a broker used after Close.
var ErrClosed = errors.New("hub: closed")

// Hub fans messages out to the sinks of this node.
type Hub struct {
	broker Broker
	mu     sync.RWMutex
	subs   map[string]map[Sink]struct{}
}

// New returns a Hub over broker.
func New(b Broker) *Hub {
	h := &Hub{broker: b, subs: map[string]map[Sink]struct{}{}}
	b.Handle(h.deliver)
	return h
}

// Subscribe adds s to topic. The node subscribes at the broker with its first local sink.
func (h *Hub) Subscribe(ctx context.Context, topic string, s Sink) error {
	h.mu.Lock()
	set, ok := h.subs[topic]
	if !ok {
		set = map[Sink]struct{}{}
		h.subs[topic] = set
	}
	set[s] = struct{}{}
	h.mu.Unlock()
	if ok {
		return nil
	}
	return h.broker.Subscribe(ctx, topic)
}

// Unsubscribe removes s from topic; the node unsubscribes at the broker with its last sink.
func (h *Hub) Unsubscribe(ctx context.Context, topic string, s Sink) error {
	h.mu.Lock()
	set := h.subs[topic]
	delete(set, s)
	last := len(set) == 0 && set != nil
	if last {
		delete(h.subs, topic)
	}
	h.mu.Unlock()
	if !last {
		return nil
	}
	return h.broker.Unsubscribe(ctx, topic)
}

// Publish sends payload to every sink of topic on every node.
func (h *Hub) Publish(ctx context.Context, topic string, payload []byte) error {
	return h.broker.Publish(ctx, topic, payload)
}

// Run keeps the broker's link up until ctx ends.
func (h *Hub) Run(ctx context.Context) error { return h.broker.Run(ctx) }

// Healthy reports whether the cross-node link is up.
func (h *Hub) Healthy() bool { return h.broker.Healthy() }

// Topics returns the topics with local sinks (for re-subscribing after a broker reconnect).
func (h *Hub) Topics() []string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]string, 0, len(h.subs))
	for t := range h.subs {
		out = append(out, t)
	}
	return out
}

// Sinks calls f for every sink subscribed on this node, once per sink.
func (h *Hub) Sinks(f func(Sink)) {
	h.mu.RLock()
	seen := map[Sink]struct{}{}
	for _, set := range h.subs {
		for s := range set {
			seen[s] = struct{}{}
		}
	}
	h.mu.RUnlock()
	for s := range seen {
		f(s)
	}
}

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
