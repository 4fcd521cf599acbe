package server

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sessiond/sessiond/session"
)

// Metrics are the node's Prometheus series. None carries a secret or a per-user label.
type Metrics struct {
	reg *prometheus.Registry

	authConns   prometheus.Gauge
	logins      *prometheus.CounterVec // result: ok, failed
	sessions    *prometheus.CounterVec // event: created, refreshed, expired, revoked; reason
	notices     *prometheus.CounterVec // type; outcome: sent, coalesced, closed_slow
	validation  prometheus.Histogram
	cache       *prometheus.CounterVec // result: hit, miss
	cacheHit    prometheus.Counter     // cache's children, looked up once: every validation counts
	cacheMiss   prometheus.Counter
	storeOps    *prometheus.CounterVec // op; result: ok, refused, error
	storeSecs   *prometheus.HistogramVec
	publishSecs prometheus.Histogram
	revocation  prometheus.Histogram // revocation -> notice written to the device's socket
	brokerErrs  prometheus.Counter
	swept       prometheus.Counter
	rateLimited *prometheus.CounterVec // limit
	commandSecs *prometheus.HistogramVec
	errors      *prometheus.CounterVec
}

// NewMetrics returns the series registered on a fresh registry, with the Go runtime and
// process collectors.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := func(c prometheus.Collector) prometheus.Collector { reg.MustRegister(c); return c }
	m := &Metrics{reg: reg}
	m.authConns = f(prometheus.NewGauge(prometheus.GaugeOpts{Name: "sessiond_authenticated_connections", Help: "Open WebSocket connections signed in to a session."})).(prometheus.Gauge)
	m.logins = f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sessiond_logins_total", Help: "Completed login attempts by result (failed: wrong password or unknown user)."}, []string{"result"})).(*prometheus.CounterVec)
	m.sessions = f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sessiond_session_events_total", Help: "Session lifecycle events by kind and reason."}, []string{"event", "reason"})).(*prometheus.CounterVec)
	m.notices = f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sessiond_notices_total", Help: "Notices pushed to connections by type and outcome (sent, coalesced, closed_slow, left_to_reconcile)."}, []string{"type", "outcome"})).(*prometheus.CounterVec)
	m.validation = f(prometheus.NewHistogram(prometheus.HistogramOpts{Name: "sessiond_validation_seconds", Help: "Token validation latency of API requests.", Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .1, .5}})).(prometheus.Histogram)
	m.cache = f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sessiond_validation_cache_total", Help: "Validation cache lookups by result (hit, miss)."}, []string{"result"})).(*prometheus.CounterVec)
	m.cacheHit, m.cacheMiss = m.cache.WithLabelValues("hit"), m.cache.WithLabelValues("miss")
	latency := []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1, 5}
	m.storeSecs = f(prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sessiond_store_operation_seconds", Help: "Store operation latency by operation.", Buckets: latency}, []string{"op"})).(*prometheus.HistogramVec)
	m.publishSecs = f(prometheus.NewHistogram(prometheus.HistogramOpts{Name: "sessiond_hub_publish_seconds", Help: "Time to publish one notice on the hub (to Redis, or in process).", Buckets: latency})).(prometheus.Histogram)
	m.revocation = f(prometheus.NewHistogram(prometheus.HistogramOpts{Name: "sessiond_revocation_notice_seconds", Help: "From a revocation (as stamped by the node that made it) to its notice written to the device's socket, on the delivering node.", Buckets: latency})).(prometheus.Histogram)
	m.storeOps = f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sessiond_store_ops_total", Help: "Store operations by operation and result (ok, refused, error)."}, []string{"op", "result"})).(*prometheus.CounterVec)
	m.brokerErrs = f(prometheus.NewCounter(prometheus.CounterOpts{Name: "sessiond_broker_errors_total", Help: "Notices that could not be published to the cross-node broker."})).(prometheus.Counter)
	m.swept = f(prometheus.NewCounter(prometheus.CounterOpts{Name: "sessiond_swept_sessions_total", Help: "Ended sessions deleted by the sweeper."})).(prometheus.Counter)
	m.commandSecs = f(prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sessiond_command_seconds", Help: "Time to handle a WebSocket message by type (login.start and login.finish are a login's server steps, register.* a registration's), store work included.", Buckets: latency}, []string{"type"})).(*prometheus.HistogramVec)
	m.errors = f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sessiond_errors_total", Help: "Error answers by code, over HTTP and the WebSocket."}, []string{"code"})).(*prometheus.CounterVec)
	m.rateLimited = f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sessiond_rate_limited_total", Help: "Requests refused by an abuse limit, by limit."}, []string{"limit"})).(*prometheus.CounterVec)
	return m
}

// command records how long one WebSocket message of a known type took.
func (m *Metrics) command(typ string, d time.Duration) {
	if m != nil {
		m.commandSecs.WithLabelValues(typ).Observe(d.Seconds())
	}
}

// errorAnswer counts an error answer by its wire code.
func (m *Metrics) errorAnswer(code string) {
	if m != nil {
		m.errors.WithLabelValues(code).Inc()
	}
}

// Register adds a collector (e.g. a GaugeFunc over live state) to the node's registry.
func (m *Metrics) Register(c prometheus.Collector) { m.reg.MustRegister(c) }

// Handler serves the metrics page.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// CacheLookup counts a validation cache lookup (the session manager's hook).
func (m *Metrics) CacheLookup(hit bool) {
	if hit {
		m.cacheHit.Inc()
	} else {
		m.cacheMiss.Inc()
	}
}

// Swept counts sessions deleted by the sweeper.
func (m *Metrics) Swept(n int) { m.swept.Add(float64(n)) }

// SecurityEvent implements session.Observer.
func (m *Metrics) SecurityEvent(kind, reason string) {
	switch kind {
	case session.EventLogin:
		m.logins.WithLabelValues("ok").Inc()
		m.sessions.WithLabelValues("created", "").Inc()
	case session.EventLoginFailed:
		m.logins.WithLabelValues("failed").Inc()
	case session.EventRefresh:
		m.sessions.WithLabelValues("refreshed", "").Inc()
	case session.EventRevoked:
		m.sessions.WithLabelValues("revoked", reason).Inc()
	case session.EventExpired:
		m.sessions.WithLabelValues("expired", reason).Inc()
	default:
		m.sessions.WithLabelValues(kind, reason).Inc()
	}
}

var _ session.Observer = (*Metrics)(nil)

func (m *Metrics) notice(typ, outcome string) {
	if m != nil {
		m.notices.WithLabelValues(typ, outcome).Inc()
	}
}
