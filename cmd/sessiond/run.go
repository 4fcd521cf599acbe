package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/mattn/go-isatty"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/sessiond/sessiond/hub"
	"github.com/sessiond/sessiond/server"
	"github.com/sessiond/sessiond/session"
	"github.com/sessiond/sessiond/store"
	"github.com/sessiond/sessiond/web"
)

// run is the whole program; tests call it with their own arguments and environment, on :0,
// and learn the listen address through ready.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, ready func(addr string)) error {
	if ok, err := keyRotation(ctx, args, getenv, stdout, stderr); ok {
		return err
	}
	if len(args) > 0 && args[0] == "keygen" {
		return keygen(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "admin" {
		return admin(ctx, args[1:], getenv, stdout, stderr)
	}
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	log := newLogger(cfg.LogFormat, stderr)
	return serve(ctx, cfg, log, ready)
}

func keygen(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sessiond keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "file to write (mode 0600; an existing file is never replaced)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *out == "" {
		return errors.New("keygen: -o FILE is required")
	}
	if err := session.WriteKeys(*out, session.GenerateKeys()); err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	fmt.Fprintf(stdout, "wrote %s\n", *out)
	return nil
}

func newLogger(format string, w io.Writer) zerolog.Logger {
	if format == "console" || (format == "auto" && isTerminal(w)) {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	return zerolog.New(w).With().Timestamp().Logger()
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isatty.IsTerminal(f.Fd())
}

// storeHandle is the opened store with what it takes to close it.
type storeHandle struct {
	session.Store
	kind  string
	close func()
}

func openStore(ctx context.Context, cfg *config) (*storeHandle, error) {
	if cfg.DatabaseURL != "" {
		pcfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
		if err != nil {
			return nil, fmt.Errorf("invalid SESSIOND_DATABASE_URL: %w", err)
		}
		pool, err := pgxpool.NewWithConfig(ctx, pcfg)
		if err != nil {
			return nil, fmt.Errorf("PostgreSQL: %w", err)
		}
		pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		pg, err := store.NewPostgres(pctx, pool)
		if err != nil {
			pool.Close()
			return nil, fmt.Errorf("PostgreSQL: %w", err)
		}
		return &storeHandle{Store: pg, kind: "postgres", close: func() { pg.Close(); pool.Close() }}, nil
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	path := cfg.DataDir + string(os.PathSeparator) + "sessiond.db"
	sq, err := store.OpenSQLite(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("embedded store %s: %w", path, err)
	}
	return &storeHandle{Store: sq, kind: "sqlite", close: func() { sq.Close() }}, nil
}

func loadKeys(cfg *config, log zerolog.Logger) (*session.Keys, error) {
	multiNode := cfg.RedisURL != ""
	if multiNode {
		k, err := session.LoadKeys(cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("SESSIOND_KEY_FILE: every node of a multi-node deployment needs the same key file (make one with `sessiond keygen -o FILE`): %w", err)
		}
		return k, nil
	}
	k, generated, err := session.LoadOrGenerateKeys(cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", cfg.KeyFile, err)
	}
	if generated {
		log.Info().Str("path", cfg.KeyFile).Msg("generated a new key file (keep it secret and back it up)")
	}
	return k, nil
}

// newBroker returns the cross-node leg of the hub: Redis pub/sub when configured, else the
// in-process loopback. onReconnect runs after every re-established Redis link.
func newBroker(cfg *config, log zerolog.Logger, onReconnect func()) (hub.Broker, *redis.Client, error) {
	if cfg.RedisURL == "" {
		return hub.NewLoopback(), nil, nil
	}
	opts, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, nil, fmt.Errorf("invalid SESSIOND_REDIS_URL: %w", err)
	}
	client := redis.NewClient(opts)
	r, err := hub.NewRedis(hub.RedisConfig{Client: client, Prefix: cfg.RedisPrefix, Logger: log, OnReconnect: onReconnect})
	if err != nil {
		client.Close()
		return nil, nil, fmt.Errorf("invalid SESSIOND_REDIS_URL: %w", err)
	}
	return r, client, nil
}

// loopbackAddr reports whether a listen address (host:port) binds to loopback only.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// warnKeyFileInDataDir warns when a node serving beyond loopback keeps its key file inside the
// data directory: a copy or a backup of the directory then holds the seal keys and the OPRF seed
// with the data they protect (an offline attack on every password).
func warnKeyFileInDataDir(cfg *config, addr net.Addr, log zerolog.Logger) {
	if ta, ok := addr.(*net.TCPAddr); ok && ta.IP.IsLoopback() {
		return
	}
	dir, err1 := filepath.Abs(cfg.DataDir)
	key, err2 := filepath.Abs(cfg.KeyFile)
	if err1 != nil || err2 != nil {
		return
	}
	if rel, err := filepath.Rel(dir, key); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return
	}
	log.Warn().Str("key_file", cfg.KeyFile).Str("data_dir", cfg.DataDir).
		Msg("the key file is inside the data directory: a copy or backup of the directory would hold the keys with the data they protect; set SESSIOND_KEY_FILE to a path outside it (docs/OPERATIONS.md)")
}

// transportMode says how tokens may travel, for the start-up log, and whether plain HTTP may
// carry them: only on a loopback listener or when the operator said so.
func transportMode(cfg *config, addr net.Addr) (mode string, allowInsecure bool) {
	loopback := false
	if ta, ok := addr.(*net.TCPAddr); ok {
		loopback = ta.IP.IsLoopback()
	}
	switch {
	case cfg.TLSCert != "":
		return "tls", false
	case cfg.InsecureHTTP:
		return "plain HTTP allowed by SESSIOND_INSECURE_HTTP (tokens travel in clear)", true
	case loopback:
		return "plain HTTP on loopback (development)", true
	case len(cfg.TrustedProxies) > 0:
		return "behind a TLS-terminating proxy (tokens only for requests forwarded as https)", false
	default:
		return "plain HTTP: tokens are refused until TLS is configured", false
	}
}

func serve(ctx context.Context, cfg *config, log zerolog.Logger, ready func(string)) error {
	keys, err := loadKeys(cfg, log)
	if err != nil {
		return err
	}
	st, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.close()
	metrics := server.NewMetrics()
	instrumented := server.InstrumentStore(st, metrics)
	if err := st.CheckKeyFingerprint(ctx, keys.Fingerprint()); err != nil {
		if errors.Is(err, session.ErrKeyMismatch) {
			return fmt.Errorf("SESSIOND_KEY_FILE: this node's keys differ from the ones this store was set up with; start every node with the same key file")
		}
		return fmt.Errorf("store: %w", err)
	}

	var srvRef atomic.Pointer[server.Server]
	broker, redisClient, err := newBroker(cfg, log, func() {
		if srv := srvRef.Load(); srv != nil {
			rctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			srv.Reconcile(rctx)
		}
	})
	if err != nil {
		return err
	}
	hubKind := "loopback"
	var counter server.Counter
	if redisClient != nil {
		defer redisClient.Close()
		hubKind = "redis"
		counter = server.NewRedisCounter(redisClient, cfg.RedisPrefix, log)
	}
	h := hub.New(broker)
	notifier := server.NewNotifier(h, log)
	mgr, err := session.NewManager(session.Config{Store: instrumented, Keys: keys, Policy: cfg.Policy, Notifier: notifier,
		Logger: log, CacheUsable: h.Healthy, Observer: metrics,
		Fingerprint: cfg.Fingerprint, ProofOfPossession: cfg.ProofRequired})
	if err != nil {
		return fmt.Errorf("invalid session policy: %w", err)
	}
	notifier.Attach(mgr)
	if err := server.SubscribeNode(ctx, h, mgr); err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	var tlsConfig *tls.Config
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return fmt.Errorf("SESSIOND_TLS_CERT / SESSIOND_TLS_KEY: %w", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("SESSIOND_ADDR %s: %w", cfg.Addr, err)
	}
	mode, allowInsecure := transportMode(cfg, ln.Addr())
	srv, err := server.New(server.Config{
		Manager: mgr, Hub: h, Logger: log, AllowedOrigins: cfg.AllowedOrigins,
		HandshakeTimeout: cfg.HandshakeTimeout, Ready: st.Ping, Web: web.Static(),
		Metrics: metrics, Limits: cfg.Limits, Counter: counter,
		TrustedProxies: cfg.TrustedProxies, ProxyHeader: cfg.ProxyHeader, AllowInsecure: allowInsecure,
	})
	if err != nil {
		ln.Close()
		return fmt.Errorf("invalid SESSIOND_ALLOWED_ORIGINS: %w", err)
	}
	srvRef.Store(srv)

	// Bounds for plain requests (a slow client cannot hold a connection and a goroutine
	// forever); WebSockets clear them at the upgrade.
	httpSrv := &http.Server{Handler: srv, TLSConfig: tlsConfig, ReadHeaderTimeout: min(10*time.Second, cfg.HTTPTimeout),
		ReadTimeout: cfg.HTTPTimeout, WriteTimeout: cfg.HTTPTimeout, IdleTimeout: 4 * cfg.HTTPTimeout}
	scheme := "http"
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
		scheme = "https"
	}
	warnKeyFileInDataDir(cfg, ln.Addr(), log)
	var adminSrv *http.Server
	if cfg.AdminAddr != "" {
		if !loopbackAddr(cfg.AdminAddr) && tlsConfig == nil {
			ln.Close()
			return fmt.Errorf("SESSIOND_ADMIN_ADDR %s is not a loopback address: the admin API crosses a network there and needs TLS (set SESSIOND_TLS_CERT and SESSIOND_TLS_KEY, which it shares with the main listener) or bind it to 127.0.0.1", cfg.AdminAddr)
		}
		aln, err := net.Listen("tcp", cfg.AdminAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("SESSIOND_ADMIN_ADDR %s: %w", cfg.AdminAddr, err)
		}
		if tlsConfig != nil {
			aln = tls.NewListener(aln, tlsConfig)
		}
		if keys.LegacyAdminToken() {
			log.Warn().Msg("the key file has no admin key: the admin token is derived from the log key and never changes; rotate the keys (sessiond keygen -rotate, then sessiond admin rotate-keys) to give the admin API a secret of its own")
		}
		adminSrv = &http.Server{Handler: srv.AdminHandler(), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = adminSrv.Serve(aln) }()
		log.Info().Str("addr", aln.Addr().String()).Msg("admin API listening")
	}

	var metricsSrv *http.Server
	if cfg.MetricsAddr != "" {
		mln, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			ln.Close()
			if adminSrv != nil {
				adminSrv.Close()
			}
			return fmt.Errorf("SESSIOND_METRICS_ADDR %s: %w", cfg.MetricsAddr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", metrics.Handler())
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = metricsSrv.Serve(mln) }()
		log.Info().Str("addr", mln.Addr().String()).Msg("metrics listening")
	} else {
		log.Info().Msg("metrics are not served: set SESSIOND_METRICS_ADDR to a management address")
	}

	p := mgr.Policy()
	log.Info().Str("addr", ln.Addr().String()).Str("store", st.kind).Str("hub", hubKind).Str("transport", mode).
		Str("idle_timeout", p.IdleTimeout.String()).Str("absolute_timeout", p.AbsoluteTimeout.String()).
		Msg("sessiond listening; demo page at " + scheme + "://" + ln.Addr().String() + "/")
	if ready != nil {
		ready(ln.Addr().String())
	}

	if cfg.PprofAddr != "" {
		stopPprof, err := startPprof(cfg.PprofAddr, log)
		if err != nil {
			ln.Close()
			return fmt.Errorf("SESSIOND_PPROF_ADDR %s: %w", cfg.PprofAddr, err)
		}
		defer stopPprof()
	}

	bg, bgCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer bgCancel()
	g, gctx := errgroup.WithContext(bg)
	g.Go(func() error { return mgr.Run(gctx) })
	g.Go(func() error { return h.Run(gctx) })
	serveErr := make(chan error, 1)
	go func() { serveErr <- httpSrv.Serve(ln) }()

	select {
	case <-ctx.Done():
	case err = <-serveErr:
		log.Error().Err(err).Msg("HTTP server stopped")
	case <-gctx.Done():
	}
	// Ordered shutdown: stop accepting, tell devices to reconnect (1001) and wait for them,
	// finish in-flight requests, then stop background work and the store.
	log.Info().Msg("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	_ = httpSrv.Shutdown(sctx)
	if adminSrv != nil {
		_ = adminSrv.Shutdown(sctx)
	}
	if metricsSrv != nil {
		_ = metricsSrv.Shutdown(sctx)
	}
	bgCancel()
	if gerr := g.Wait(); gerr != nil && err == nil {
		err = gerr
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
