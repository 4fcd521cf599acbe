package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/sessiond/sessiond/hub"
	"github.com/sessiond/sessiond/server"
	"github.com/sessiond/sessiond/session"
	"github.com/sessiond/sessiond/web"
)

// daemon is one running node: its keys, store, hub, domain and server, and the listeners it
// serves them on. openDaemon builds it, listen binds, run serves until the context ends and
// shuts down in order; Close releases what open acquired.
type daemon struct {
	cfg     *config
	log     zerolog.Logger
	keys    *session.Keys
	st      *storeHandle
	redis   redis.UniversalClient
	hub     *hub.Hub
	hubKind string
	mgr     *session.Manager
	srv     *server.Server
	metrics *server.Metrics
	tls     *tls.Config

	ln       net.Listener   // the main listener (TLS-wrapped when configured)
	mode     string         // how tokens may travel, for the start-up line
	aux      []*http.Server // admin and metrics listeners, shut down after the main one
	stopProf func()
}

// openDaemon loads the keys, opens the store (checking the keys are the store's) and wires the
// hub, the domain and the server.
func openDaemon(ctx context.Context, cfg *config, log zerolog.Logger) (*daemon, error) {
	d := &daemon{cfg: cfg, log: log, metrics: server.NewMetrics()}
	d.metrics.Register(buildInfoMetric(currentBuild()))
	var err error
	if d.keys, err = loadKeys(cfg, log); err != nil {
		return nil, err
	}
	if d.st, err = openStore(ctx, cfg); err != nil {
		return nil, err
	}
	if err := d.open(ctx); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func (d *daemon) open(ctx context.Context) error {
	if err := d.st.CheckKeyFingerprint(ctx, d.keys.Fingerprint()); err != nil {
		if errors.Is(err, session.ErrKeyMismatch) {
			return fmt.Errorf("SESSIOND_KEY_FILE: this node's keys differ from the ones this store was set up with; start every node with the same key file")
		}
		return fmt.Errorf("store: %w", err)
	}
	broker, redisClient, err := newBroker(d.cfg, d.log)
	if err != nil {
		return err
	}
	d.redis, d.hubKind = redisClient, "loopback"
	var counter server.Counter
	if redisClient != nil {
		d.hubKind = "redis"
		if d.cfg.RedisCluster {
			d.hubKind = "redis cluster (sharded pub/sub)"
		}
		counter = server.NewRedisCounter(redisClient, d.cfg.RedisPrefix, d.log)
	}
	d.hub = hub.New(broker)
	cfg := d.cfg
	d.mgr, err = session.NewManager(session.Config{Store: server.InstrumentStore(d.st, d.metrics), Keys: d.keys,
		Policy: cfg.Policy, Notifier: server.NewNotifier(d.hub, d.log).WithMetrics(d.metrics), Logger: d.log, CacheUsable: d.hub.Healthy,
		Observer: d.metrics, Fingerprint: cfg.Fingerprint, ProofOfPossession: cfg.ProofRequired})
	if err != nil {
		return fmt.Errorf("invalid session policy: %w", err)
	}
	if err := server.SubscribeNode(ctx, d.hub, d.mgr); err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return fmt.Errorf("SESSIOND_TLS_CERT / SESSIOND_TLS_KEY: %w", err)
		}
		d.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if leaf, err := x509.ParseCertificate(cert.Certificate[0]); err == nil {
			d.metrics.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sessiond_tls_certificate_expiry_timestamp_seconds",
				Help: "When the certificate served (SESSIOND_TLS_CERT) expires, Unix seconds."}, func() float64 { return float64(leaf.NotAfter.Unix()) }))
		}
	}
	return d.newServer(counter)
}

// newServer makes the HTTP handler; it needs the main listener's address for the transport mode,
// so it binds it too.
func (d *daemon) newServer(counter server.Counter) error {
	cfg := d.cfg
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("SESSIOND_ADDR %s: %w", cfg.Addr, err)
	}
	d.ln = ln
	mode, allowInsecure := transportMode(cfg, ln.Addr())
	d.mode = mode
	d.srv, err = server.New(server.Config{
		Manager: d.mgr, Hub: d.hub, Logger: d.log, AllowedOrigins: cfg.AllowedOrigins,
		HandshakeTimeout: cfg.HandshakeTimeout, DrainDelay: cfg.DrainDelay, DrainSpread: cfg.DrainSpread, AccessLog: cfg.AccessLog, Ready: d.st.Ping, Web: web.Static(), WebScriptHashes: web.InlineScriptHashes(),
		Metrics: d.metrics, Limits: cfg.Limits, Counter: counter,
		TrustedProxies: cfg.TrustedProxies, ProxyHeader: cfg.ProxyHeader, AllowInsecure: allowInsecure,
	})
	if err != nil {
		return fmt.Errorf("invalid SESSIOND_ALLOWED_ORIGINS: %w", err)
	}
	if d.tls != nil {
		d.ln = tls.NewListener(ln, d.tls)
	}
	return nil
}

// listen starts the admin and metrics listeners and pprof, logs the start-up line and reports
// the main address to ready.
func (d *daemon) listen(ready func(string)) error {
	warnKeyFileInDataDir(d.cfg, d.ln.Addr(), d.log)
	if err := d.listenAdmin(); err != nil {
		return err
	}
	if err := d.listenMetrics(); err != nil {
		return err
	}
	if d.cfg.PprofAddr != "" {
		stop, err := startPprof(d.cfg.PprofAddr, d.log)
		if err != nil {
			return fmt.Errorf("SESSIOND_PPROF_ADDR %s: %w", d.cfg.PprofAddr, err)
		}
		d.stopProf = stop
	}
	scheme := "http"
	if d.tls != nil {
		scheme = "https"
	}
	p := d.mgr.Policy()
	d.log.Info().Str("addr", d.ln.Addr().String()).Str("store", d.st.kind).Str("hub", d.hubKind).Str("transport", d.mode).
		Str("idle_timeout", p.IdleTimeout.String()).Str("absolute_timeout", p.AbsoluteTimeout.String()).
		Msg("sessiond listening; demo page at " + scheme + "://" + d.ln.Addr().String() + "/")
	if ready != nil {
		ready(d.ln.Addr().String())
	}
	return nil
}

func (d *daemon) listenAdmin() error {
	addr := d.cfg.AdminAddr
	if addr == "" {
		return nil
	}
	if !loopbackAddr(addr) && d.tls == nil {
		return fmt.Errorf("SESSIOND_ADMIN_ADDR %s is not a loopback address: the admin API crosses a network there and needs TLS (set SESSIOND_TLS_CERT and SESSIOND_TLS_KEY, which it shares with the main listener) or bind it to 127.0.0.1", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("SESSIOND_ADMIN_ADDR %s: %w", addr, err)
	}
	if d.tls != nil {
		ln = tls.NewListener(ln, d.tls)
	}
	if d.keys.LegacyAdminToken() {
		d.log.Warn().Msg("the key file has no admin key: the admin token is derived from the log key and never changes; rotate the keys (sessiond keygen -rotate, then sessiond admin rotate-keys) to give the admin API a secret of its own")
	}
	d.serveAux(ln, d.srv.AdminHandler(), "admin API listening")
	return nil
}

func (d *daemon) listenMetrics() error {
	addr := d.cfg.MetricsAddr
	if addr == "" {
		d.log.Info().Msg("metrics are not served: set SESSIOND_METRICS_ADDR to a management address")
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("SESSIOND_METRICS_ADDR %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", d.metrics.Handler())
	d.serveAux(ln, mux, "metrics listening")
	return nil
}

func (d *daemon) serveAux(ln net.Listener, h http.Handler, msg string) {
	s := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	d.aux = append(d.aux, s)
	go func() { _ = s.Serve(ln) }()
	d.log.Info().Str("addr", ln.Addr().String()).Msg(msg)
}

// run serves until ctx ends (or the server or background work fails), then shuts down in
// order: stop accepting, tell devices to reconnect (1001) and wait for them, finish in-flight
// requests, then stop background work.
func (d *daemon) run(ctx context.Context) error {
	// Bounds for plain requests (a slow client cannot hold a connection and a goroutine
	// forever); WebSockets clear them at the upgrade.
	t := d.cfg.HTTPTimeout
	httpSrv := &http.Server{Handler: d.srv, TLSConfig: d.tls, ReadHeaderTimeout: min(10*time.Second, t),
		ReadTimeout: t, WriteTimeout: t, IdleTimeout: 4 * t}
	bg, bgCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer bgCancel()
	g, gctx := errgroup.WithContext(bg)
	g.Go(func() error { return d.mgr.Run(gctx) })
	g.Go(func() error { return d.hub.Run(gctx) })
	serveErr := make(chan error, 1)
	go func() { serveErr <- httpSrv.Serve(d.ln) }()

	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		d.log.Error().Err(err).Msg("HTTP server stopped")
	case <-gctx.Done():
	}
	d.log.Info().Msg("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_ = d.srv.Shutdown(sctx)
	_ = httpSrv.Shutdown(sctx)
	for _, s := range d.aux {
		_ = s.Shutdown(sctx)
	}
	d.aux = nil
	bgCancel()
	if gerr := g.Wait(); gerr != nil && err == nil {
		err = gerr
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// Close releases what the daemon holds: listeners still open, Redis, the store.
func (d *daemon) Close() {
	for _, s := range d.aux {
		_ = s.Close()
	}
	if d.stopProf != nil {
		d.stopProf()
	}
	if d.ln != nil {
		_ = d.ln.Close()
	}
	if d.redis != nil {
		_ = d.redis.Close()
	}
	if d.st != nil {
		d.st.close()
	}
}
