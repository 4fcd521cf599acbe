package hub

import (
	"context"
	"sync/atomic"
)

// Loopback is the single-node Broker: a published message is delivered to this node's sinks
// at once, in the publisher's goroutine.
type Loopback struct {
	deliver atomic.Pointer[func(string, []byte)]
}

var _ Broker = (*Loopback)(nil)

// NewLoopback returns an in-process broker.
func NewLoopback() *Loopback { return &Loopback{} }

// Handle sets the delivery function.
func (l *Loopback) Handle(deliver func(topic string, payload []byte)) { l.deliver.Store(&deliver) }

// Publish delivers payload to this node's subscribers of topic.
func (l *Loopback) Publish(_ context.Context, topic string, payload []byte) error {
	if d := l.deliver.Load(); d != nil {
		(*d)(topic, payload)
	}
	return nil
}

// Subscribe is a no-op: the Hub already knows its local sinks.
func (l *Loopback) Subscribe(context.Context, string) error { return nil }

// Unsubscribe is a no-op.
func (l *Loopback) Unsubscribe(context.Context, string) error { return nil }

// Run waits for ctx to end; there is no link to keep.
func (l *Loopback) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// Healthy is always true.
func (l *Loopback) Healthy() bool { return true }
