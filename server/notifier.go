package server

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/sessiond/sessiond/hub"
	"github.com/sessiond/sessiond/protocol"
	"github.com/sessiond/sessiond/session"
)

// Hub topics. Device notices go to one topic per user; cache invalidations go to a topic every
// node subscribes to.
const nodesTopic = "nodes"

func userTopic(userID string) string { return "user:" + userID }

// Event kinds carried over the hub.
const (
	eventRevoked     = "revoked"
	eventChanged     = "changed"
	eventInvalidated = "invalidated"
)

// event is the hub payload: what happened, for the devices and nodes that must know.
type event struct {
	Kind     string            `json:"k"`
	At       int64             `json:"at,omitempty"` // revoked: when the revoking node published it (unix ns)
	IDs      []string          `json:"ids,omitempty"`
	Reason   string            `json:"reason,omitempty"`
	Sessions []protocol.Device `json:"sessions,omitempty"`
}

// Notifier implements session.Notifier over the hub. It needs the manager to list a user's
// sessions, and the manager needs it: Attach closes the loop after both exist.
type Notifier struct {
	hub      *hub.Hub
	log      zerolog.Logger
	metrics  *Metrics
	failedAt atomic.Int64 // unix ns of the last failed publish; 0 after a success
}

var _ session.Notifier = (*Notifier)(nil)

// NewNotifier returns a Notifier publishing on h.
func NewNotifier(h *hub.Hub, log zerolog.Logger) *Notifier { return &Notifier{hub: h, log: log} }

// WithMetrics makes the Notifier time its publishes in m (sessiond_hub_publish_seconds).
func (n *Notifier) WithMetrics(m *Metrics) *Notifier {
	n.metrics = m
	return n
}

func (n *Notifier) publish(ctx context.Context, topic string, ev event) {
	n.publishAll(ctx, ev.Kind, msg(topic, ev))
}

func msg(topic string, ev event) hub.Message {
	payload, _ := json.Marshal(ev)
	return hub.Message{Topic: topic, Payload: payload}
}

// degradedPublishWait is how long an action waits for a publish while the hub is degraded
// (the node's link to the broker is down): long enough for a broker that is up after all (only
// this node's link broke) to take it, in order, before the action answers; short enough that a
// user's own action does not wait on a broker that is down, whose client would retry for
// seconds. Once a publish has failed while degraded, publishes are left out for
// degradedRetryAfter (one is tried again after it): devices are told what they missed when
// the hubs reconnect (reconcile), and while they are degraded nodes read the store, not their
// caches, so a revocation is enforced at once all the same.
const (
	degradedPublishWait = 100 * time.Millisecond
	degradedRetryAfter  = time.Second
)

// publishAll sends msgs in one round trip where the broker allows, timed in the metrics.
func (n *Notifier) publishAll(ctx context.Context, kind string, msgs ...hub.Message) {
	if n.hub.Healthy() {
		n.publishNow(ctx, kind, msgs)
		return
	}
	if failed := n.failedAt.Load(); failed != 0 && time.Since(time.Unix(0, failed)) < degradedRetryAfter {
		// Counted like the other notices no device got in time (type "any": this is a hub
		// message, which may carry several notices).
		n.metrics.notice("any", "left_to_reconcile")
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.publishNow(ctx, kind, msgs)
	}()
	t := time.NewTimer(degradedPublishWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

func (n *Notifier) publishNow(ctx context.Context, kind string, msgs []hub.Message) {
	start := time.Now()
	err := n.hub.PublishAll(context.WithoutCancel(ctx), msgs)
	if n.metrics != nil {
		n.metrics.publishSecs.Observe(time.Since(start).Seconds())
	}
	if err != nil {
		n.failedAt.Store(time.Now().UnixNano())
		// The store already holds the change; devices learn it on their next validation, or
		// when the hubs reconnect.
		n.log.Warn().Err(err).Str("kind", kind).Msg("notice not published")
		return
	}
	n.failedAt.Store(0)
}

// Revoked implements session.Notifier. The cache invalidation for every node and the notice
// for the user's devices go in one round trip, the invalidation first: a device told of its
// revocation never finds its token still cached on another node (on a Redis Cluster the two
// travel on different shards, so only within a few milliseconds: hub.RedisSharded.PublishAll).
func (n *Notifier) Revoked(ctx context.Context, userID string, ids []string, reason string) {
	n.publishAll(ctx, eventRevoked, msg(nodesTopic, event{Kind: eventInvalidated, IDs: ids}),
		msg(userTopic(userID), event{Kind: eventRevoked, IDs: ids, Reason: reason, At: time.Now().UnixNano()}))
}

// Changed implements session.Notifier.
func (n *Notifier) Changed(ctx context.Context, userID string, sessions []session.Info) {
	n.publish(ctx, userTopic(userID), event{Kind: eventChanged, Sessions: deviceList(sessions, "")})
}

// Rotated implements session.Notifier.
func (n *Notifier) Rotated(ctx context.Context, _ string, sessionID string) {
	n.publish(ctx, nodesTopic, event{Kind: eventInvalidated, IDs: []string{sessionID}})
}

// Invalidator is the node's sink on the nodes topic: it drops cached validations that another
// node (or this one) changed.
type Invalidator struct{ Manager Sessions }

// Deliver implements hub.Sink.
func (i Invalidator) Deliver(_ string, payload []byte) {
	var ev event
	if json.Unmarshal(payload, &ev) == nil && ev.Kind == eventInvalidated {
		i.Manager.Invalidate(ev.IDs...)
	}
}

// SubscribeNode subscribes the node-wide sinks; cmd calls it once at start.
func SubscribeNode(ctx context.Context, h *hub.Hub, m Sessions) error {
	return h.Subscribe(ctx, nodesTopic, Invalidator{Manager: m})
}
