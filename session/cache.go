package session

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// cacheEntry is one validated token: the session row as read from the store and how the token
// matched it.
type cacheEntry struct {
	sess    Session
	match   TokenMatch
	fetched time.Time
}

// maxCacheEntries bounds the validation cache (and, separately, the lookups by session id);
// past it, expired entries are pruned and, if still full, arbitrary ones are dropped.
const maxCacheEntries = 200_000

const (
	cacheShards   = 64
	firstChunk    = 2 << 10   // bytes of a shard's first arena chunk
	arenaChunk    = 256 << 10 // bytes of an arena chunk at most
	maxEntryBytes = 16 << 10  // a row bigger than this is not cached
	tokensPerSess = 4         // token hashes of one session indexed; more evicts the oldest
)

// cache holds recent validations keyed by token hash, so that the hot path does no store I/O.
// Entries live at most ttl: the bound on how stale a node can be when a notice is lost.
//
// It is built for a node holding hundreds of thousands of sessions: entries hold no pointers
// (the variable-length fields live in a per-shard byte arena, the maps' keys and values are
// plain values), so the garbage collector has nothing to scan in it however large it grows;
// and lookups take a read lock on one of 64 shards, so concurrent validations do not queue
// behind one mutex.
//
// A fill races with a revocation: a store read that returned the row as it was before the
// revocation committed could otherwise be cached after the revocation dropped the entry, and
// be served until the TTL. So every drop moves the generation on, and a fill carries the
// generation read before its store read: a fill from an older generation is not cached.
type cache struct {
	ttl    time.Duration
	gen    atomic.Uint64 // moves on with every drop
	seed   maphash.Seed
	shards [cacheShards]cacheShard // by token hash
	ids    [cacheShards]cacheShard // by session id (live connections)

	// idx lists the token hashes cached for each session (by the hash of its id), so that a
	// revocation finds them. Fills and drops hold idxMu, which orders them with the
	// generation check; lookups never take it.
	idxMu sync.Mutex
	idx   map[uint64]tokenList
}

type tokenList struct {
	n int
	h [tokensPerSess]TokenHash
}

type cacheShard struct {
	mu    sync.RWMutex
	byKey map[cacheKey]slot
	arena arena
}

// cacheKey is a token hash, or for lookups by id the id's hash in its first eight bytes.
type cacheKey = TokenHash

// slot is a session row in pointer-free form: its strings and byte slices are in the shard's
// arena (bytes never rewritten once written, so what a reader was handed stays valid), its
// times in Unix nanoseconds (0 for the zero time).
type slot struct {
	chunk, off                          uint32
	idLen, userLen, vaultLen, reasonLen uint16
	hashLen, deviceLen                  uint16
	created, lastSeen, idleExp, exp     int64
	revoked, graceUntil, fetched        int64
	retired                             bool
}

func (s *slot) size() int {
	return int(s.idLen) + int(s.userLen) + int(s.vaultLen) + int(s.reasonLen) + int(s.hashLen) + int(s.deviceLen)
}

// arena is append-only byte storage in fixed chunks; compact copies the live bytes into new
// chunks (the old ones stay alive while a reader holds a string from them).
type arena struct {
	chunks [][]byte
	live   int // bytes of entries still in the map
}

func (a *arena) used() int {
	n := 0
	for _, c := range a.chunks {
		n += len(c)
	}
	return n
}

// alloc returns room for n bytes and where it is.
func (a *arena) alloc(n int) ([]byte, uint32, uint32) {
	last := len(a.chunks) - 1
	if last < 0 || len(a.chunks[last])+n > cap(a.chunks[last]) {
		// Chunks start small and double up to arenaChunk, so that a node with few sessions
		// keeps little.
		size := firstChunk
		if last >= 0 {
			size = min(2*cap(a.chunks[last]), arenaChunk)
		}
		a.chunks = append(a.chunks, make([]byte, 0, max(size, n)))
		last++
	}
	c := a.chunks[last]
	off := len(c)
	a.chunks[last] = c[:off+n]
	a.live += n
	return a.chunks[last][off : off+n : off+n], uint32(last), uint32(off)
}

func (a *arena) bytes(s *slot) []byte {
	n := uint32(s.size())
	return a.chunks[s.chunk][s.off : s.off+n : s.off+n]
}

var (
	minNanoTime = time.Unix(0, -1<<62)
	maxNanoTime = time.Unix(0, 1<<62)
)

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// store writes e into the arena and returns its slot; false if the row is too big to cache.
func (a *arena) store(e cacheEntry) (slot, bool) {
	s := &e.sess
	sl := slot{
		idLen: uint16(len(s.ID)), userLen: uint16(len(s.UserID)), vaultLen: uint16(len(s.VaultID)),
		reasonLen: uint16(len(s.RevokeReason)), hashLen: uint16(len(s.TokenHash)), deviceLen: uint16(len(s.Device)),
		created: nanos(s.CreatedAt), lastSeen: nanos(s.LastSeenAt), idleExp: nanos(s.IdleExpiresAt),
		exp: nanos(s.ExpiresAt), revoked: nanos(s.RevokedAt), graceUntil: nanos(e.match.GraceUntil),
		fetched: nanos(e.fetched), retired: e.match.Retired,
	}
	for _, t := range [...]time.Time{s.CreatedAt, s.LastSeenAt, s.IdleExpiresAt, s.ExpiresAt, s.RevokedAt, e.match.GraceUntil, e.fetched} {
		if !t.IsZero() && (t.Before(minNanoTime) || t.After(maxNanoTime)) {
			return slot{}, false // not representable in Unix nanoseconds: not cached
		}
	}
	total := len(s.ID) + len(s.UserID) + len(s.VaultID) + len(s.RevokeReason) + len(s.TokenHash) + len(s.Device)
	if total > maxEntryBytes {
		return slot{}, false
	}
	b, chunk, off := a.alloc(total)
	b = append(append(append(append(append(append(b[:0], s.ID...), s.UserID...), s.VaultID...), s.RevokeReason...), s.TokenHash...), s.Device...)
	sl.chunk, sl.off = chunk, off
	return sl, true
}

// load rebuilds the entry; its strings and slices share the arena's bytes (no allocation).
func (a *arena) load(sl *slot) cacheEntry {
	b := a.bytes(sl)
	take := func(n uint16) []byte {
		part := b[:n:n]
		b = b[n:]
		return part
	}
	str := func(n uint16) string {
		if n == 0 {
			return ""
		}
		p := take(n)
		return unsafe.String(&p[0], len(p))
	}
	var e cacheEntry
	s := &e.sess
	s.ID, s.UserID, s.VaultID, s.RevokeReason = str(sl.idLen), str(sl.userLen), str(sl.vaultLen), str(sl.reasonLen)
	if sl.hashLen > 0 {
		s.TokenHash = take(sl.hashLen)
	}
	if sl.deviceLen > 0 {
		s.Device = take(sl.deviceLen)
	}
	s.CreatedAt, s.LastSeenAt = fromNanos(sl.created), fromNanos(sl.lastSeen)
	s.IdleExpiresAt, s.ExpiresAt, s.RevokedAt = fromNanos(sl.idleExp), fromNanos(sl.exp), fromNanos(sl.revoked)
	e.match = TokenMatch{Retired: sl.retired, GraceUntil: fromNanos(sl.graceUntil)}
	e.fetched = fromNanos(sl.fetched)
	return e
}

// compact copies the live entries' bytes into fresh chunks once at least half of the arena
// is garbage. Called with the shard's write lock held.
func (sh *cacheShard) compact() {
	a := &sh.arena
	if used := a.used(); used < 64<<10 || a.live*2 > used {
		return
	}
	fresh := arena{}
	for k, sl := range sh.byKey {
		b, chunk, off := fresh.alloc(sl.size())
		copy(b, a.bytes(&sl))
		sl.chunk, sl.off = chunk, off
		sh.byKey[k] = sl
	}
	*a = fresh
}

func (sh *cacheShard) deleteLocked(k cacheKey) {
	if sl, ok := sh.byKey[k]; ok {
		sh.arena.live -= sl.size()
		delete(sh.byKey, k)
	}
}

func (c *cache) init(ttl time.Duration) {
	c.ttl = ttl
	c.seed = maphash.MakeSeed()
	for i := range c.shards {
		c.shards[i].byKey = map[cacheKey]slot{}
		c.ids[i].byKey = map[cacheKey]slot{}
	}
	c.idx = map[uint64]tokenList{}
}

func (c *cache) idHash(id string) uint64 { return maphash.String(c.seed, id) }

func idKey(h uint64) cacheKey {
	var k cacheKey
	for i := 0; i < 8; i++ {
		k[i] = byte(h >> (8 * i))
	}
	return k
}

func (c *cache) fresh(fetched int64, now time.Time) bool {
	t := fromNanos(fetched)
	return now.Sub(t) < c.ttl && !now.Before(t)
}

// generation is to be read before the store read whose result is then cached.
func (c *cache) generation() uint64 { return c.gen.Load() }

func (c *cache) getID(id string, now time.Time) (Session, bool) {
	h := c.idHash(id)
	sh := &c.ids[h%cacheShards]
	sh.mu.RLock()
	sl, ok := sh.byKey[idKey(h)]
	var e cacheEntry
	if ok {
		e = sh.arena.load(&sl)
	}
	sh.mu.RUnlock()
	// Two ids with one hash share a key: the later fill wins, the other is a miss.
	if !ok || e.sess.ID != id || !c.fresh(sl.fetched, now) {
		return Session{}, false
	}
	return e.sess, true
}

func (c *cache) putID(s Session, now time.Time, gen uint64) {
	h := c.idHash(s.ID)
	c.idxMu.Lock()
	defer c.idxMu.Unlock()
	if gen != c.gen.Load() {
		return
	}
	c.insert(&c.ids[h%cacheShards], idKey(h), cacheEntry{sess: s, fetched: now}, now)
}

func (c *cache) get(h TokenHash, now time.Time) (cacheEntry, bool) {
	sh := &c.shards[h[0]%cacheShards]
	sh.mu.RLock()
	sl, ok := sh.byKey[h]
	var e cacheEntry
	if ok && c.fresh(sl.fetched, now) {
		e = sh.arena.load(&sl)
	} else {
		ok = false
	}
	sh.mu.RUnlock()
	return e, ok
}

func (c *cache) put(h TokenHash, e cacheEntry, now time.Time, gen uint64) {
	e.fetched = now
	idh := c.idHash(e.sess.ID)
	c.idxMu.Lock()
	defer c.idxMu.Unlock()
	if gen != c.gen.Load() {
		return
	}
	if !c.insert(&c.shards[h[0]%cacheShards], h, e, now) {
		return
	}
	// Every cached hash is listed under its session, so that a drop finds it; a session with
	// more tokens than the list holds loses its oldest from the cache.
	l := c.idx[idh]
	for i := 0; i < l.n; i++ {
		if l.h[i] == h {
			return
		}
	}
	if l.n == tokensPerSess {
		c.deleteToken(l.h[0])
		copy(l.h[:], l.h[1:])
		l.n--
	}
	l.h[l.n] = h
	l.n++
	c.idx[idh] = l
}

// insert stores e under k in sh, making room first if the shard is full. Called with idxMu
// held; false if the row was not cached.
func (c *cache) insert(sh *cacheShard, k cacheKey, e cacheEntry, now time.Time) bool {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if len(sh.byKey) >= maxCacheEntries/cacheShards {
		c.pruneShard(sh, now, true)
	}
	sl, ok := sh.arena.store(e)
	if !ok {
		return false
	}
	sh.deleteLocked(k)
	sh.byKey[k] = sl
	sh.compact()
	return true
}

// deleteToken drops one token hash from its shard. Called with idxMu held.
func (c *cache) deleteToken(h TokenHash) {
	sh := &c.shards[h[0]%cacheShards]
	sh.mu.Lock()
	sh.deleteLocked(h)
	sh.mu.Unlock()
}

// pruneShard drops entries older than the TTL and, when full is set, arbitrary ones until
// there is room. Called with idxMu and the shard's write lock held. Token entries stay listed
// in the index; a drop of a hash no longer cached is harmless, and the list is pruned with
// its session.
func (c *cache) pruneShard(sh *cacheShard, now time.Time, full bool) {
	for k, sl := range sh.byKey {
		if !c.fresh(sl.fetched, now) || (full && len(sh.byKey) >= maxCacheEntries/cacheShards) {
			sh.deleteLocked(k)
		}
	}
	sh.compact()
}

// pruneExpired drops every entry older than the TTL, so that the cache holds only what is
// being used (the size cap alone would let stale entries pile up to it).
func (c *cache) pruneExpired(now time.Time) {
	c.idxMu.Lock()
	defer c.idxMu.Unlock()
	for i := range c.shards {
		for _, sh := range []*cacheShard{&c.shards[i], &c.ids[i]} {
			sh.mu.Lock()
			c.pruneShard(sh, now, false)
			sh.mu.Unlock()
		}
	}
	// Index lists whose hashes are all gone go too.
	for idh, l := range c.idx {
		kept := tokenList{}
		for i := 0; i < l.n; i++ {
			sh := &c.shards[l.h[i][0]%cacheShards]
			sh.mu.RLock()
			_, ok := sh.byKey[l.h[i]]
			sh.mu.RUnlock()
			if ok {
				kept.h[kept.n] = l.h[i]
				kept.n++
			}
		}
		if kept.n == 0 {
			delete(c.idx, idh)
		} else {
			c.idx[idh] = kept
		}
	}
}

func (c *cache) dropSessions(ids []string) {
	c.idxMu.Lock()
	defer c.idxMu.Unlock()
	c.gen.Add(1)
	for _, id := range ids {
		idh := c.idHash(id)
		l := c.idx[idh]
		for i := 0; i < l.n; i++ {
			c.deleteToken(l.h[i])
		}
		delete(c.idx, idh)
		sh := &c.ids[idh%cacheShards]
		sh.mu.Lock()
		sh.deleteLocked(idKey(idh))
		sh.mu.Unlock()
	}
}
