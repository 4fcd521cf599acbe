package session

import (
	"sync"
	"time"
)

// cacheEntry is one validated token: the session row as read from the store and how the token
// matched it.
type cacheEntry struct {
	sess    Session
	match   TokenMatch
	fetched time.Time
}

// maxCacheEntries bounds the validation cache; past it, expired entries are pruned and, if
// still full, an arbitrary entry is dropped (Go map iteration order).
const maxCacheEntries = 200_000

// cache holds recent validations keyed by token hash, so that the hot path does no store I/O.
// Entries live at most ttl: the bound on how stale a node can be when a notice is lost.
//
// A fill races with a revocation: a store read that returned the row as it was before the
// revocation committed could otherwise be cached after the revocation dropped the entry, and
// be served until the TTL. So every drop moves the generation on, and a fill carries the
// generation read before its store read: a fill from an older generation is not cached.
type cache struct {
	mu        sync.Mutex
	gen       uint64 // moves on with every drop
	ttl       time.Duration
	entries   map[TokenHash]cacheEntry
	bySession map[string][]TokenHash
	ids       map[string]cacheEntry // lookups by session id (live connections)
}

func (c *cache) init(ttl time.Duration) {
	c.ttl = ttl
	c.entries = map[TokenHash]cacheEntry{}
	c.bySession = map[string][]TokenHash{}
	c.ids = map[string]cacheEntry{}
}

func (c *cache) getID(id string, now time.Time) (Session, bool) {
	c.mu.Lock()
	e, ok := c.ids[id]
	c.mu.Unlock()
	if !ok || now.Sub(e.fetched) >= c.ttl || now.Before(e.fetched) {
		return Session{}, false
	}
	return e.sess, true
}

// generation is to be read before the store read whose result is then cached.
func (c *cache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

func (c *cache) putID(s Session, now time.Time, gen uint64) {
	c.mu.Lock()
	if gen != c.gen {
		c.mu.Unlock()
		return
	}
	if len(c.ids) >= maxCacheEntries {
		for id, e := range c.ids {
			if now.Sub(e.fetched) >= c.ttl || len(c.ids) >= maxCacheEntries {
				delete(c.ids, id)
			}
		}
	}
	c.ids[s.ID] = cacheEntry{sess: s, fetched: now}
	c.mu.Unlock()
}

func (c *cache) get(h TokenHash, now time.Time) (cacheEntry, bool) {
	c.mu.Lock()
	e, ok := c.entries[h]
	c.mu.Unlock()
	if !ok || now.Sub(e.fetched) >= c.ttl || now.Before(e.fetched) {
		return cacheEntry{}, false
	}
	return e, true
}

func (c *cache) put(h TokenHash, e cacheEntry, now time.Time, gen uint64) {
	e.fetched = now
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if len(c.entries) >= maxCacheEntries {
		c.prune(now)
	}
	if _, ok := c.entries[h]; !ok {
		c.bySession[e.sess.ID] = append(c.bySession[e.sess.ID], h)
	}
	c.entries[h] = e
}

// prune drops expired entries, then arbitrary ones until there is room. Called with mu held.
func (c *cache) prune(now time.Time) {
	for h, e := range c.entries {
		if now.Sub(e.fetched) >= c.ttl || len(c.entries) >= maxCacheEntries {
			c.dropLocked(h, e.sess.ID)
		}
	}
}

// pruneExpired drops every entry older than the TTL, so that the cache holds only what is
// being used (the size cap alone would let stale entries pile up to it).
func (c *cache) pruneExpired(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for h, e := range c.entries {
		if now.Sub(e.fetched) >= c.ttl {
			c.dropLocked(h, e.sess.ID)
		}
	}
	for id, e := range c.ids {
		if now.Sub(e.fetched) >= c.ttl {
			delete(c.ids, id)
		}
	}
}

func (c *cache) dropLocked(h TokenHash, id string) {
	delete(c.entries, h)
	hs := c.bySession[id]
	for i, x := range hs {
		if x == h {
			hs = append(hs[:i], hs[i+1:]...)
			break
		}
	}
	if len(hs) == 0 {
		delete(c.bySession, id)
	} else {
		c.bySession[id] = hs
	}
}

func (c *cache) dropSessions(ids []string) {
	c.mu.Lock()
	c.gen++
	for _, id := range ids {
		for _, h := range c.bySession[id] {
			delete(c.entries, h)
		}
		delete(c.bySession, id)
		delete(c.ids, id)
	}
	c.mu.Unlock()
}
