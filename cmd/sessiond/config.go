package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/sessiond/sessiond/server"
	"github.com/sessiond/sessiond/session"
)

// errUsage is returned after flag parsing has already printed what was wrong.
var errUsage = errors.New("usage")

// maxDrain bounds the drain delay and spread together, leaving the close handshakes time
// within the 15 s a shutdown gives the connections.
const maxDrain = 10 * time.Second

// config is the server's configuration, from flags and SESSIOND_* variables (flags win).
type config struct {
	Addr             string
	DataDir          string
	DatabaseURL      string
	RedisURL         string
	RedisCluster     bool
	RedisPrefix      string
	AllowedOrigins   []string
	KeyFile          string
	HandshakeTimeout time.Duration
	DrainDelay       time.Duration
	DrainSpread      time.Duration
	LogFormat        string
	LogLevel         zerolog.Level
	AccessLog        bool
	AdminAddr        string
	MetricsAddr      string
	HTTPTimeout      time.Duration
	PprofAddr        string
	Fingerprint      session.FingerprintPolicy
	ProofRequired    bool
	TLSCert, TLSKey  string
	TrustedProxies   []netip.Prefix
	ProxyHeader      string
	InsecureHTTP     bool
	Limits           server.Limits
	Policy           session.Policy
}

// setting describes one option: its flag, its variable and how to parse it.
type setting struct {
	flag, env, def, help string
	set                  func(string) error
}

// durationOrZeroSetter is durationSetter that also takes 0 (off).
func durationOrZeroSetter(d *time.Duration) func(string) error {
	return func(v string) error {
		x, err := time.ParseDuration(v)
		if err != nil || x < 0 {
			return fmt.Errorf("%q is not a duration >= 0 (use Go syntax: 0s, 5s, 2m)", v)
		}
		*d = x
		return nil
	}
}

func boolSetter(b *bool) func(string) error {
	return func(v string) error {
		x, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not true or false", v)
		}
		*b = x
		return nil
	}
}

func durationSetter(d *time.Duration) func(string) error {
	return func(v string) error {
		x, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%q is not a duration (use Go syntax: 90s, 30m, 12h)", v)
		}
		if x <= 0 {
			return fmt.Errorf("%q must be positive", v)
		}
		*d = x
		return nil
	}
}

func policySetter(p *string) func(string) error {
	return func(v string) error {
		if v != session.FingerprintOff && v != session.FingerprintLog && v != session.FingerprintRevoke {
			return fmt.Errorf("%q is not off, log or revoke", v)
		}
		*p = v
		return nil
	}
}

func intSetter(n *int) func(string) error {
	return func(v string) error {
		x, err := strconv.Atoi(v)
		if err != nil || x <= 0 {
			return fmt.Errorf("%q is not a whole number > 0", v)
		}
		*n = x
		return nil
	}
}

func stringSetter(s *string) func(string) error {
	return func(v string) error { *s = v; return nil }
}

func (c *config) settings() []setting {
	p := &c.Policy
	return []setting{
		{"addr", "SESSIOND_ADDR", "127.0.0.1:8080", "listen address", stringSetter(&c.Addr)},
		{"data-dir", "SESSIOND_DATA_DIR", "data", "directory of the embedded store and generated keys", stringSetter(&c.DataDir)},
		{"database-url", "SESSIOND_DATABASE_URL", "", "PostgreSQL URL; replaces the embedded store", stringSetter(&c.DatabaseURL)},
		{"redis-url", "SESSIOND_REDIS_URL", "", "Redis URL; the hub then spans every node", stringSetter(&c.RedisURL)},
		{"redis-cluster", "SESSIOND_REDIS_CLUSTER", "false", "SESSIOND_REDIS_URL is a Redis Cluster (redis://host:port?addr=host2:port&addr=host3:port; Redis 7): notices use sharded pub/sub", boolSetter(&c.RedisCluster)},
		{"redis-prefix", "SESSIOND_REDIS_PREFIX", "sessiond:", "prefix of the Redis pub/sub channels (one deployment per prefix)", stringSetter(&c.RedisPrefix)},
		{"allowed-origins", "SESSIOND_ALLOWED_ORIGINS", "", "comma-separated origins allowed to open WebSockets (default: the server's own)", func(v string) error {
			c.AllowedOrigins = nil
			for _, o := range strings.Split(v, ",") {
				if o = strings.TrimSpace(o); o != "" {
					c.AllowedOrigins = append(c.AllowedOrigins, o)
				}
			}
			return nil
		}},
		{"key-file", "SESSIOND_KEY_FILE", "", "key file (default: DATA_DIR/keys.json, generated when absent in single-node mode)", stringSetter(&c.KeyFile)},
		{"admin-addr", "SESSIOND_ADMIN_ADDR", "", "listen address of the admin API (e.g. 127.0.0.1:8081; empty: off)", stringSetter(&c.AdminAddr)},
		{"metrics-addr", "SESSIOND_METRICS_ADDR", "", "serve /metrics on this management address (never on the main listener; unset: not served)", stringSetter(&c.MetricsAddr)},
		{"pprof-addr", "SESSIOND_PPROF_ADDR", "", "serve net/http/pprof on this address (debugging, load tests; keep it on loopback; empty: off)", stringSetter(&c.PprofAddr)},
		{"login-limit-per-user", "SESSIOND_LOGIN_LIMIT_PER_USER", "10", "failed or abandoned logins (and re-authentications) per username from one client address per minute", intSetter(&c.Limits.LoginFailuresPerUser)},
		{"login-ceiling-per-user", "SESSIOND_LOGIN_CEILING_PER_USER", "100", "failed or abandoned logins per username from all addresses per minute; halved for an hour each time it is reached", intSetter(&c.Limits.LoginCeilingPerUser)},
		{"login-limit-per-address", "SESSIOND_LOGIN_LIMIT_PER_ADDRESS", "200", "login attempts per client address per minute", intSetter(&c.Limits.LoginsPerAddress)},
		{"register-limit-per-address", "SESSIOND_REGISTER_LIMIT_PER_ADDRESS", "200", "registrations per client address per minute", intSetter(&c.Limits.RegistrationsPerAddr)},
		{"messages-per-second", "SESSIOND_MESSAGES_PER_SECOND", "50", "client messages per connection per second (burst: twice that)", func(v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return fmt.Errorf("%q is not a whole number > 0", v)
			}
			c.Limits.MessagesPerSecond, c.Limits.MessageBurst = float64(n), 2*n
			return nil
		}},
		{"connections-per-address", "SESSIOND_CONNECTIONS_PER_ADDRESS", "2000", "concurrent WebSockets per client address", intSetter(&c.Limits.ConnectionsPerAddr)},
		{"fingerprint-user-agent", "SESSIOND_FINGERPRINT_USER_AGENT", session.FingerprintRevoke, "off, log or revoke: a different browser family/major version than at login", policySetter(&c.Fingerprint.UserAgent)},
		{"fingerprint-network", "SESSIOND_FINGERPRINT_NETWORK", session.FingerprintLog, "off, log or revoke: a different /24 (IPv4) or /64 (IPv6) than at login", policySetter(&c.Fingerprint.Network)},
		{"proof-of-possession", "SESSIOND_PROOF_OF_POSSESSION", "false", "new sessions require a proof of possession on every API request and resume", boolSetter(&c.ProofRequired)},
		{"proxy-header", "SESSIOND_PROXY_HEADER", server.ProxyHeaderXForwardedFor, "the one header trusted proxies set the client address in: x-forwarded-for, forwarded or x-real-ip", func(v string) error {
			v = strings.ToLower(strings.TrimSpace(v))
			if !server.ValidProxyHeader(v) {
				return fmt.Errorf("%q is not x-forwarded-for, forwarded or x-real-ip", v)
			}
			c.ProxyHeader = v
			return nil
		}},
		{"tls-cert", "SESSIOND_TLS_CERT", "", "PEM certificate (chain): serve HTTPS/WSS directly", stringSetter(&c.TLSCert)},
		{"tls-key", "SESSIOND_TLS_KEY", "", "PEM private key of the certificate", stringSetter(&c.TLSKey)},
		{"trusted-proxies", "SESSIOND_TRUSTED_PROXIES", "", "comma-separated CIDRs (or addresses) whose forwarding header (SESSIOND_PROXY_HEADER) is believed", func(v string) error {
			c.TrustedProxies = nil
			for _, f := range strings.Split(v, ",") {
				if f = strings.TrimSpace(f); f == "" {
					continue
				}
				pfx, err := netip.ParsePrefix(f)
				if err != nil {
					a, aerr := netip.ParseAddr(f)
					if aerr != nil {
						return fmt.Errorf("%q is not a CIDR or an address", f)
					}
					pfx = netip.PrefixFrom(a, a.BitLen())
				}
				c.TrustedProxies = append(c.TrustedProxies, pfx.Masked())
			}
			return nil
		}},
		{"insecure-http", "SESSIOND_INSECURE_HTTP", "false", "issue tokens over plain HTTP on a non-loopback address (never in production)", boolSetter(&c.InsecureHTTP)},
		{"idle-timeout", "SESSIOND_IDLE_TIMEOUT", "30m", "inactivity after which a session ends", durationSetter(&p.IdleTimeout)},
		{"absolute-timeout", "SESSIOND_ABSOLUTE_TIMEOUT", "12h", "session lifetime from login, never extended", durationSetter(&p.AbsoluteTimeout)},
		{"refresh-lead", "SESSIOND_REFRESH_LEAD", "2m", "how long before a deadline devices are prompted", durationSetter(&p.RefreshLead)},
		{"rotation-grace", "SESSIOND_ROTATION_GRACE", "30s", "how long a rotated-away token still works", durationSetter(&p.RotationGrace)},
		{"cache-ttl", "SESSIOND_CACHE_TTL", "1m", "the longest a node serves a validation from its cache while the hub is healthy (revocations and rotations drop entries at once)", durationSetter(&p.CacheTTL)},
		{"login-pending-timeout", "SESSIOND_LOGIN_PENDING_TIMEOUT", "10s", "how long a login.start or reauth.start can be finished", durationSetter(&p.PendingTimeout)},
		{"http-timeout", "SESSIOND_HTTP_TIMEOUT", "30s", "time to read a whole HTTP request and to write its answer (idle keep-alive: 4x); WebSockets are exempt after the upgrade", durationSetter(&c.HTTPTimeout)},
		{"bad-tokens-per-address", "SESSIOND_BAD_TOKENS_PER_ADDRESS", "100", "refused tokens per client address per minute (each costs a store read); then 429", intSetter(&c.Limits.BadTokensPerAddr)},
		{"handshake-timeout", "SESSIOND_HANDSHAKE_TIMEOUT", "30s", "time a connection has to log in or resume", durationSetter(&c.HandshakeTimeout)},
		{"drain-delay", "SESSIOND_DRAIN_DELAY", "0s", "on SIGTERM, how long /readyz answers 503 before WebSockets are told to reconnect (behind a load balancer: longer than its health-check interval times its fall count)", durationOrZeroSetter(&c.DrainDelay)},
		{"drain-spread", "SESSIOND_DRAIN_SPREAD", "0s", "on SIGTERM, the window over which WebSockets are told to reconnect, at random, so that they do not all land on the other nodes at once", durationOrZeroSetter(&c.DrainSpread)},
		{"max-sessions", "SESSIOND_MAX_SESSIONS", "10", "live sessions per user (0: unlimited)", func(v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return fmt.Errorf("%q is not a whole number >= 0", v)
			}
			p.MaxSessions = n
			if n == 0 {
				p.MaxSessions = -1
			}
			return nil
		}},
		{"session-limit-policy", "SESSIOND_SESSION_LIMIT_POLICY", session.EvictOldest, "evict_oldest or deny_new", func(v string) error {
			if v != session.EvictOldest && v != session.DenyNew {
				return fmt.Errorf("%q is not evict_oldest or deny_new", v)
			}
			p.LimitPolicy = v
			return nil
		}},
		{"retention", "SESSIOND_RETENTION", "24h", "how long ended sessions are kept before the sweeper deletes them", durationSetter(&p.Retention)},
		{"sweep-interval", "SESSIOND_SWEEP_INTERVAL", "1m", "pause between sweeps of ended sessions", durationSetter(&p.SweepInterval)},
		{"log-level", "SESSIOND_LOG_LEVEL", "info", "the least severe log lines written: debug, info, warn or error", func(v string) error {
			l, err := zerolog.ParseLevel(v)
			if err != nil || l < zerolog.DebugLevel || l > zerolog.ErrorLevel {
				return fmt.Errorf("%q is not debug, info, warn or error", v)
			}
			c.LogLevel = l
			return nil
		}},
		{"access-log", "SESSIOND_ACCESS_LOG", "true", "a log line per HTTP request, at info (method, path without query, status, size, time, request id; never a token, address or user agent)", boolSetter(&c.AccessLog)},
		{"log-format", "SESSIOND_LOG_FORMAT", "auto", "auto (console on a terminal, else JSON), console or json", func(v string) error {
			if v != "auto" && v != "console" && v != "json" {
				return fmt.Errorf("%q is not auto, console or json", v)
			}
			c.LogFormat = v
			return nil
		}},
	}
}

// parseConfig applies defaults, then variables, then flags; the first bad value stops it with
// one line naming the setting.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	c := &config{}
	settings := c.settings()
	for _, s := range settings {
		if err := s.set(s.def); err != nil && s.def != "" {
			return nil, fmt.Errorf("default of %s: %w", s.flag, err)
		}
	}
	for _, s := range settings {
		if v := getenv(s.env); v != "" {
			if err := s.set(v); err != nil {
				return nil, fmt.Errorf("invalid %s: %w", s.env, err)
			}
		}
	}
	fs := flag.NewFlagSet("sessiond", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var flagErr error
	for _, s := range settings {
		s := s
		fs.Func(s.flag, s.help+" ($"+s.env+", default "+strconv.Quote(s.def)+")", func(v string) error {
			if err := s.set(v); err != nil {
				flagErr = fmt.Errorf("invalid -%s: %w", s.flag, err)
				return err
			}
			return nil
		})
	}
	if err := fs.Parse(args); err != nil {
		if flagErr != nil {
			return nil, flagErr
		}
		return nil, errUsage
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (subcommands: keygen, admin)", fs.Arg(0))
	}
	if c.RedisCluster && c.RedisURL == "" {
		return nil, fmt.Errorf("invalid SESSIOND_REDIS_CLUSTER: it needs SESSIOND_REDIS_URL (the cluster's nodes)")
	}
	if c.DrainDelay+c.DrainSpread > maxDrain {
		return nil, fmt.Errorf("invalid SESSIOND_DRAIN_DELAY + SESSIOND_DRAIN_SPREAD: %s, at most %s (the shutdown's budget for the connections is 15 s)", c.DrainDelay+c.DrainSpread, maxDrain)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return nil, fmt.Errorf("invalid SESSIOND_TLS_CERT / SESSIOND_TLS_KEY: set both or neither")
	}
	if c.KeyFile == "" {
		c.KeyFile = filepath.Join(c.DataDir, "keys.json")
	}
	if err := c.Policy.Defaults().Validate(); err != nil {
		return nil, fmt.Errorf("invalid session policy: %w", err)
	}
	return c, nil
}
