package server

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// RedisCounter counts the login limits in Redis, so that N nodes share one budget instead of
// multiplying it. When Redis does not answer, it counts in process (per node) until Redis is
// back, and says so once in the log.
type RedisCounter struct {
	client   redis.UniversalClient
	prefix   string
	log      zerolog.Logger
	fallback *MemoryCounter
	degraded atomic.Bool
	probed   atomic.Int64 // unix ns of the last try of Redis while degraded
}

// redisProbeInterval is how often, while Redis does not answer, a count tries it again; the
// others are counted on this node at once instead of each waiting redisLimitTimeout.
const redisProbeInterval = time.Second

// skipRedis reports whether this count should go to the fallback without trying Redis.
func (c *RedisCounter) skipRedis() bool {
	if !c.degraded.Load() {
		return false
	}
	now := time.Now().UnixNano()
	last := c.probed.Load()
	if now-last < int64(redisProbeInterval) {
		return true
	}
	return !c.probed.CompareAndSwap(last, now) // another count is the probe
}

var _ Counter = (*RedisCounter)(nil)

// NewRedisCounter returns a counter over client with keys under prefix.
func NewRedisCounter(client redis.UniversalClient, prefix string, log zerolog.Logger) *RedisCounter {
	return &RedisCounter{client: client, prefix: prefix + "limit:", log: log, fallback: NewMemoryCounter()}
}

// incr adds to a counter and starts its window on first use, atomically.
var incr = redis.NewScript(`
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return n`)

// redisLimitTimeout bounds how long a login waits for the shared counter before counting
// locally: a slow Redis must not slow every login down.
const redisLimitTimeout = 250 * time.Millisecond

// Add implements Counter.
func (c *RedisCounter) Add(ctx context.Context, key string, delta int64, window time.Duration) (int64, error) {
	n, err := c.shared(ctx, key, delta, window)
	if err != nil {
		return c.fallback.Add(ctx, key, delta, window)
	}
	return n, nil
}

// AddShared is Add without the fallback: while Redis is unreachable it fails instead of counting
// on this node alone. For what must be decided across all nodes or not at all (replays of
// proofs of possession).
func (c *RedisCounter) AddShared(ctx context.Context, key string, delta int64, window time.Duration) (int64, error) {
	return c.shared(ctx, key, delta, window)
}

// shared counts in Redis, or fails: at once while Redis is known to be unreachable (but for
// one try every redisProbeInterval), else within redisLimitTimeout.
func (c *RedisCounter) shared(ctx context.Context, key string, delta int64, window time.Duration) (int64, error) {
	if c.skipRedis() {
		return 0, errors.New("server: shared counter: Redis unreachable")
	}
	rctx, cancel := context.WithTimeout(ctx, redisLimitTimeout)
	defer cancel()
	n, err := incr.Run(rctx, c.client, []string{c.prefix + key}, delta, window.Milliseconds()).Int64()
	if err != nil {
		c.probed.Store(time.Now().UnixNano())
		if c.degraded.CompareAndSwap(false, true) {
			c.log.Warn().Err(err).Msg("Redis unreachable: rate limits are counted per node until it returns")
		}
		return 0, fmt.Errorf("server: shared counter: %w", err)
	}
	if c.degraded.CompareAndSwap(true, false) {
		c.log.Info().Msg("Redis reachable again: rate limits are shared by all nodes")
	}
	return max(n, 0), nil
}
