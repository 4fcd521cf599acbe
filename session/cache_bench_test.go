package session

import (
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"runtime"
	"testing"
	"time"
)

// benchCache fills a cache with n validated sessions and returns their tokens and hash key.
func benchCache(b *testing.B, n int) (*cache, []string, []byte, time.Time) {
	b.Helper()
	c := &cache{}
	c.init(time.Hour)
	key := random(32)
	now := time.Now()
	tokens := make([]string, n)
	for i := range tokens {
		tok, raw := NewToken()
		h := hashToken(key, raw)
		s := Session{
			ID: NewID(), UserID: NewID(), VaultID: NewID(), TokenHash: h[:], Device: random(120),
			CreatedAt: now, LastSeenAt: now, IdleExpiresAt: now.Add(time.Hour), ExpiresAt: now.Add(12 * time.Hour),
		}
		c.put(h, cacheEntry{sess: s}, now, 0)
		tokens[i] = tok
	}
	return c, tokens, key, now
}

// BenchmarkValidateHotPath is what a cached validation costs before the HTTP stack: parse the
// token, hash it with the server key, look the hash up in the node's cache.
func BenchmarkValidateHotPath(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			c, tokens, key, now := benchCache(b, n)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				raw, err := ParseToken(tokens[i%n])
				if err != nil {
					b.Fatal(err)
				}
				if _, ok := c.get(hashToken(key, raw), now); !ok {
					b.Fatal("cache miss")
				}
			}
		})
		b.Run(fmt.Sprintf("entries=%d/parallel", n), func(b *testing.B) {
			c, tokens, key, now := benchCache(b, n)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					raw, _ := ParseToken(tokens[i%n])
					if _, ok := c.get(hashToken(key, raw), now); !ok {
						b.Error("cache miss")
						return
					}
					i++
				}
			})
		})
	}
}

// BenchmarkCacheGC is the time of one full collection with the cache holding n entries: what
// a large cache adds to every GC cycle of the node (the pointers of its entries are scanned).
func BenchmarkCacheGC(b *testing.B) {
	for _, n := range []int{0, 100_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			c, _, _, _ := benchCache(b, n)
			runtime.GC()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				runtime.GC()
			}
			b.StopTimer()
			runtime.KeepAlive(c)
		})
	}
}

// BenchmarkHashToken compares the keyed hash as validation computes it (an HMAC state keyed
// once and pooled) with an HMAC keyed anew for every token.
func BenchmarkHashToken(b *testing.B) {
	key := random(32)
	_, raw := NewToken()
	b.Run("pooled", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = hashToken(key, raw)
		}
	})
	b.Run("keyed-per-call", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m := hmac.New(sha256.New, key)
			m.Write(tokenHashDomain)
			m.Write(raw)
			var h TokenHash
			m.Sum(h[:0])
		}
	})
}
