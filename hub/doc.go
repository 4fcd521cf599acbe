// Package hub routes notices to the device connections that must see them, on every node.
//
// A Hub keeps, per node, which Sinks (device connections) are subscribed to which topic (the
// server uses one topic per user plus a node-wide one) and fans out every message published on
// a topic to them. The cross-node leg is a Broker: Loopback keeps everything in the process (one
// node), Redis carries messages between nodes through Redis pub/sub. Payloads are opaque bytes.
//
// # Delivery
//
// Delivery is at most once with every broker. The session store is the authority: a notice
// only makes a device learn sooner what its next validation would tell it anyway. With Redis,
// whatever is published while a node's pub/sub connection is down is lost for that node, so
// Redis reports every re-connection (RedisConfig.OnReconnect) and the server then re-checks the
// node's live connections against the store. Healthy reports whether the link is up.
//
// # Redis: scaling
//
// Each topic is a Redis channel named Prefix+topic. A node subscribes only to the channels its
// local sinks need, all on one dedicated pub/sub connection: the Hub subscribes a topic at the
// broker with its first local sink and unsubscribes it with its last. With one topic per user,
// a node with live devices of 100k users holds up to 100k channel subscriptions on that single
// connection, which Redis handles well; after a reconnect they are re-subscribed in batches of
// a thousand per SUBSCRIBE. A publisher sends a notice to exactly the channel of the user it
// concerns, and Redis forwards it only to the connections subscribed to that channel: cross-node
// traffic is proportional to notices, and a node never sees notices for users it does not host.
//
// # Redis: cluster
//
// Redis pub/sub does not shard by itself. In a Redis Cluster a plain PUBLISH is broadcast over
// the cluster bus to every node, so a subscriber may connect to any node (Redis works with a
// *redis.ClusterClient as it is) but every shard carries every message: publish capacity does
// not grow with the number of shards. Sharded pub/sub (Redis 7: SSUBSCRIBE, SPUBLISH) routes
// each channel to the one shard owning its hash slot, so traffic spreads across shards; a node
// then needs a pub/sub connection per shard owning any of its channels (one SSUBSCRIBE may only
// name channels of one slot) and must move subscriptions when slots migrate. Redis implements
// plain pub/sub on one Redis (with a replica for failover); RedisSharded implements sharded
// pub/sub on a cluster: one link per master, every subscription sent to its channel's owner,
// and all links rebuilt (with the re-connection reported) when a master is lost or Redis
// unsubscribes a channel whose slot moved. Its PublishAll sends one message after the other,
// since the channels of a batch may live on different shards.
//
// # Concurrency
//
// Hub and the brokers are safe for concurrent use. Sink.Deliver is called from the
// broker's delivery goroutine (with Redis, Run's goroutine; with Loopback, the publisher's) and
// must not block: a sink queues the payload or, when it cannot keep up, closes its connection.
// Hub serializes the broker calls of a topic, so its subscription state converges however
// sinks come and go. Background work runs only in Run; constructors start no goroutines.
package hub
