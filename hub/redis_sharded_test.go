package hub

import (
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sessiond/sessiond/internal/rediscluster"
)

func newTestSharded(t *testing.T, c *rediscluster.Cluster, prefix string) *RedisSharded {
	t.Helper()
	opts, err := redis.ParseClusterURL(c.URL())
	if err != nil {
		t.Fatal(err)
	}
	client := redis.NewClusterClient(opts)
	t.Cleanup(func() { client.Close() })
	r, err := NewRedisSharded(RedisShardedConfig{Client: client, Prefix: prefix, Logger: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRedisShardedConformance runs the broker contract on a real three-master Redis Cluster
// with sharded pub/sub: two nodes, topics spread over the shards.
func TestRedisShardedConformance(t *testing.T) {
	c := rediscluster.Start(t)
	runBrokerConformance(t, false, func(t *testing.T) (Broker, Broker) {
		prefix := randomPrefix()
		return newTestSharded(t, c, prefix), newTestSharded(t, c, prefix)
	})
}

// TestRedisShardedMasterRestart: a master of the cluster is killed and started again. The
// brokers see their links go (unhealthy), connect again once the cluster is whole, report the
// re-connection, and messages flow again on topics of every shard.
func TestRedisShardedMasterRestart(t *testing.T) {
	c := rediscluster.Start(t)
	prefix := randomPrefix()
	var reconnects atomic.Int32
	pubB := newTestSharded(t, c, prefix)
	recvB := newTestSharded(t, c, prefix)
	recvB.onReconnect = func() { reconnects.Add(1) }
	pub, recv := startHub(t, pubB), startHub(t, recvB)
	topics := []string{"u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8"} // over the three shards
	sinks := map[string]*testSink{}
	for _, topic := range topics {
		sinks[topic] = newSink()
		subscribe(t, recv, topic, sinks[topic])
	}
	for _, topic := range topics {
		publish(t, pub, topic, "before")
		expectDelivery(t, sinks[topic], topic, "before")
	}
	c.Stop(1)
	waitUntil(t, "the receiving broker unhealthy", func() bool { return !recvB.Healthy() })
	c.Restart(1)
	waitUntil(t, "the receiving broker healthy again", func() bool { return recvB.Healthy() && reconnects.Load() > 0 })
	waitUntil(t, "the publishing broker healthy again", pubB.Healthy)
	for _, topic := range topics {
		publish(t, pub, topic, "after")
		expectDelivery(t, sinks[topic], topic, "after")
	}
}
