// Package backend protects an application's own HTTP handlers with sessiond: RequireSession
// takes the user's bearer token, asks sessiond about it (RFC 7662 introspection, as a service
// client), caches the answer, and drops it the moment sessiond's event stream says the session
// ended — on any node — so a revoked token stops working at once, not when a cache entry expires.
//
//	g := backend.New(backend.Config{Base: "https://sessiond.internal", Secret: os.Getenv("SESSIOND_SERVICE_SECRET")})
//	go g.Run(ctx) // follows the event stream
//	http.Handle("/orders", g.RequireSession(ordersHandler))
//	// in ordersHandler: id, _ := backend.IdentityFrom(r.Context())
//
// Cached answers are used only while the event stream is connected (or, when Run is never
// called, for CacheTTL): while it is down every request is asked anew, and after it reconnects
// the events missed in between are replayed (Last-Event-ID) before the cache is trusted again.
//
// Behind a reverse proxy that already asks sessiond's forward-auth endpoint on every request,
// Config.TrustedProxies lets RequireSession take the identity from the proxy's X-Sessiond-*
// headers instead, for requests whose TCP peer is one of those proxies and no other.
package backend

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Identity is who made a request, as sessiond vouches for it.
type Identity struct {
	UserID        string
	SessionID     string
	VaultID       string
	ExpiresAt     time.Time
	IdleExpiresAt time.Time
}

type ctxKey struct{}

// IdentityFrom returns the identity RequireSession put into the request's context.
func IdentityFrom(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(Identity)
	return id, ok
}

// Config configures a Guard.
type Config struct {
	Base     string        // sessiond's base URL
	Secret   string        // the service client's secret (sessiond admin service create NAME)
	HTTP     *http.Client  // nil: http.DefaultClient
	CacheTTL time.Duration // how long an answer is reused without asking again (default 30s)
	// MaxEntries bounds the cache (default 10,000); beyond it, expired answers are dropped
	// first, then arbitrary ones.
	MaxEntries int
	// TrustedProxies are the addresses of reverse proxies that authorise every request with
	// sessiond's forward auth and pass its X-Sessiond-User-Id and X-Sessiond-Session-Id headers
	// on. A request from one of them carrying those headers is let through with that identity,
	// without introspection; from any other peer the headers are ignored.
	TrustedProxies []netip.Prefix
}

// Guard checks tokens for an application. It is safe for concurrent use.
type Guard struct {
	cfg Config

	mu        sync.Mutex
	cache     map[[32]byte]entry
	bySession map[string][][32]byte
	lastEvent string
	evictions int
	following bool // Run was called: the cache is trusted only while live
	live      bool // the event stream is connected
}

type entry struct {
	id      Identity
	fetched time.Time
}

// New returns a Guard.
func New(cfg Config) *Guard {
	if cfg.HTTP == nil {
		cfg.HTTP = http.DefaultClient
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = 30 * time.Second
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = 10000
	}
	cfg.Base = strings.TrimRight(cfg.Base, "/")
	return &Guard{cfg: cfg, cache: map[[32]byte]entry{}, bySession: map[string][][32]byte{}}
}

// RequireSession lets a request through only with a live session's bearer token, with the
// identity in its context; otherwise it answers 401.
func (g *Guard) RequireSession(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, ok := g.fromProxy(r); ok {
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, id)))
			return
		}
		scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
			w.Header().Set("WWW-Authenticate", "Bearer")
			http.Error(w, "a session token is required", http.StatusUnauthorized)
			return
		}
		id, err := g.Check(r.Context(), strings.TrimSpace(token))
		if err != nil {
			http.Error(w, "the session service cannot be reached", http.StatusServiceUnavailable)
			return
		}
		if id == nil {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			http.Error(w, "the session is invalid, expired or revoked", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, *id)))
	})
}

// fromProxy takes the identity from a trusted proxy's forward-auth headers.
func (g *Guard) fromProxy(r *http.Request) (Identity, bool) {
	if len(g.cfg.TrustedProxies) == 0 {
		return Identity{}, false
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return Identity{}, false
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return Identity{}, false
	}
	trusted := false
	for _, p := range g.cfg.TrustedProxies {
		trusted = trusted || p.Contains(peer.Unmap())
	}
	id := Identity{UserID: r.Header.Get("X-Sessiond-User-Id"), SessionID: r.Header.Get("X-Sessiond-Session-Id"),
		VaultID: r.Header.Get("X-Sessiond-Vault-Id")}
	if !trusted || id.UserID == "" || id.SessionID == "" {
		return Identity{}, false
	}
	id.ExpiresAt, _ = time.Parse(time.RFC3339Nano, r.Header.Get("X-Sessiond-Expires-At"))
	id.IdleExpiresAt, _ = time.Parse(time.RFC3339Nano, r.Header.Get("X-Sessiond-Idle-Expires-At"))
	return id, true
}

// Check returns the identity behind token, nil when it is not a live session's.
func (g *Guard) Check(ctx context.Context, token string) (*Identity, error) {
	key := sha256.Sum256([]byte(token))
	now := time.Now()
	g.mu.Lock()
	e, ok := g.cache[key]
	usable := ok && (g.live || !g.following)
	g.mu.Unlock()
	if usable && now.Sub(e.fetched) < g.cfg.CacheTTL && now.Before(e.id.ExpiresAt) && now.Before(e.id.IdleExpiresAt) {
		return &e.id, nil
	}
	id, err := g.introspect(ctx, token)
	if err != nil || id == nil {
		return nil, err
	}
	g.mu.Lock()
	if len(g.cache) >= g.cfg.MaxEntries {
		g.pruneLocked(now)
	}
	g.cache[key] = entry{id: *id, fetched: now}
	g.bySession[id.SessionID] = append(g.bySession[id.SessionID], key)
	g.mu.Unlock()
	return id, nil
}

// Len is the number of cached answers.
func (g *Guard) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.cache)
}

// pruneLocked drops expired answers, then arbitrary ones until a tenth of the room is free.
func (g *Guard) pruneLocked(now time.Time) {
	for key, e := range g.cache {
		if now.Sub(e.fetched) >= g.cfg.CacheTTL || !now.Before(e.id.ExpiresAt) || !now.Before(e.id.IdleExpiresAt) {
			g.forgetLocked(key, e.id.SessionID)
		}
	}
	for key, e := range g.cache {
		if len(g.cache) < g.cfg.MaxEntries-g.cfg.MaxEntries/10 {
			break
		}
		g.forgetLocked(key, e.id.SessionID)
	}
}

func (g *Guard) forgetLocked(key [32]byte, sessionID string) {
	delete(g.cache, key)
	keys := g.bySession[sessionID]
	for i, k := range keys {
		if k == key {
			keys = append(keys[:i], keys[i+1:]...)
			break
		}
	}
	if len(keys) == 0 {
		delete(g.bySession, sessionID)
	} else {
		g.bySession[sessionID] = keys
	}
}

func (g *Guard) introspect(ctx context.Context, token string) (*Identity, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.cfg.Base+"/api/v1/introspect",
		strings.NewReader(url.Values{"token": {token}}.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+g.cfg.Secret)
	resp, err := g.cfg.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out struct {
		Active  bool   `json:"active"`
		Sub     string `json:"sub"`
		Sid     string `json:"sid"`
		VaultID string `json:"vault_id"`
		Exp     int64  `json:"exp"`
		IdleExp int64  `json:"idle_exp"`
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &StatusError{Status: resp.StatusCode}
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, err
	}
	if !out.Active {
		return nil, nil
	}
	return &Identity{UserID: out.Sub, SessionID: out.Sid, VaultID: out.VaultID,
		ExpiresAt: time.Unix(out.Exp, 0), IdleExpiresAt: time.Unix(out.IdleExp, 0)}, nil
}

// StatusError is an unexpected answer of sessiond (a wrong or revoked service secret: 401).
type StatusError struct{ Status int }

func (e *StatusError) Error() string { return "sessiond answered HTTP " + http.StatusText(e.Status) }

// Evictions counts the cached answers dropped because their session ended.
func (g *Guard) Evictions() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.evictions
}

// Run follows sessiond's event stream until ctx ends, dropping the cached answers of sessions
// as they end (and of all of a user's on user.deleted), reconnecting with Last-Event-ID.
func (g *Guard) Run(ctx context.Context) error {
	g.mu.Lock()
	g.following = true
	g.mu.Unlock()
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		if err := g.follow(ctx); err == nil {
			backoff = 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	return ctx.Err()
}

func (g *Guard) follow(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.cfg.Base+"/api/v1/events", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+g.cfg.Secret)
	g.mu.Lock()
	if g.lastEvent != "" {
		req.Header.Set("Last-Event-ID", g.lastEvent)
	}
	g.mu.Unlock()
	resp, err := g.cfg.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &StatusError{Status: resp.StatusCode}
	}
	g.setLive(true)
	defer g.setLive(false)
	sc := bufio.NewScanner(resp.Body)
	var id, kind, data string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if kind != "" {
				g.handle(id, kind, data)
			}
			id, kind, data = "", "", ""
		case strings.HasPrefix(line, "id: "):
			id = line[4:]
		case strings.HasPrefix(line, "event: "):
			kind = line[7:]
		case strings.HasPrefix(line, "data: "):
			data = line[6:]
		}
	}
	return sc.Err()
}

// setLive marks the stream connected or not. A first connection (no event id to resume from)
// cannot tell what ended before it, so the answers cached until then are dropped.
func (g *Guard) setLive(live bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.live = live
	if live && g.lastEvent == "" {
		clear(g.cache)
		clear(g.bySession)
	}
}

// Live reports whether the event stream is connected.
func (g *Guard) Live() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.live
}

func (g *Guard) handle(id, kind, data string) {
	var d struct {
		UserID    string `json:"user_id"`
		SessionID string `json:"session_id"`
	}
	_ = json.Unmarshal([]byte(data), &d)
	g.mu.Lock()
	defer g.mu.Unlock()
	if id != "" {
		g.lastEvent = id
	}
	switch kind {
	case "session.ended":
		g.dropLocked(d.SessionID)
	case "user.deleted":
		for key, e := range g.cache {
			if e.id.UserID == d.UserID {
				g.dropLocked(e.id.SessionID)
				delete(g.cache, key)
			}
		}
	}
}

func (g *Guard) dropLocked(sessionID string) {
	for _, key := range g.bySession[sessionID] {
		if _, ok := g.cache[key]; ok {
			delete(g.cache, key)
			g.evictions++
		}
	}
	delete(g.bySession, sessionID)
}
