package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/mattn/go-isatty"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sessiond/sessiond/hub"
	"github.com/sessiond/sessiond/session"
	"github.com/sessiond/sessiond/store"
)

// run is the whole program; tests call it with their own arguments and environment, on :0,
// and learn the listen address through ready.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, ready func(addr string)) error {
	// The subcommands, all dispatched here; without one the node runs.
	sub, rest := "", []string(nil)
	if len(args) > 0 {
		sub, rest = args[0], args[1:]
	}
	switch {
	case sub == "version" || isVersionFlag(args):
		return printVersion(stdout)
	case sub == "keygen" && hasFlag(rest, "rotate", "stage", "retire", "i"):
		return keygenRotate(rest, stdout, stderr)
	case sub == "keygen":
		return keygen(rest, stdout, stderr)
	case sub == "admin" && slices.Contains(rest, "rotate-keys"):
		i := slices.Index(rest, "rotate-keys")
		return rotateKeys(ctx, slices.Delete(slices.Clone(rest), i, i+1), getenv, stdout, stderr)
	case sub == "admin":
		return admin(ctx, rest, getenv, stdout, stderr)
	}
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	log := newLogger(cfg.LogFormat, stderr).Level(cfg.LogLevel)
	return serve(ctx, cfg, log, ready)
}

func keygen(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sessiond keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "file to write (mode 0600; an existing file is never replaced)")
	ifMissing := fs.Bool("if-missing", false, "succeed without writing when the file exists (for an init step that runs on every start)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *out == "" {
		return errors.New("keygen: -o FILE is required")
	}
	if *ifMissing {
		if _, err := os.Stat(*out); err == nil {
			fmt.Fprintf(stdout, "%s exists; left as it is\n", *out)
			return nil
		}
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
	session.Backend
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
		return &storeHandle{Backend: pg, kind: "postgres", close: func() { pg.Close(); pool.Close() }}, nil
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	path := cfg.DataDir + string(os.PathSeparator) + "sessiond.db"
	sq, err := store.OpenSQLite(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("embedded store %s: %w", path, err)
	}
	return &storeHandle{Backend: sq, kind: "sqlite", close: func() { sq.Close() }}, nil
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
// in-process loopback. (The hub reports re-connections to whoever registered with it.)
func newBroker(cfg *config, log zerolog.Logger) (hub.Broker, redis.UniversalClient, error) {
	if cfg.RedisURL == "" {
		return hub.NewLoopback(), nil, nil
	}
	if cfg.RedisCluster {
		opts, err := redis.ParseClusterURL(cfg.RedisURL)
		if err != nil {
			return nil, nil, fmt.Errorf("invalid SESSIOND_REDIS_URL (a cluster: redis://host:port?addr=host2:port&addr=host3:port): %w", err)
		}
		client := redis.NewClusterClient(opts)
		r, err := hub.NewRedisSharded(hub.RedisShardedConfig{Client: client, Prefix: cfg.RedisPrefix, Logger: log})
		if err != nil {
			client.Close()
			return nil, nil, err
		}
		return r, client, nil
	}
	opts, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, nil, fmt.Errorf("invalid SESSIOND_REDIS_URL: %w", err)
	}
	client := redis.NewClient(opts)
	r, err := hub.NewRedis(hub.RedisConfig{Client: client, Prefix: cfg.RedisPrefix, Logger: log})
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

// serve runs one node until ctx ends: open it, listen, run, close.
func serve(ctx context.Context, cfg *config, log zerolog.Logger, ready func(string)) error {
	d, err := openDaemon(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.listen(ready); err != nil {
		return err
	}
	return d.run(ctx)
}
