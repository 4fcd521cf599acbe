package server

import (
	"context"
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
	rctx, cancel := context.WithTimeout(ctx, redisLimitTimeout)
	defer cancel()
	n, err := incr.Run(rctx, c.client, []string{c.prefix + key}, delta, window.Milliseconds()).Int64()
	if err != nil {
		if c.degraded.CompareAndSwap(false, true) {
			c.log.Warn().Err(err).Msg("Redis unreachable: rate limits are counted per node until it returns")
		}
		return c.fallback.Add(ctx, key, delta, window)
	}
	if c.degraded.CompareAndSwap(true, false) {
		c.log.Info().Msg("Redis reachable again: rate limits are shared by all nodes")
	}
	return max(n, 0), nil
}

// AddShared is Add without the fallback: while Redis is unreachable it fails instead of counting
// on this node alone. For what must be decided across all nodes or not at all (replays of
// proofs of possession).
func (c *RedisCounter) AddShared(ctx context.Context, key string, delta int64, window time.Duration) (int64, error) {
	rctx, cancel := context.WithTimeout(ctx, redisLimitTimeout)
	defer cancel()
	n, err := incr.Run(rctx, c.client, []string{c.prefix + key}, delta, window.Milliseconds()).Int64()
	if err != nil {
		return 0, fmt.Errorf("server: shared counter: %w", err)
	}
	return max(n, 0), nil
}
