package session

import (
	"bytes"
	"reflect"
	"testing"
	"time"
)

func cacheTestSession(now time.Time) (Session, TokenHash) {
	_, raw := NewToken()
	h := hashToken(random(32), raw)
	return Session{
		ID: NewID(), UserID: NewID(), VaultID: NewID(), TokenHash: h[:], Device: random(150),
		CreatedAt: now.Add(-time.Hour), LastSeenAt: now, IdleExpiresAt: now.Add(time.Hour),
		ExpiresAt: now.Add(12 * time.Hour),
	}, h
}

// The compact form gives back exactly the row that was put in, whatever was put after it
// and however often the arena was compacted under it.
func TestCacheRoundTripAndCompaction(t *testing.T) {
	now := time.UnixMilli(time.Now().UnixMilli())
	c := &cache{}
	c.init(time.Minute)
	s, h := cacheTestSession(now)
	s.RevokedAt, s.RevokeReason = now, "revoked_by_user"
	want := cacheEntry{sess: s, match: TokenMatch{Retired: true, GraceUntil: now.Add(time.Second)}}
	c.put(h, want, now, c.generation())
	got, ok := c.get(h, now)
	want.fetched = now
	if !ok || !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
	}
	held := got.sess // a reader's copy, sharing the arena's bytes
	heldDevice := bytes.Clone(held.Device)

	// Churn one shard's worth of rows many times over so that its arena compacts.
	for i := 0; i < 20_000; i++ {
		o, oh := cacheTestSession(now)
		c.put(oh, cacheEntry{sess: o}, now, c.generation())
		c.dropSessions([]string{o.ID})
	}
	got, ok = c.get(h, now)
	if !ok || !reflect.DeepEqual(got, want) {
		t.Fatalf("after compaction:\n got %+v\nwant %+v", got, want)
	}
	if !bytes.Equal(held.Device, heldDevice) || held.ID != s.ID {
		t.Fatal("bytes handed to a reader changed under it")
	}
	for i := range c.shards {
		if a := &c.shards[i].arena; a.used() > 4*arenaChunk {
			t.Fatalf("shard %d: %d arena bytes for %d live ones: never compacted", i, a.used(), a.live)
		}
	}
}

// A revocation drops every token of the session, including retired ones, and the lookup by
// id; a fill that read the store before the drop is not cached.
func TestCacheDropAndGeneration(t *testing.T) {
	now := time.Now()
	c := &cache{}
	c.init(time.Minute)
	s, h1 := cacheTestSession(now)
	_, raw := NewToken()
	h2 := hashToken(random(32), raw)
	gen := c.generation()
	c.put(h1, cacheEntry{sess: s}, now, gen)
	c.put(h2, cacheEntry{sess: s}, now, gen)
	c.putID(s, now, gen)
	if _, ok := c.getID(s.ID, now); !ok {
		t.Fatal("lookup by id missed")
	}
	if _, ok := c.getID(NewID(), now); ok {
		t.Fatal("another id found an entry")
	}
	c.dropSessions([]string{s.ID})
	for _, h := range []TokenHash{h1, h2} {
		if _, ok := c.get(h, now); ok {
			t.Fatal("a token of a dropped session is still cached")
		}
	}
	if _, ok := c.getID(s.ID, now); ok {
		t.Fatal("a dropped session is still cached by id")
	}
	c.put(h1, cacheEntry{sess: s}, now, gen) // read before the drop
	c.putID(s, now, gen)
	if _, ok := c.get(h1, now); ok {
		t.Fatal("a fill from before the drop was cached")
	}
	if _, ok := c.getID(s.ID, now); ok {
		t.Fatal("a fill by id from before the drop was cached")
	}
}

// Past tokensPerSess tokens of one session the oldest leaves the cache (so that every cached
// token stays findable by its session), entries expire with the TTL and pruning empties it.
func TestCacheBoundsAndExpiry(t *testing.T) {
	now := time.Now()
	c := &cache{}
	c.init(time.Minute)
	s, _ := cacheTestSession(now)
	var hs []TokenHash
	for i := 0; i < tokensPerSess+1; i++ {
		_, raw := NewToken()
		h := hashToken(random(32), raw)
		hs = append(hs, h)
		c.put(h, cacheEntry{sess: s}, now, c.generation())
	}
	if _, ok := c.get(hs[0], now); ok {
		t.Fatal("the oldest token stayed cached past the per-session bound")
	}
	c.dropSessions([]string{s.ID})
	for _, h := range hs {
		if _, ok := c.get(h, now); ok {
			t.Fatal("a token escaped the drop")
		}
	}
	o, oh := cacheTestSession(now)
	c.put(oh, cacheEntry{sess: o}, now, c.generation())
	if _, ok := c.get(oh, now.Add(time.Minute)); ok {
		t.Fatal("an entry outlived the TTL")
	}
	c.pruneExpired(now.Add(time.Minute))
	if len(c.idx) != 0 || c.shards[oh[0]%cacheShards].arena.live != 0 {
		t.Fatalf("pruning left %d index lists, %d live bytes", len(c.idx), c.shards[oh[0]%cacheShards].arena.live)
	}
}
