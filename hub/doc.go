// Package hub routes notices to the device connections that must see them, on every node.
//
// A Hub keeps, per node, which Sinks (device connections) are subscribed to which topic (the
// server uses one topic per user plus a node-wide one) and fans out every message published on
// a topic to them. The cross-node leg is a Broker: Loopback keeps everything in the process (one
// node), Redis carries messages between nodes through Redis pub/sub. Payloads are opaque bytes.
//
// Concurrency: Hub and the brokers are safe for concurrent use. Sink.Deliver is called from the
// broker's delivery goroutine (or, with Loopback, from the publisher's) and must not block: a
// sink queues the payload or, when it cannot keep up, closes its connection. Background work
// runs only in Run; constructors start no goroutines.
package hub
