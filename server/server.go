package server

import (
	"context"
	"errors"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/sessiond/sessiond/hub"
)

// Config wires a Server. Zero fields take the documented defaults.
type Config struct {
	Manager Domain // *session.Manager
	Hub     *hub.Hub
	Logger  zerolog.Logger
	// AllowedOrigins lists the origins ("https://app.example.com") that may open a WebSocket.
	// Empty: only the server's own origin (the request's Host, over http or https).
	AllowedOrigins []string
	// HandshakeTimeout is how long a connection may stay without login or resume (default 30s).
	HandshakeTimeout time.Duration
	// DrainDelay is how long Shutdown keeps /readyz at 503 before it tells the WebSockets to
	// reconnect, so that a load balancer stops sending new ones here first; DrainSpread spreads
	// those closes at random over a window, so that the devices do not all reconnect to the
	// remaining nodes in the same instant. Both 0 by default (at once).
	DrainDelay, DrainSpread time.Duration
	// AccessLog writes a line per HTTP request (method, path without the query, status, size,
	// time, request id; never a token nor the client's address or user agent).
	AccessLog bool
	// Ready reports whether the store answers; /readyz calls it.
	Ready func(ctx context.Context) error
	// Web is the demo page's file tree, served at /. Nil: no page.
	Web fs.FS
	// WebScriptHashes are the CSP hashes ('sha256-…') of the page's inline scripts (its import map).
	WebScriptHashes []string
	// Metrics are the node's series (nil: a fresh set). The server does not serve them: they
	// tell registered usernames from unknown ones by their store counters, so they belong on
	// a management listener (Metrics.Handler), never on the public one.
	Metrics *Metrics
	// Limits are the abuse limits (zero fields: defaults); Counter counts the login limits
	// (nil: in process; give one over Redis to share the budget between nodes).
	Limits  Limits
	Counter Counter
	// TrustedProxies are the networks whose forwarding header (ProxyHeader) is believed.
	TrustedProxies []netip.Prefix
	// ProxyHeader is the one header the trusted proxies set the client's address in:
	// ProxyHeaderXForwardedFor (the default when empty), ProxyHeaderForwarded or
	// ProxyHeaderXRealIP. The others are ignored, whoever sends them.
	ProxyHeader string
	// AllowInsecure lets tokens be issued over plain HTTP (a loopback listener, or
	// SESSIOND_INSECURE_HTTP). Otherwise only TLS, direct or via a trusted proxy, gets tokens.
	AllowInsecure bool
}

// Server is sessiond's HTTP handler.
type Server struct {
	cfg Config
	csp string // the page's Content-Security-Policy
	mgr Domain
	hub *hub.Hub
	log zerolog.Logger
	mux http.Handler

	metrics      *Metrics
	limits       Limits
	counter      Counter
	connsPerAddr connCounter
	badTokens    addrCounter

	mu       sync.Mutex
	conns    map[*conn]struct{}
	draining bool
	stopping chan struct{} // closed by Shutdown: event streams and re-checks end
	wg       sync.WaitGroup

	reconciling sync.Mutex  // held by the Reconcile that runs after a hub re-connection
	recheckDue  atomic.Bool // a Reconcile is started and has not begun checking yet
}

// reconcileFor bounds how long the re-check after a hub re-connection keeps trying a store
// that does not answer.
const reconcileFor = 10 * time.Minute

// reconcileSoon re-checks the live connections after a hub re-connection, in the background
// (the store may be down too, and the re-check then keeps trying), one re-check at a time. A
// re-connection while one is waiting to begin adds nothing: that one checks everything when
// it begins. So a link that keeps flapping queues at most one re-check behind the running one.
func (s *Server) reconcileSoon() {
	if !s.recheckDue.CompareAndSwap(false, true) {
		return
	}
	go func() {
		s.reconciling.Lock()
		defer s.reconciling.Unlock()
		s.recheckDue.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), reconcileFor)
		defer cancel()
		go func() { // the node stopping ends it
			select {
			case <-s.stopping:
				cancel()
			case <-ctx.Done():
			}
		}()
		s.Reconcile(ctx)
	}()
}

// New validates cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Manager == nil || cfg.Hub == nil {
		return nil, errors.New("server: a manager and a hub are required")
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 30 * time.Second
	}
	if cfg.HandshakeTimeout < 0 {
		return nil, errors.New("server: handshake timeout must be positive")
	}
	for _, o := range cfg.AllowedOrigins {
		if _, err := normalizeOrigin(o); err != nil {
			return nil, err
		}
	}
	s := &Server{cfg: cfg, mgr: cfg.Manager, hub: cfg.Hub, log: cfg.Logger, conns: map[*conn]struct{}{}, stopping: make(chan struct{}),
		metrics: cfg.Metrics, limits: cfg.Limits.withDefaults(), counter: cfg.Counter, badTokens: newAddrCounter(),
		csp: contentSecurityPolicy(cfg.WebScriptHashes)}
	if s.metrics == nil {
		s.metrics = NewMetrics()
	}
	if s.counter == nil {
		s.counter = NewMemoryCounter()
	}
	s.metrics.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sessiond_connections", Help: "Open WebSocket connections."},
		func() float64 { return float64(s.Connections()) }))
	s.metrics.Register(newConnStates(s))
	s.metrics.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sessiond_hub_healthy", Help: "1 while notices flow between nodes."},
		func() float64 {
			if s.hub.Healthy() {
				return 1
			}
			return 0
		}))
	s.routes()
	// Notices published while the cross-node link was down may be lost: after a re-connection,
	// every live connection is checked against the store.
	cfg.Hub.OnReconnect(s.reconcileSoon)
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// Connections returns the number of open WebSocket connections.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Shutdown closes every WebSocket with 1001 (reconnect and resume elsewhere) and waits for
// their handlers to end, or for ctx. It is idempotent; new connections are refused after it.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.draining {
		close(s.stopping)
	}
	s.draining = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	if d := s.cfg.DrainDelay; d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	for _, c := range conns {
		goAway := func() { c.closeAfter(nil, websocket.StatusGoingAway, "server going away; reconnect and resume", 0) }
		if spread := s.cfg.DrainSpread; spread > 0 && ctx.Err() == nil {
			time.AfterFunc(rand.N(spread), goAway)
		} else {
			goAway()
		}
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// originAllowed applies the Origin allow-list. Requests without Origin (non-browser clients)
// pass: only browsers send it, and only browsers can be tricked into cross-site requests.
func (s *Server) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	o, err := normalizeOrigin(origin)
	if err != nil {
		return false
	}
	if len(s.cfg.AllowedOrigins) == 0 {
		host := strings.ToLower(r.Host)
		return o == "http://"+host || o == "https://"+host
	}
	for _, a := range s.cfg.AllowedOrigins {
		if n, _ := normalizeOrigin(a); n == o {
			return true
		}
	}
	return false
}

// normalizeOrigin lower-cases scheme and host and refuses anything that is not a bare origin.
func normalizeOrigin(o string) (string, error) {
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return "", errors.New("origin " + quote(o) + " is not of the form scheme://host[:port]")
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), nil
}

func quote(s string) string { return "\"" + s + "\"" }

// Metrics returns the node's metrics.
func (s *Server) Metrics() *Metrics { return s.metrics }

// limited counts one event against key and reports whether it is over max. A counter failure
// (a shared store down) lets the event through and is logged.
func (s *Server) limited(ctx context.Context, name, key string, max int) bool {
	isOver, err := over(ctx, s.counter, key, max, s.limits.Window)
	if err != nil {
		s.log.Warn().Err(err).Str("limit", name).Msg("rate limit counter unavailable; allowing")
		return false
	}
	if isOver {
		s.metrics.rateLimited.WithLabelValues(name).Inc()
	}
	return isOver
}

// userLimitKey is the login-limit key of a normalised username: a keyed hash, so that counters
// kept in a shared store do not list usernames.
func (s *Server) userLimitKey(name string) string {
	return "login-user:" + s.mgr.UsernameKey(name)
}
