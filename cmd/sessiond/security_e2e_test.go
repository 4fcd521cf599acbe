package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bytemare/opaque"
	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/sessiond/sessiond/client"
	"github.com/sessiond/sessiond/internal/clientx"
)

// End-to-end tests of the security issue: abuse limits, no compression, security headers, the
// activity list, the metrics page, and the whole-scenario check that no secret reaches a log
// line or rests in clear in the database. Each boots the real server and talks to it over real
// WebSockets and HTTP. They are not parallel: some count requests against a clock, and the
// heavy ones should not slow down the timed lifecycle tests that run in parallel.

// ---- helpers ----

// secDefaults is the configuration with no flag and no variable set.
func secDefaults(t *testing.T) *config {
	t.Helper()
	cfg, err := parseConfig(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// secKE1 returns a well-formed KE1 (base64url) for a login.start that is never finished.
func secKE1(t *testing.T, password string) string {
	t.Helper()
	oc, _ := opaque.DefaultConfiguration().Client()
	ke1, err := oc.GenerateKE1([]byte(password))
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(ke1.Serialize())
}

// secNext returns the next message that answers no pending call (errors and replies to raw
// frames included).
func secNext(t *testing.T, c *client.Conn, what string) client.Message {
	t.Helper()
	select {
	case m, ok := <-c.Notices():
		if !ok {
			t.Fatalf("%s: connection closed with %d", what, c.CloseCode())
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no message", what)
	}
	return client.Message{}
}

// secGet fetches url with a plain GET.
func secGet(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer r.Body.Close()
	body, _ := io.ReadAll(r.Body)
	return r, body
}

// secMetrics returns the metrics page served at base.
func secMetrics(t *testing.T, base string) string {
	t.Helper()
	r, body := secGet(t, base+"/metrics")
	if r.StatusCode != http.StatusOK {
		t.Fatalf("GET %s/metrics: HTTP %d", base, r.StatusCode)
	}
	return string(body)
}

// secSeries sums the samples of metric name whose labels include every one of labels
// (`result="ok"`), and reports whether there was any.
func secSeries(text, name string, labels ...string) (float64, bool) {
	sum, found := 0.0, false
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "#") || !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		lbl := ""
		switch {
		case strings.HasPrefix(rest, "{"):
			end := strings.Index(rest, "}")
			if end < 0 {
				continue
			}
			lbl, rest = rest[1:end], rest[end+1:]
		case strings.HasPrefix(rest, " "):
		default:
			continue // another metric whose name starts with this one
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(","+lbl+",", ","+l+",")
		}
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		sum, found = sum+v, true
	}
	return sum, found
}

// secLoginRaw logs in with bytemare directly and returns the session and the OPAQUE messages
// of the exchange (ke1, ke2, ke3).
func secLoginRaw(t *testing.T, ctx context.Context, c *client.Conn, name, password, device string) (client.Session, [][]byte) {
	t.Helper()
	oc, _ := opaque.DefaultConfiguration().Client()
	ke1, err := oc.GenerateKE1([]byte(password))
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding
	m, err := c.Call(ctx, "login.start", map[string]any{"username": name, "ke1": b64.EncodeToString(ke1.Serialize()), "device": device})
	if err != nil {
		t.Fatalf("login.start: %v", err)
	}
	var ch struct {
		KE2 string `json:"ke2"`
	}
	_ = m.Decode(&ch)
	ke2b, _ := b64.DecodeString(ch.KE2)
	ke2, err := oc.Deserialize.KE2(ke2b)
	if err != nil {
		t.Fatal(err)
	}
	ke3, _, _, err := oc.GenerateKE3(ke2, nil, nil, &opaque.ClientOptions{KSFSalt: make([]byte, 16), KSFLength: 64, KSFParameters: []uint64{1, 64, 1}})
	if err != nil {
		t.Fatal(err)
	}
	m, err = c.Call(ctx, "login.finish", map[string]any{"ke3": b64.EncodeToString(ke3.Serialize())})
	if err != nil {
		t.Fatalf("login.finish: %v", err)
	}
	var ok struct {
		Session client.Session `json:"session"`
	}
	if err := m.Decode(&ok); err != nil || ok.Session.Token == "" {
		t.Fatalf("login.ok: %s", m.Raw)
	}
	return ok.Session, [][]byte{ke1.Serialize(), ke2b, ke3.Serialize()}
}

// ---- 1. login throttling per username ----

func TestThrottleLoginPerUser(t *testing.T) {
	if got := secDefaults(t).Limits.LoginFailuresPerUser; got != 10 {
		t.Fatalf("default SESSIOND_LOGIN_LIMIT_PER_USER is %d, want 10", got)
	}
	n := startNode(t, nil) // default limits
	ctx := ctxT(t)
	victim, _ := account(t, n, "victim", "right password")
	bystander, _ := account(t, n, "bystander", "bystander password")
	ghost := uniqueName("ghost") // never registered

	attacker := dial(t, n, cheap)
	for i := 1; i <= 10; i++ {
		if _, err := attacker.Login(ctx, victim, fmt.Sprintf("guess %d", i), ""); !client.IsCode(err, "auth_failed") {
			t.Fatalf("failed login %d of a known user: %v", i, err)
		}
		if _, err := attacker.Login(ctx, ghost, fmt.Sprintf("guess %d", i), ""); !client.IsCode(err, "auth_failed") {
			t.Fatalf("failed login %d of an unknown user: %v", i, err)
		}
	}
	// The 11th login.start is refused, even with the right password. The unknown user is
	// throttled after as many attempts, with the very same error: throttling tells nothing
	// about which names exist.
	_, errKnown := attacker.Login(ctx, victim, "right password", "")
	_, errUnknown := attacker.Login(ctx, ghost, "right password", "")
	var ek, eu *client.Error
	if !errors.As(errKnown, &ek) || ek.Code != "rate_limited" {
		t.Fatalf("11th login of a known user: %v, want rate_limited", errKnown)
	}
	if !errors.As(errUnknown, &eu) || *eu != *ek {
		t.Fatalf("11th login of an unknown user: %v, want the same %v", errUnknown, errKnown)
	}
	// The limit is the normalised username's: another spelling is the same name.
	if _, err := attacker.Login(ctx, strings.ToUpper(victim), "right password", ""); !client.IsCode(err, "rate_limited") {
		t.Fatalf("login as %s: %v, want rate_limited", strings.ToUpper(victim), err)
	}
	// Another username from the same address (and connection) is unaffected.
	if _, err := attacker.Login(ctx, bystander, "bystander password", ""); err != nil {
		t.Fatalf("login of another user from the same address: %v", err)
	}
	if v, _ := secSeries(secMetrics(t, n.Metrics), "sessiond_rate_limited_total", `limit="login_failures_per_user"`); v < 3 {
		t.Fatalf("sessiond_rate_limited_total{limit=login_failures_per_user} = %v, want >= 3", v)
	}

	// Configured lower; abandoned attempts (login.start never finished, as a browser whose
	// envelope does not open) count like failures.
	n3 := startNode(t, map[string]string{"SESSIOND_LOGIN_LIMIT_PER_USER": "3"})
	name, _ := account(t, n3, "quick", "pw")
	c := dial(t, n3, cheap)
	for i := 0; i < 3; i++ {
		if _, err := c.Call(ctx, "login.start", map[string]any{"username": name, "ke1": secKE1(t, "pw")}); err != nil {
			t.Fatalf("abandoned login.start %d: %v", i+1, err)
		}
	}
	if _, err := c.Login(ctx, name, "pw", ""); !client.IsCode(err, "rate_limited") {
		t.Fatalf("4th login with SESSIOND_LOGIN_LIMIT_PER_USER=3: %v, want rate_limited", err)
	}
}

// ---- 2. per-address login and registration limits ----

func TestLimitPerAddress(t *testing.T) {
	n := startNode(t, map[string]string{"SESSIOND_LOGIN_LIMIT_PER_ADDRESS": "5", "SESSIOND_REGISTER_LIMIT_PER_ADDRESS": "5"})
	ctx := ctxT(t)

	// Registrations: five pass, the sixth register.start is refused, on any connection (the
	// limit is the address's).
	reg := dial(t, n, cheap)
	var names []string
	for i := 0; i < 5; i++ {
		name := uniqueName("addr")
		if _, _, err := reg.Register(ctx, name, "pw"); err != nil {
			t.Fatalf("registration %d: %v", i+1, err)
		}
		names = append(names, name)
	}
	if _, _, err := reg.Register(ctx, uniqueName("addr"), "pw"); !client.IsCode(err, "rate_limited") {
		t.Fatalf("6th registration: %v, want rate_limited", err)
	}
	if _, _, err := dial(t, n, cheap).Register(ctx, uniqueName("addr"), "pw"); !client.IsCode(err, "rate_limited") {
		t.Fatalf("7th registration on another connection: %v, want rate_limited", err)
	}

	// Logins: every login.start counts, successful ones too; the sixth is refused whoever it
	// names and whatever the password.
	for i := 0; i < 5; i++ {
		c := dial(t, n, cheap)
		if _, err := c.Login(ctx, names[i], "pw", ""); err != nil {
			t.Fatalf("login %d: %v", i+1, err)
		}
		c.Close()
	}
	c := dial(t, n, cheap)
	if _, err := c.Login(ctx, names[0], "pw", ""); !client.IsCode(err, "rate_limited") {
		t.Fatalf("6th login: %v, want rate_limited", err)
	}
	if _, err := c.Login(ctx, uniqueName("ghost"), "pw", ""); !client.IsCode(err, "rate_limited") {
		t.Fatalf("7th login (unknown user): %v, want rate_limited", err)
	}
	// Another address has budgets of its own: the limits are per address, not global.
	other := dial(t, n, clientx.Cheap(client.Options{HTTPClient: httpFrom("127.0.0.2")}))
	if _, _, err := other.Register(ctx, uniqueName("addr"), "pw"); err != nil {
		t.Fatalf("registration from 127.0.0.2 while 127.0.0.1 is limited: %v", err)
	}
	if _, err := other.Login(ctx, names[0], "pw", ""); err != nil {
		t.Fatalf("login from 127.0.0.2 while 127.0.0.1 is limited: %v", err)
	}
	m := secMetrics(t, n.Metrics)
	for _, l := range []string{"logins_per_address", "registrations_per_address"} {
		if v, _ := secSeries(m, "sessiond_rate_limited_total", `limit="`+l+`"`); v < 2 {
			t.Fatalf("sessiond_rate_limited_total{limit=%q} = %v, want >= 2", l, v)
		}
	}
}

// TestLimitDefaultsAllow100: with the defaults one address performs 100 registrations and 100
// logins within the minute and none is refused.
func TestLimitDefaultsAllow100(t *testing.T) {
	cfg := secDefaults(t)
	if cfg.Limits.LoginsPerAddress < 100 || cfg.Limits.RegistrationsPerAddr < 100 {
		t.Fatalf("defaults allow %d logins and %d registrations per address a minute, want >= 100 each",
			cfg.Limits.LoginsPerAddress, cfg.Limits.RegistrationsPerAddr)
	}
	n := startNode(t, nil)
	const total, workers = 100, 4
	start := time.Now()
	var next atomic.Int32
	errs := make(chan error, total)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > total {
					return
				}
				errs <- func() error {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					c, err := client.Dial(ctx, n.Base, cheap)
					if err != nil {
						return fmt.Errorf("dial %d: %w", i, err)
					}
					defer c.Close()
					name := fmt.Sprintf("hundred-%03d-%s", i, randomHex(3))
					if _, _, err := c.Register(ctx, name, "pw"); err != nil {
						return fmt.Errorf("registration %d: %w", i, err)
					}
					if _, err := c.Login(ctx, name, "pw", ""); err != nil {
						return fmt.Errorf("login %d: %w", i, err)
					}
					return nil
				}()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	elapsed := time.Since(start)
	t.Logf("%d registrations + %d logins from one address (%d workers) in %s", total, total, workers, elapsed.Round(time.Millisecond))
	if elapsed >= time.Minute {
		t.Fatalf("took %s: longer than the limits' window, so this does not show the rate", elapsed)
	}
	m := secMetrics(t, n.Metrics)
	if _, found := secSeries(m, "sessiond_rate_limited_total"); found {
		t.Fatalf("something was rate limited:\n%s", grepLines(m, "sessiond_rate_limited_total"))
	}
	if v, _ := secSeries(m, "sessiond_logins_total", `result="ok"`); v != total {
		t.Fatalf("sessiond_logins_total{result=ok} = %v, want %d", v, total)
	}
}

func grepLines(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// ---- 3. messages per connection ----

func TestLimitMessagesPerConnection(t *testing.T) {
	n := startNode(t, map[string]string{"SESSIOND_MESSAGES_PER_SECOND": "5"}) // burst 10
	ctx := ctxT(t)

	// A burst over the limit: the first ten are answered, the rest get rate_limited (with their
	// id), and the connection stays open.
	c := dial(t, n, cheap)
	const burst = 15
	for i := 0; i < burst; i++ {
		if err := clientx.SendRaw(ctx, c, websocket.MessageText, []byte(fmt.Sprintf(`{"type":"ping","id":"p%d"}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	pongs, limited := 0, 0
	for i := 0; i < burst; i++ {
		m := secNext(t, c, fmt.Sprintf("reply to ping %d", i))
		if m.ID != fmt.Sprintf("p%d", i) {
			t.Fatalf("reply %d: %s", i, m.Raw)
		}
		switch {
		case m.Type == "pong":
			pongs++
		case m.Type == "error" && m.Code == "rate_limited":
			limited++
		default:
			t.Fatalf("reply %d: %s", i, m.Raw)
		}
	}
	if pongs < 10 || limited == 0 {
		t.Fatalf("burst of %d pings: %d pongs, %d rate_limited; want 10 (the burst) answered and the rest refused", burst, pongs, limited)
	}
	t.Logf("burst of %d pings at 5/s (burst 10): %d pongs, %d rate_limited", burst, pongs, limited)
	// After a pause the budget has refilled: the connection was never closed. (There is nothing
	// to wait on but time.)
	time.Sleep(time.Second)
	if _, err := c.Call(ctx, "ping", nil); err != nil {
		t.Fatalf("ping after a pause: %v", err)
	}
	if code := c.CloseCode(); code != -1 {
		t.Fatalf("a peer that slowed down was closed with %d", code)
	}

	// A peer that keeps going is closed with 4429.
	k := dial(t, n, cheap)
	for i := 0; i < 200 && k.CloseCode() == -1; i++ {
		if clientx.SendRaw(ctx, k, websocket.MessageText, []byte(`{"type":"ping"}`)) != nil {
			break
		}
	}
	waitClosed(t, k, 4429)
	if v, _ := secSeries(secMetrics(t, n.Metrics), "sessiond_rate_limited_total", `limit="messages_per_connection"`); v < 1 {
		t.Fatal("sessiond_rate_limited_total{limit=messages_per_connection} not counted")
	}
}

// ---- 4. connections per address ----

func TestLimitConnectionsPerAddress(t *testing.T) {
	n := startNode(t, map[string]string{"SESSIOND_CONNECTIONS_PER_ADDRESS": "3"})
	ctx := ctxT(t)
	conns := []*client.Conn{dial(t, n, cheap), dial(t, n, cheap), dial(t, n, cheap)}
	var de *client.DialError
	if _, err := client.Dial(ctx, n.Base, cheap); !errors.As(err, &de) || de.Status != http.StatusTooManyRequests {
		t.Fatalf("4th connection: %v, want HTTP 429", err)
	}
	// The refusal comes before the upgrade, as an API error.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.Base+"/ws", nil)
	req.Header.Set("Sec-WebSocket-Protocol", "sessiond.v1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || !bytes.Contains(body, []byte(`"rate_limited"`)) {
		t.Fatalf("GET /ws over the limit: HTTP %d %s", resp.StatusCode, body)
	}
	// Another address is not: the count is per address, not global.
	if c, err := client.Dial(ctx, n.Base, clientx.Cheap(client.Options{HTTPClient: httpFrom("127.0.0.2")})); err != nil {
		t.Fatalf("a connection from 127.0.0.2 while 127.0.0.1 is at its limit: %v", err)
	} else {
		c.Close()
	}
	// Plain HTTP is not limited by it.
	if r, _ := secGet(t, n.Base+"/healthz"); r.StatusCode != http.StatusOK {
		t.Fatalf("/healthz: HTTP %d", r.StatusCode)
	}

	// Closing one frees its place (once the server has seen the close).
	conns[0].Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := client.Dial(ctx, n.Base, cheap)
		if err == nil {
			t.Cleanup(func() { c.Close() })
			if _, err := c.Call(ctx, "ping", nil); err != nil {
				t.Fatalf("ping on the new connection: %v", err)
			}
			break
		}
		if !errors.As(err, &de) || de.Status != http.StatusTooManyRequests || time.Now().After(deadline) {
			t.Fatalf("connection after closing one: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := client.Dial(ctx, n.Base, cheap); !errors.As(err, &de) || de.Status != http.StatusTooManyRequests {
		t.Fatalf("a 4th connection again: %v, want HTTP 429", err)
	}
	if v, _ := secSeries(secMetrics(t, n.Metrics), "sessiond_rate_limited_total", `limit="connections_per_address"`); v < 3 {
		t.Fatalf("sessiond_rate_limited_total{limit=connections_per_address} = %v, want >= 3", v)
	}
}

// ---- 5. no compression ----

func TestSecurityNoCompression(t *testing.T) {
	n := startNode(t, nil)
	ctx := ctxT(t)
	wsURL := "ws" + strings.TrimPrefix(n.Base, "http") + "/ws"
	for _, mode := range []websocket.CompressionMode{websocket.CompressionContextTakeover, websocket.CompressionNoContextTakeover} {
		ws, resp, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{Subprotocols: []string{client.Subprotocol}, CompressionMode: mode})
		if err != nil {
			t.Fatalf("dial offering compression (mode %d): %v", mode, err)
		}
		if ext := resp.Header.Values("Sec-WebSocket-Extensions"); len(ext) != 0 {
			t.Fatalf("the server negotiated %q", ext)
		}
		if err := ws.Write(ctx, websocket.MessageText, []byte(`{"type":"ping","id":"z"}`)); err != nil {
			t.Fatal(err)
		}
		if _, data, err := ws.Read(ctx); err != nil || !bytes.Contains(data, []byte(`"pong"`)) {
			t.Fatalf("ping: %s %v", data, err)
		}
		ws.Close(websocket.StatusNormalClosure, "")
	}

	// The same with a hand-written upgrade request, to see exactly what was offered and answered.
	host := strings.TrimPrefix(n.Base, "http://")
	conn, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	keyRaw := make([]byte, 16)
	_, _ = rand.Read(keyRaw)
	key := base64.StdEncoding.EncodeToString(keyRaw)
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sessiond.v1\r\n"+
		"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, permessage-deflate\r\n\r\n", host, key)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) ||
		resp.Header.Get("Sec-WebSocket-Protocol") != "sessiond.v1" {
		t.Fatalf("raw upgrade: %s %v", resp.Status, resp.Header)
	}
	if ext := resp.Header.Values("Sec-WebSocket-Extensions"); len(ext) != 0 {
		t.Fatalf("raw upgrade offering permessage-deflate: the server negotiated %q", ext)
	}
}

// ---- 6. security headers ----

func TestHeaders(t *testing.T) {
	n := startNode(t, nil)
	ctx := ctxT(t)

	// The page: a strict CSP, no sniffing, no framing, no referrer.
	r, body := secGet(t, n.Base+"/")
	if r.StatusCode != http.StatusOK || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: HTTP %d %s", r.StatusCode, r.Header.Get("Content-Type"))
	}
	checkPageHeaders(t, "GET /", r.Header)
	// A CSP without 'unsafe-inline' only works with a page that has no inline script, style
	// or handler; the one inline script allowed is the import map, by its exact hash.
	csp := r.Header.Get("Content-Security-Policy")
	for _, m := range regexp.MustCompile(`(?is)(<script\b[^>]*>)(.*?)</script>`).FindAllSubmatch(body, -1) {
		if regexp.MustCompile(`(?i)\ssrc\s*=`).Match(m[1]) {
			continue
		}
		sum := sha256.Sum256(m[2])
		if hash := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"; !bytes.Contains(m[1], []byte(`type="importmap"`)) || !strings.Contains(csp, hash) {
			t.Fatalf("the page has an inline script its CSP does not allow by hash (%s): %q", hash, m[1])
		}
	}
	for _, re := range []string{`(?is)<style\b`, `(?i)<[^>]+\son[a-z]+\s*=`, `(?i)<[^>]+\sstyle\s*=`, `(?i)=\s*["']?\s*javascript:`} {
		if m := regexp.MustCompile(re).Find(body); m != nil {
			t.Fatalf("the page has inline code or style that its CSP blocks: %q", m)
		}
	}
	r, _ = secGet(t, n.Base+"/no-such-file")
	checkPageHeaders(t, "GET /no-such-file", r.Header)

	// Every /api/ answer, errors included, is not to be stored.
	name, _ := account(t, n, "headers", "pw")
	_, s := loginOn(t, n, name, "pw", "headers")
	tok := s.Token
	bogus := "sdt_" + strings.Repeat("A", 43)
	check := func(what string, r client.Response, status int) {
		t.Helper()
		if r.Status != status {
			t.Fatalf("%s: HTTP %d %s, want %d", what, r.Status, r.Body, status)
		}
		if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
			t.Fatalf("%s: Cache-Control %q, want no-store", what, cc)
		}
		if r.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("%s: no X-Content-Type-Options: nosniff", what)
		}
	}
	for _, c := range []struct {
		method, path, token string
		body                any
		status              int
	}{
		{"GET", "/api/v1/opaque/config", "", nil, 200},
		{"GET", "/api/v1/session", "", nil, 401},
		{"GET", "/api/v1/session", bogus, nil, 401},
		{"POST", "/api/v1/session/refresh", bogus, nil, 401},
		{"GET", "/api/v1/session", tok, nil, 200},
		{"GET", "/api/v1/sessions", tok, nil, 200},
		{"GET", "/api/v1/activity", tok, nil, 200},
		{"GET", "/api/v1/vault", tok, nil, 404},
		{"PUT", "/api/v1/vault", tok, []byte("ciphertext"), 204},
		{"GET", "/api/v1/vault", tok, nil, 200},
		{"PUT", "/api/v1/vault", tok, make([]byte, 1<<20+1), 413},
		{"DELETE", "/api/v1/sessions/no-such-session", tok, nil, 404},
		{"GET", "/api/v1/no-such-endpoint", "", nil, 404},
		{"GET", "/api/nothing", "", nil, 404},
	} {
		check(c.method+" "+c.path, apiDo(t, n, c.token, c.method, c.path, c.body, nil), c.status)
	}

	// The refresh answer carries a token.
	rr := apiDo(t, n, tok, http.MethodPost, "/api/v1/session/refresh", nil, nil)
	check("POST /api/v1/session/refresh", rr, http.StatusOK)
	var ref client.Refreshed
	if err := json.Unmarshal(rr.Body, &ref); err != nil || ref.Token == "" {
		t.Fatalf("refresh: %s", rr.Body)
	}
	// Logout tells the browser to drop what it stored.
	lr, err := client.NewAPI(n.Base, ref.Token).Do(ctx, http.MethodDelete, "/api/v1/session", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	check("DELETE /api/v1/session", lr, http.StatusNoContent)
	if csd := lr.Header.Get("Clear-Site-Data"); !strings.Contains(csd, `"storage"`) {
		t.Fatalf("DELETE /api/v1/session: Clear-Site-Data %q", csd)
	}
}

// checkPageHeaders checks the headers of a page (not API) response.
func checkPageHeaders(t *testing.T, what string, h http.Header) {
	t.Helper()
	csp := h.Get("Content-Security-Policy")
	if csp == "" {
		t.Fatalf("%s: no Content-Security-Policy", what)
	}
	dirs := map[string][]string{}
	for _, d := range strings.Split(csp, ";") {
		f := strings.Fields(d)
		if len(f) > 0 {
			dirs[strings.ToLower(f[0])] = f[1:]
		}
	}
	for _, bad := range []string{"'unsafe-inline'", "'unsafe-eval'", "'unsafe-hashes'", "*", "http:", "https:"} {
		for d, srcs := range dirs {
			for _, s := range srcs {
				if strings.EqualFold(s, bad) {
					t.Fatalf("%s: CSP %s allows %s: %q", what, d, bad, csp)
				}
			}
		}
	}
	want := map[string]string{"default-src": "'none'", "frame-ancestors": "'none'", "base-uri": "'none'", "object-src": "'none'"}
	for d, v := range want {
		srcs, ok := dirs[d]
		if !ok && d == "object-src" {
			srcs = dirs["default-src"] // covered by default-src
		}
		if strings.Join(srcs, " ") != v {
			t.Fatalf("%s: CSP %s is %q, want %s: %q", what, d, strings.Join(srcs, " "), v, csp)
		}
	}
	if _, ok := dirs["script-src"]; !ok {
		t.Fatalf("%s: CSP has no script-src: %q", what, csp)
	}
	for k, v := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY"} {
		if got := h.Get(k); got != v {
			t.Fatalf("%s: %s %q, want %q", what, k, got, v)
		}
	}
	switch rp := h.Get("Referrer-Policy"); rp {
	case "no-referrer", "same-origin", "strict-origin", "strict-origin-when-cross-origin":
	default:
		t.Fatalf("%s: Referrer-Policy %q", what, rp)
	}
}

// ---- 7. the activity list ----

type secActivity struct {
	Kind      string `json:"kind"`
	Reason    string `json:"reason"`
	SessionID string `json:"session_id"`
	Current   bool   `json:"current"`
	Device    string `json:"device"`
	IP        string `json:"ip"`
	At        string `json:"at"`
}

func activityHTTP(t *testing.T, n *node, token string) []secActivity {
	t.Helper()
	r := apiDo(t, n, token, http.MethodGet, "/api/v1/activity", nil, nil)
	wantStatus(t, "GET /api/v1/activity", r, http.StatusOK, "")
	var out struct {
		Events []secActivity `json:"events"`
	}
	if err := json.Unmarshal(r.Body, &out); err != nil {
		t.Fatal(err)
	}
	return out.Events
}

func activityWS(t *testing.T, c *client.Conn) []secActivity {
	t.Helper()
	m, err := c.Call(ctxT(t), "activity.list", nil)
	if err != nil {
		t.Fatalf("activity.list: %v", err)
	}
	if m.Type != "activity" {
		t.Fatalf("activity.list answered %s", m.Raw)
	}
	var out struct {
		Events []secActivity `json:"events"`
	}
	if err := m.Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out.Events
}

func TestActivityList(t *testing.T) {
	n := startNode(t, nil)
	ctx := ctxT(t)
	// The store keeps milliseconds; a pause between steps gives each event its own.
	step := func() { time.Sleep(5 * time.Millisecond) }

	name, uid := account(t, n, "activity", "pw")
	step()
	c1, s1 := loginOn(t, n, name, "pw", "Alpha laptop")
	step()
	c2, s2 := loginOn(t, n, name, "pw", "Beta phone")
	step()
	if _, err := dial(t, n, cheap).Login(ctx, name, "wrong password", "Mallory"); !client.IsCode(err, "auth_failed") {
		t.Fatalf("wrong password: %v", err)
	}
	step()
	if _, err := dial(t, n, cheap).Login(ctx, uniqueName("nobody"), "pw", ""); !client.IsCode(err, "auth_failed") {
		t.Fatalf("unknown user: %v", err)
	}
	step()
	if _, err := c1.Revoke(ctx, s2.ID); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	expectEnd(t, c2, "revoked device", "notice.revoked", "revoked_by_user", 4403)
	step()
	if _, err := c1.ChangePassword(ctx, "new pw"); err != nil {
		t.Fatalf("password change: %v", err)
	}

	type want struct {
		kind, reason, session, device string
		current                       bool
	}
	wantList := []want{
		{"password_changed", "", s1.ID, "", true},
		{"session_revoked", "revoked_by_user", s2.ID, "", false},
		{"login_failed", "", "", "", false},
		{"login", "", s2.ID, "Beta phone", false},
		{"login", "", s1.ID, "Alpha laptop", true},
		{"user_registered", "", "", "", false},
	}
	checkList := func(what string, got []secActivity, wl []want) {
		t.Helper()
		if len(got) != len(wl) {
			t.Fatalf("%s: %d events, want %d: %+v", what, len(got), len(wl), got)
		}
		var prev time.Time
		for i, w := range wl {
			g := got[i]
			if g.Kind != w.kind || g.Reason != w.reason || g.SessionID != w.session || g.Device != w.device || g.Current != w.current {
				t.Fatalf("%s: event %d is %+v, want %+v", what, i, g, w)
			}
			if (w.kind == "login") != (g.IP == "127.0.0.1") {
				t.Fatalf("%s: event %d has ip %q", what, i, g.IP)
			}
			at := wireT(t, g.At)
			if i > 0 && at.After(prev) {
				t.Fatalf("%s: not newest first: %s after %s", what, g.At, prev)
			}
			prev = at
		}
	}
	overHTTP := activityHTTP(t, n, s1.Token)
	checkList("GET /api/v1/activity", overHTTP, wantList)
	overWS := activityWS(t, c1)
	checkList("activity.list", overWS, wantList)

	// current is relative to the caller: a new device sees its own login as current and the
	// first device's entries as not.
	step()
	c3, s3 := loginOn(t, n, name, "new pw", "Gamma desktop")
	l3 := activityWS(t, c3)
	want3 := append([]want{{"login", "", s3.ID, "Gamma desktop", true}}, wantList...)
	for i := 1; i < len(want3); i++ {
		want3[i].current = false
	}
	checkList("activity.list of another device", l3, want3)
	if l1 := activityHTTP(t, n, s1.Token); len(l1) != len(want3) || l1[0].Current || !l1[1].Current {
		t.Fatalf("the first device's list after a new login: %+v", l1)
	}

	// Another user sees only their own.
	other, ouid := account(t, n, "other", "pw2")
	oc, osess := loginOn(t, n, other, "pw2", "Other's tablet")
	for _, list := range [][]secActivity{activityHTTP(t, n, osess.Token), activityWS(t, oc)} {
		checkList("another user's list", list, []want{{"login", "", osess.ID, "Other's tablet", true}, {"user_registered", "", "", "", false}})
	}
	if uid == ouid {
		t.Fatal("two users with one id")
	}
}

// ---- 8. metrics ----

func TestMetrics(t *testing.T) {
	n := startNode(t, map[string]string{"SESSIOND_LOGIN_LIMIT_PER_USER": "2"})
	ctx := ctxT(t)
	const password = "metrics password 12345"
	name, uid := account(t, n, "metrics-user", password)
	c1, s1 := loginOn(t, n, name, password, "metrics device one")
	_, s2 := loginOn(t, n, name, password, "metrics device two")
	if _, err := dial(t, n, cheap).Login(ctx, name, "wrong "+password, ""); !client.IsCode(err, "auth_failed") {
		t.Fatalf("wrong password: %v", err)
	}
	ref, err := c1.Refresh(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Validation over HTTP: a miss, then a hit from the cache.
	tokenWorks(t, n, "first use", ref.Token, s1.ID)
	tokenWorks(t, n, "second use", ref.Token, s1.ID)
	if _, err := c1.Revoke(ctx, s2.ID); err != nil {
		t.Fatal(err)
	}
	ghost := uniqueName("metrics-ghost")
	g := dial(t, n, cheap)
	for i := 0; i < 3; i++ {
		_, _ = g.Login(ctx, ghost, "x", "") // the third is rate limited
	}

	// The revoked device's notice is written to its socket after the revocation's reply.
	if !waitFor(ctx, func() bool {
		v, _ := secSeries(secMetrics(t, n.Metrics), "sessiond_revocation_notice_seconds_count")
		return v >= 1
	}) {
		t.Error("sessiond_revocation_notice_seconds never counted the revoked device's notice")
	}
	m := secMetrics(t, n.Metrics)
	series := []struct {
		name   string
		labels []string
		min    float64
	}{
		{"sessiond_connections", nil, 1},
		{"sessiond_authenticated_connections", nil, 1},
		{"sessiond_logins_total", []string{`result="ok"`}, 2},
		{"sessiond_logins_total", []string{`result="failed"`}, 3},
		{"sessiond_session_events_total", []string{`event="created"`}, 2},
		{"sessiond_session_events_total", []string{`event="refreshed"`}, 1},
		{"sessiond_session_events_total", []string{`event="revoked"`, `reason="revoked_by_user"`}, 1},
		{"sessiond_notices_total", nil, 1},
		{"sessiond_validation_seconds_count", nil, 2},
		{"sessiond_validation_seconds_bucket", nil, 2},
		{"sessiond_validation_cache_total", []string{`result="hit"`}, 1},
		{"sessiond_validation_cache_total", []string{`result="miss"`}, 1},
		{"sessiond_store_ops_total", nil, 1},
		{"sessiond_store_operation_seconds_count", []string{`op="RevokeSessions"`}, 1},
		{"sessiond_store_operation_seconds_count", []string{`op="SessionByToken"`}, 1},
		{"sessiond_hub_publish_seconds_count", nil, 2},
		{"sessiond_revocation_notice_seconds_count", nil, 1},
		{"sessiond_broker_errors_total", nil, 0},
		{"sessiond_swept_sessions_total", nil, 0},
		{"sessiond_rate_limited_total", []string{`limit="login_failures_per_user"`}, 1},
	}
	for _, s := range series {
		v, found := secSeries(m, s.name, s.labels...)
		if !found || v < s.min {
			t.Errorf("%s%v = %v (found %v), want >= %v", s.name, s.labels, v, found, s.min)
		}
	}
	// Nothing secret or per-user.
	for what, secret := range map[string]string{
		"a token": s1.Token, "a token without its prefix": s1.Token[4:], "the refreshed token": ref.Token,
		"a username": name, "the unknown username": ghost, "the password": password,
		"a user id": uid, "a session id": s1.ID, "a device label": "metrics device",
	} {
		if strings.Contains(m, secret) {
			t.Errorf("the metrics page contains %s", what)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", grepLines(m, "sessiond_"))
	}
}

func TestMetricsSeparateListener(t *testing.T) {
	maddr := freeAddr(t)
	n := startNode(t, map[string]string{"SESSIOND_METRICS_ADDR": maddr})
	// Some traffic, so that the page has something to show.
	name, _ := account(t, n, "metrics-sep", "pw")
	loginOn(t, n, name, "pw", "")

	r, body := secGet(t, n.Base+"/metrics")
	if r.StatusCode == http.StatusOK || bytes.Contains(body, []byte("sessiond_")) {
		t.Fatalf("/metrics is still on the main listener: HTTP %d", r.StatusCode)
	}
	m := secMetrics(t, "http://"+maddr)
	for _, s := range []string{"sessiond_connections", "sessiond_authenticated_connections", "sessiond_logins_total"} {
		if _, found := secSeries(m, s); !found {
			t.Fatalf("%s missing on the metrics listener", s)
		}
	}
	// The metrics listener serves nothing else.
	for _, p := range []string{"/api/v1/opaque/config", "/", "/healthz"} {
		if r, _ := secGet(t, "http://"+maddr+p); r.StatusCode == http.StatusOK {
			t.Fatalf("the metrics listener serves %s", p)
		}
	}
}

// ---- 9. no secret in logs or at rest ----

// secretSet is what must never reach a log line or rest in clear.
type secretSet struct {
	tokens    []string
	opaque    [][]byte // OPAQUE messages sent and received
	passwords []string
	metadata  []string // device labels and user agents
	keys      [][]byte // the key file's values
}

// contains reports which form of which secret data holds, or "".
func (s *secretSet) find(data []byte, stored bool) []string {
	var found []string
	has := func(what string, needles ...[]byte) {
		for _, nd := range needles {
			if len(nd) > 0 && bytes.Contains(data, nd) {
				found = append(found, what)
				return
			}
		}
	}
	forms := func(b []byte) [][]byte {
		return [][]byte{b, []byte(base64.RawURLEncoding.EncodeToString(b)), []byte(base64.StdEncoding.EncodeToString(b)),
			[]byte(base64.RawStdEncoding.EncodeToString(b)), []byte(hex.EncodeToString(b))}
	}
	for i, tok := range s.tokens {
		raw, _ := base64.RawURLEncoding.DecodeString(tok[4:])
		has(fmt.Sprintf("token %d", i), append([][]byte{[]byte(tok), []byte(tok[4:])}, forms(raw)...)...)
	}
	for i, m := range s.opaque {
		has(fmt.Sprintf("OPAQUE message %d", i), forms(m)...)
	}
	for i, p := range s.passwords {
		has(fmt.Sprintf("password %d", i), []byte(p))
	}
	for _, m := range s.metadata {
		has("device metadata "+strconv.Quote(m), []byte(m))
	}
	for i, k := range s.keys {
		has(fmt.Sprintf("key file value %d", i), forms(k)...)
	}
	if stored {
		has("the client IP", []byte("127.0.0.1"), []byte("127.0.0.0/24"))
	}
	return found
}

func (s *secretSet) check(t *testing.T, where string, data []byte, stored bool) {
	t.Helper()
	if len(data) == 0 {
		t.Fatalf("%s: nothing to check", where)
	}
	for _, f := range s.find(data, stored) {
		t.Errorf("%s contains %s", where, f)
	}
}

// keyFileValues returns the binary values of a key file (ids and the version excluded).
func keyFileValues(t *testing.T, path string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f map[string]any
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case string:
			if b, err := base64.RawURLEncoding.DecodeString(x); err == nil && len(b) >= 16 {
				out = append(out, b)
			}
		case map[string]any:
			for _, y := range x {
				walk(y)
			}
		}
	}
	walk(f)
	if len(out) < 7 {
		t.Fatalf("key file %s: only %d values", path, len(out))
	}
	return out
}

// secretsScenario drives every flow that handles a secret and returns what must not leak.
// The node runs with SESSIOND_ROTATION_GRACE=1s (for a token-reuse event).
func secretsScenario(t *testing.T, n *node) (*secretSet, string) {
	ctx := ctxT(t)
	marker := randomHex(6)
	ss := &secretSet{
		passwords: []string{"first secret passphrase " + marker, "second secret passphrase " + marker, "wrong secret passphrase " + marker},
	}
	pw1, pw2, wrong := ss.passwords[0], ss.passwords[1], ss.passwords[2]
	label := "Aurelia's secret laptop " + marker
	ua := "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0 SecretAgent/" + marker
	ss.metadata = []string{label, ua, "SecretAgent/" + marker, "Firefox on Linux"}
	withAgent := http.Header{"User-Agent": {ua}}
	browser := clientx.Cheap(client.Options{Header: withAgent})
	name := uniqueName("secrets")

	// Register and log in by hand, so that the test holds the OPAQUE messages.
	a := dial(t, n, browser)
	_, msgs := registerRaw(t, ctx, a, name, pw1)
	ss.opaque = append(ss.opaque, msgs...)
	sa, msgs := secLoginRaw(t, ctx, a, name, pw1, label)
	ss.opaque = append(ss.opaque, msgs...)
	ss.tokens = append(ss.tokens, sa.Token)
	if sa.Device != label {
		t.Fatalf("device label %q", sa.Device)
	}

	// A second device whose label the server derives from its User-Agent.
	b := dial(t, n, browser)
	rb, err := b.Login(ctx, name, pw1, "")
	if err != nil {
		t.Fatalf("second device: %v", err)
	}
	ss.tokens = append(ss.tokens, rb.Session.Token)
	if rb.Session.Device != "Firefox on Linux" {
		t.Fatalf("derived label %q", rb.Session.Device)
	}

	// Refresh over the WebSocket and over HTTP; resume with the newest token.
	r1, err := a.Refresh(ctx)
	if err != nil {
		t.Fatalf("session.refresh: %v", err)
	}
	ss.tokens = append(ss.tokens, r1.Token)
	hr := apiDo(t, n, r1.Token, http.MethodPost, "/api/v1/session/refresh", nil, withAgent)
	wantStatus(t, "POST /api/v1/session/refresh", hr, http.StatusOK, "")
	var r2 client.Refreshed
	if err := json.Unmarshal(hr.Body, &r2); err != nil || r2.Token == "" {
		t.Fatalf("HTTP refresh: %s", hr.Body)
	}
	ss.tokens = append(ss.tokens, r2.Token)
	if _, err := dial(t, n, browser).Resume(ctx, r2.Token); err != nil {
		t.Fatalf("resume: %v", err)
	}

	// The vault.
	vr := apiDo(t, n, r2.Token, http.MethodPut, "/api/v1/vault", []byte("client-side ciphertext "+marker), withAgent)
	wantStatus(t, "PUT /api/v1/vault", vr, http.StatusNoContent, "")
	wantStatus(t, "GET /api/v1/vault", apiDo(t, n, r2.Token, http.MethodGet, "/api/v1/vault", nil, withAgent), http.StatusOK, "")

	// Revoke one device, then every other.
	c := dial(t, n, browser)
	rc, err := c.Login(ctx, name, pw1, "device C "+marker)
	if err != nil {
		t.Fatal(err)
	}
	ss.tokens = append(ss.tokens, rc.Session.Token)
	ss.metadata = append(ss.metadata, "device C "+marker)
	if _, err := a.Revoke(ctx, rc.Session.ID); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	d := dial(t, n, browser)
	rd, err := d.Login(ctx, name, pw1, "")
	if err != nil {
		t.Fatal(err)
	}
	ss.tokens = append(ss.tokens, rd.Session.Token)
	if ids, err := a.RevokeOthers(ctx); err != nil || len(ids) != 2 {
		t.Fatalf("revoke others: %v %v", ids, err)
	}
	expectEnd(t, b, "device B", "notice.revoked", "revoked_by_user", 4403)

	// Password change, by hand.
	ss.opaque = append(ss.opaque, passwordChangeRaw(t, ctx, a, pw2)...)

	// A wrong password and an unknown user.
	w := dial(t, n, browser)
	if _, err := w.Login(ctx, name, wrong, ""); !client.IsCode(err, "auth_failed") {
		t.Fatalf("wrong password: %v", err)
	}
	if _, err := w.Login(ctx, uniqueName("nobody"), pw1, ""); !client.IsCode(err, "auth_failed") {
		t.Fatalf("unknown user: %v", err)
	}

	// A token-reuse event: an old token presented after the rotation grace.
	e := dial(t, n, cheap)
	re, err := e.Login(ctx, name, pw2, "device E "+marker)
	if err != nil {
		t.Fatalf("login with the new password: %v", err)
	}
	ss.metadata = append(ss.metadata, "device E "+marker)
	re2, err := e.Refresh(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rotated := time.Now()
	ss.tokens = append(ss.tokens, re.Session.Token, re2.Token)
	time.Sleep(time.Until(rotated.Add(1300 * time.Millisecond))) // past the 1s grace: only time passes
	tokenRefused(t, n, "a reused token", re.Session.Token)
	expectEnd(t, e, "device E", "notice.revoked", "token_reuse", 4403)

	// The logs did record these events (so the checks below look at real logs).
	logs := n.logs.String()
	for _, ev := range []string{"login", "login_failed", "session_refreshed", "session_revoked", "password_changed", "token_reuse"} {
		if !strings.Contains(logs, `"event":"`+ev+`"`) {
			t.Fatalf("the logs have no %s event", ev)
		}
	}
	return ss, name
}

func TestSecretsSQLite(t *testing.T) {
	n := startNode(t, map[string]string{"SESSIOND_ROTATION_GRACE": "1s"})
	ss, name := secretsScenario(t, n)
	ss.keys = keyFileValues(t, filepath.Join(n.DataDir, "keys.json"))
	n.stop() // checkpoint and close the database; the shutdown is logged too
	ss.check(t, "the log output", []byte(n.logs.String()), false)

	var files []byte
	_ = filepath.WalkDir(n.DataDir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Base(p) == "keys.json" {
			return nil
		}
		b, _ := os.ReadFile(p)
		files = append(files, b...)
		return nil
	})
	if !bytes.Contains(files, []byte(strings.ToLower(name))) {
		t.Fatal("the database files do not hold the username: not the store that was used")
	}
	ss.check(t, "the SQLite files", files, true)
}

func TestSecretsPostgres(t *testing.T) {
	dbURL := postgresURL(t)
	n := startNode(t, map[string]string{"SESSIOND_DATABASE_URL": dbURL, "SESSIOND_ROTATION_GRACE": "1s"})
	ss, name := secretsScenario(t, n)
	ss.keys = keyFileValues(t, filepath.Join(n.DataDir, "keys.json"))
	n.stop() // pending activity written, shutdown logged
	ss.check(t, "the log output", []byte(n.logs.String()), false)

	ctx := ctxT(t)
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	var dump bytes.Buffer
	counts := map[string]int{}
	for _, table := range tables {
		rows, err := conn.Query(ctx, "SELECT * FROM "+pgx.Identifier{table}.Sanitize())
		if err != nil {
			t.Fatalf("dump %s: %v", table, err)
		}
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				t.Fatal(err)
			}
			counts[table]++
			for _, v := range vals {
				switch x := v.(type) {
				case []byte:
					dump.Write(x)
				case string:
					dump.WriteString(x)
				default:
					fmt.Fprint(&dump, x)
				}
				dump.WriteByte(0)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, table := range []string{"users", "sessions", "retired_tokens", "vaults", "events", "meta"} {
		if counts[table] == 0 {
			t.Fatalf("table %s is missing or empty (tables %v, rows %v)", table, tables, counts)
		}
	}
	t.Logf("dumped %d bytes from %v", dump.Len(), counts)
	if !bytes.Contains(dump.Bytes(), []byte(strings.ToLower(name))) {
		t.Fatal("the dump does not hold the username")
	}
	ss.check(t, "PostgreSQL", dump.Bytes(), true)
}

// passwordChangeRaw changes the password with bytemare directly and returns the OPAQUE messages.
func passwordChangeRaw(t *testing.T, ctx context.Context, c *client.Conn, password string) [][]byte {
	t.Helper()
	_, msgs := rawRegistration(t, ctx, c, "password.change", nil, password)
	return msgs
}
