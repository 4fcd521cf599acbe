package main

// Operations and reliability: what a deployment lives through. Each test runs the real binary as
// separate processes on PostgreSQL and Redis (TEST_POSTGRES_URL, TEST_REDIS_URL) and breaks
// something on purpose: a drain on SIGTERM, a PostgreSQL outage, a SIGKILL, a Redis gap under
// load. Outages are simulated with tcpProxy, never by touching the shared servers. The bounds
// measured here are the ones docs/OPERATIONS.md promises.

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bytemare/opaque"
	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/sessiond/sessiond/client"
)

// opsEnv lifts the per-address abuse limits: every test client comes from 127.0.0.1.
func opsEnv(extra map[string]string) map[string]string {
	env := map[string]string{
		"SESSIOND_LOGIN_LIMIT_PER_ADDRESS":    "1000000",
		"SESSIOND_REGISTER_LIMIT_PER_ADDRESS": "1000000",
		"SESSIOND_BAD_TOKENS_PER_ADDRESS":     "1000000",
		"SESSIOND_MAX_SESSIONS":               "0",
	}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

// Bounds documented in docs/OPERATIONS.md; the tests fail beyond them.
const (
	// opsPGRecoveryBound: from the PostgreSQL path coming back to the node serving logins again.
	opsPGRecoveryBound = 5 * time.Second
	// opsRedisRecoveryBound: from Redis coming back to every device revoked during the gap closed.
	opsRedisRecoveryBound = 10 * time.Second
)

// signal sends sig to the process without waiting for it to exit.
func (p *proc) opsSignal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// exited reports whether the process has ended.
func (p *proc) opsExited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// opsCode names an error for counting: the wire code, else "transport".
func opsCode(err error) string {
	var e *client.Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Code
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return "timeout"
	default:
		return "transport"
	}
}

// opsCounts is a concurrency-safe tally of outcomes by name.
type opsCounts struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *opsCounts) add(k string) {
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[k]++
	c.mu.Unlock()
}

func (c *opsCounts) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.m))
	for k, v := range c.m {
		out[k] = v
	}
	return out
}

var opsCheapKSF = &opaque.ClientOptions{KSFSalt: make([]byte, 16), KSFLength: 64, KSFParameters: []uint64{1, 64, 1}}

// opsLoginStaged runs the OPAQUE login like client.Login but says which step failed ("start" or
// "finish"): only a failed finish can have reached the session table.
func opsLoginStaged(ctx context.Context, c *client.Conn, name, password string) (client.Session, string, error) {
	b64 := base64.RawURLEncoding
	oc, err := opaque.DefaultConfiguration().Client()
	if err != nil {
		return client.Session{}, "start", err
	}
	ke1, err := oc.GenerateKE1([]byte(password))
	if err != nil {
		return client.Session{}, "start", err
	}
	m, err := c.Call(ctx, "login.start", map[string]any{"username": name, "ke1": b64.EncodeToString(ke1.Serialize())})
	if err != nil {
		return client.Session{}, "start", err
	}
	var ch struct {
		KE2 string `json:"ke2"`
	}
	if err := m.Decode(&ch); err != nil {
		return client.Session{}, "start", err
	}
	raw, err := b64.DecodeString(ch.KE2)
	if err != nil {
		return client.Session{}, "start", err
	}
	ke2, err := oc.Deserialize.KE2(raw)
	if err != nil {
		return client.Session{}, "start", err
	}
	ke3, _, _, err := oc.GenerateKE3(ke2, nil, nil, opsCheapKSF)
	if err != nil {
		return client.Session{}, "start", err
	}
	m, err = c.Call(ctx, "login.finish", map[string]any{"ke3": b64.EncodeToString(ke3.Serialize())})
	if err != nil {
		return client.Session{}, "finish", err
	}
	var ok struct {
		Session client.Session `json:"session"`
	}
	if err := m.Decode(&ok); err != nil {
		return client.Session{}, "finish", err
	}
	return ok.Session, "", nil
}

// opsRegister makes an account through a throw-away connection.
func opsRegister(t *testing.T, ctx context.Context, base, name string) string {
	t.Helper()
	c, err := client.Dial(ctx, base, cheap)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	id, _, err := c.Register(ctx, name, "pw")
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	return id
}

// opsNoKeepAlive makes every probe a new TCP connection, so a closed listener shows at once.
var opsNoKeepAlive = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}

// opsReadyz returns /readyz's status and body ("" and 0 when the node does not answer).
func opsReadyz(ctx context.Context, base string) (int, string) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
	resp, err := opsNoKeepAlive.Do(req)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// opsPGCount runs a COUNT query on the test schema.
func opsPGCount(t *testing.T, ctx context.Context, db *pgx.Conn, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRow(ctx, query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func opsPGConnect(t *testing.T, ctx context.Context, dbURL string) *pgx.Conn {
	t.Helper()
	db, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(context.Background()) })
	return db
}

// opsAssertNothingHalfWritten checks the invariants a crash or an outage must not break: every
// account has its record and vault id, every session belongs to an existing account and points
// at that account's vault, and no retired token outlives its session.
func opsAssertNothingHalfWritten(t *testing.T, ctx context.Context, db *pgx.Conn) {
	t.Helper()
	checks := []struct{ what, query string }{
		{"accounts without a registration record", `SELECT count(*) FROM users WHERE record IS NULL OR length(record) = 0 OR vault_id = ''`},
		{"sessions of no account", `SELECT count(*) FROM sessions s LEFT JOIN users u ON u.id = s.user_id WHERE u.id IS NULL`},
		{"sessions with a dangling vault", `SELECT count(*) FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.vault_id IS DISTINCT FROM u.vault_id`},
		{"retired tokens of no session", `SELECT count(*) FROM retired_tokens r LEFT JOIN sessions s ON s.id = r.session_id WHERE s.id IS NULL`},
	}
	for _, c := range checks {
		if n := opsPGCount(t, ctx, db, c.query); n != 0 {
			t.Errorf("%d %s", n, c.what)
		}
	}
}

// opsSlowPut is a PUT /api/v1/vault whose handler is running (the server has asked for the body
// with 100 Continue) and whose body the test sends when it chooses.
type opsSlowPut struct {
	body []byte
	pw   *io.PipeWriter
	res  chan error // nil on 204
}

func opsStartSlowPut(t *testing.T, ctx context.Context, base, token string, body []byte) *opsSlowPut {
	t.Helper()
	pr, pw := io.Pipe()
	got100 := make(chan struct{})
	var once sync.Once
	tctx := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{Got100Continue: func() { once.Do(func() { close(got100) }) }})
	req, err := http.NewRequestWithContext(tctx, http.MethodPut, base+"/api/v1/vault", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Expect", "100-continue")
	hc := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: time.Minute, DisableKeepAlives: true}}
	sp := &opsSlowPut{body: body, pw: pw, res: make(chan error, 1)}
	go func() {
		resp, err := hc.Do(req)
		if err != nil {
			sp.res <- err
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusNoContent {
			sp.res <- fmt.Errorf("HTTP %d %s", resp.StatusCode, b)
			return
		}
		sp.res <- nil
	}()
	select {
	case <-got100: // the handler is reading the body: the request is in flight on the server
	case err := <-sp.res:
		t.Fatalf("vault PUT ended before its body was sent: %v", err)
	case <-ctx.Done():
		t.Fatal("the server never asked for the vault body")
	}
	return sp
}

// finish sends the body and returns the request's outcome.
func (sp *opsSlowPut) finish(ctx context.Context) error {
	go func() {
		_, _ = sp.pw.Write(sp.body)
		_ = sp.pw.Close()
	}()
	select {
	case err := <-sp.res:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestOpsDrain: SIGTERM on a node with devices connected and HTTP requests in flight. Every
// device is told 1001, /readyz says draining meanwhile, the request in flight completes after the
// listener has closed, the process exits 0, and every device resumes on the other node with its
// token: nobody is logged out and no session is lost.
func TestOpsDrain(t *testing.T) {
	c := startCluster(t, opsEnv(nil))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()

	const users, devicesPerUser = 3, 3
	type device struct {
		user  int
		conn  *client.Conn
		token string
		id    string
	}
	var devs []*device
	names := make([]string, users)
	for u := range users {
		names[u] = uniqueName("drain")
		opsRegister(t, ctx, c.n1.Base, names[u])
		for d := range devicesPerUser {
			conn := dialBase(t, c.n1.Base)
			r, err := conn.Login(ctx, names[u], "pw", fmt.Sprintf("device %d", d))
			if err != nil {
				t.Fatal(err)
			}
			devs = append(devs, &device{user: u, conn: conn, token: r.Session.Token, id: r.Session.ID})
		}
	}

	// One more connection of user 0's first session that does not read: the node must wait for
	// its close handshake (at most 5 s), which keeps the drain observable.
	wsURL := "ws" + strings.TrimPrefix(c.n1.Base, "http") + "/ws"
	slow, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{Subprotocols: []string{client.Subprotocol}})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.CloseNow()
	if err := slow.Write(ctx, websocket.MessageText, []byte(`{"type":"session.resume","id":"r1","token":"`+devs[0].token+`"}`)); err != nil {
		t.Fatal(err)
	}
	if _, data, err := slow.Read(ctx); err != nil || !strings.Contains(string(data), `"session.ok"`) {
		t.Fatalf("slow device resume: %v %s", err, data)
	}

	// Two vault writes in flight on node 1: their handlers are waiting for the body.
	bodies := [][]byte{[]byte("vault of user 0, written across a drain"), []byte("vault of user 1, written across a drain")}
	puts := []*opsSlowPut{
		opsStartSlowPut(t, ctx, c.n1.Base, devs[0].token, bodies[0]),
		opsStartSlowPut(t, ctx, c.n1.Base, devs[devicesPerUser].token, bodies[1]),
	}

	sigAt := time.Now()
	c.n1.opsSignal(t, syscall.SIGTERM)

	// While the slow device holds the drain, the node says so: 503, node draining.
	var drainingBody string
	if !waitFor(ctx, func() bool {
		code, body := opsReadyz(ctx, c.n1.Base)
		if code == http.StatusServiceUnavailable && strings.Contains(body, `"node":"draining"`) {
			drainingBody = body
			return true
		}
		return time.Since(sigAt) > 4*time.Second
	}) || drainingBody == "" {
		t.Fatal("node 1 never answered /readyz 503 draining while it drained")
	}
	t.Logf("/readyz while draining: %s", strings.TrimSpace(drainingBody))
	if !strings.Contains(drainingBody, `"store":"ok"`) {
		t.Errorf("a draining node's store is still fine: %s", drainingBody)
	}

	// Every device that reads is told 1001 at once.
	for _, d := range devs {
		select {
		case <-d.conn.Done():
		case <-ctx.Done():
			t.Fatal("a device was not closed by the drain")
		}
		if code := d.conn.CloseCode(); code != int(websocket.StatusGoingAway) {
			t.Fatalf("device closed with %d, want 1001", code)
		}
	}
	t.Logf("every device closed with 1001 within %s of SIGTERM", time.Since(sigAt))
	// The slow one finds the same 1001 when it reads, and answers the close handshake.
	for {
		_, _, err := slow.Read(ctx)
		if err != nil {
			if code := websocket.CloseStatus(err); code != websocket.StatusGoingAway {
				t.Fatalf("slow device: %v, want close 1001", err)
			}
			break
		}
	}

	// Once the WebSockets are gone the listener closes; requests in flight still complete.
	addr := strings.TrimPrefix(c.n1.Base, "http://")
	if !waitFor(ctx, func() bool {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return true
		}
		conn.Close()
		return false
	}) {
		t.Fatal("node 1 kept accepting connections after its devices were drained")
	}
	for i, p := range puts {
		if err := p.finish(ctx); err != nil {
			t.Fatalf("vault PUT %d in flight at SIGTERM: %v", i, err)
		}
	}
	select {
	case <-c.n1.done:
	case <-ctx.Done():
		t.Fatal("node 1 did not exit after the drain")
	}
	if code := c.n1.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("node 1 exited with %d after SIGTERM:\n%s", code, c.n1.logs.String())
	}
	t.Logf("node 1 exited 0, %s after SIGTERM", time.Since(sigAt))

	// Every device resumes on node 2 with its token: same session, no new login.
	perUser := make([][]string, users)
	for _, d := range devs {
		perUser[d.user] = append(perUser[d.user], d.id)
		conn := dialBase(t, c.n2.Base)
		s, err := conn.Resume(ctx, d.token)
		if err != nil {
			t.Fatalf("resume on node 2: %v", err)
		}
		if s.ID != d.id {
			t.Fatalf("resumed session %s, want %s", s.ID, d.id)
		}
		d.conn = conn
	}
	for _, d := range devs {
		list, err := d.conn.Sessions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]bool{}
		for _, id := range perUser[d.user] {
			want[id] = true
		}
		if len(list) != len(want) {
			t.Fatalf("user %d has %d sessions on node 2, want %d", d.user, len(list), len(want))
		}
		for _, s := range list {
			if !want[s.ID] {
				t.Fatalf("user %d: unexpected session %s", d.user, s.ID)
			}
		}
	}
	// The writes that were in flight are stored.
	for i, p := range puts {
		r, err := client.NewAPI(c.n2.Base, devs[i*devicesPerUser].token).Do(ctx, http.MethodGet, "/api/v1/vault", nil, nil)
		if err != nil || r.Status != http.StatusOK || string(r.Body) != string(p.body) {
			t.Fatalf("vault %d after the drain: %v %d %q", i, err, r.Status, r.Body)
		}
	}
	if !strings.Contains(c.n1.logs.String(), "shutting down") {
		t.Error("node 1 did not log its shutdown")
	}
}

// opsProxiedPostgres returns a fresh schema's URL and the same URL through a tcpProxy, with the
// search_path kept.
func opsProxiedPostgres(t *testing.T) (direct, proxied string, proxy *tcpProxy) {
	t.Helper()
	direct = postgresURL(t)
	u, err := url.Parse(direct)
	if err != nil {
		t.Fatal(err)
	}
	proxy = newTCPProxy(t, u.Host)
	pu := *u
	pu.Host = proxy.addr
	return direct, pu.String(), proxy
}

// opsLoadWorker is one simulated user of the outage test: connect, sign in, call the API over
// HTTP and the WebSocket, refresh, leave; again.
type opsLoadWorker struct {
	name, userID string
	okIDs        []string // sessions whose login.ok arrived
	finishFails  int      // logins that failed at login.finish (may have reached the store)
	iterations   atomic.Int64
	failures     atomic.Int64
	lastOK       atomic.Int64 // unix nanos of the last complete iteration
}

// run loops until stop is set; an iteration under way is finished, so that no login is left
// half-way by the test itself.
func (w *opsLoadWorker) run(ctx context.Context, stop *atomic.Bool, base string, codes *opsCounts) {
	fail := func(step string, err error) {
		w.failures.Add(1)
		codes.add(step + ":" + opsCode(err))
		// A real client backs off a little on unavailable.
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	for ctx.Err() == nil && !stop.Load() {
		conn, err := client.Dial(ctx, base, cheap)
		if err != nil {
			fail("dial", err)
			continue
		}
		func() {
			defer conn.Close()
			s, stage, err := opsLoginStaged(ctx, conn, w.name, "pw")
			if err != nil {
				if stage == "finish" {
					w.finishFails++
				}
				fail("login."+stage, err)
				return
			}
			w.okIDs = append(w.okIDs, s.ID)
			codes.add("login:ok")
			if _, err := client.NewAPI(base, s.Token).Session(ctx); err != nil {
				fail("http.session", err)
				return
			}
			if _, err := conn.Sessions(ctx); err != nil {
				fail("ws.sessions", err)
				return
			}
			if _, err := conn.Refresh(ctx); err != nil {
				fail("ws.refresh", err)
				return
			}
			w.iterations.Add(1)
			w.lastOK.Store(time.Now().UnixNano())
		}()
	}
}

// TestOpsPostgresOutage: PostgreSQL becomes unreachable under a load of logins and API calls.
// Requests fail with unavailable (never internal, never a dropped connection or a panic),
// /readyz says the store is unavailable, and once the database is back the node serves again by
// itself within opsPGRecoveryBound. Every login that got login.ok has its one row; a failed login
// left none (except, possibly, one whose COMMIT reached PostgreSQL just as the link broke: the
// reply was lost, and the row is an orphan nobody holds a token for).
func TestOpsPostgresOutage(t *testing.T) {
	direct, proxied, proxy := opsProxiedPostgres(t)
	n := startProcess(t, opsEnv(map[string]string{"SESSIOND_DATABASE_URL": proxied}))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()

	const workers = 6
	ws := make([]*opsLoadWorker, workers)
	for i := range ws {
		ws[i] = &opsLoadWorker{name: uniqueName("outage")}
		ws[i].userID = opsRegister(t, ctx, n.Base, ws[i].name)
	}
	// Sessions whose tokens this node has never validated: no cache can answer for them.
	freshName := uniqueName("fresh")
	freshUser := opsRegister(t, ctx, n.Base, freshName)
	var fresh []client.Session
	for range 3 {
		conn := dialBase(t, n.Base)
		r, err := conn.Login(ctx, freshName, "pw", "")
		if err != nil {
			t.Fatal(err)
		}
		fresh = append(fresh, r.Session)
	}
	// A device that stays connected through the outage.
	watcher := dialBase(t, n.Base)
	if _, err := watcher.Login(ctx, freshName, "pw", "watcher"); err != nil {
		t.Fatal(err)
	}

	var codes opsCounts
	var stopLoad atomic.Bool
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Go(func() { w.run(ctx, &stopLoad, n.Base, &codes) })
	}
	stop := func() {
		stopLoad.Store(true)
		wg.Wait()
	}
	defer stop()
	progress := func(min int64) bool {
		for _, w := range ws {
			if w.iterations.Load() < min {
				return false
			}
		}
		return true
	}
	if !waitFor(ctx, func() bool { return progress(3) }) {
		t.Fatalf("load never got going: %v", codes.snapshot())
	}
	failuresBefore := make([]int64, workers)
	for i, w := range ws {
		failuresBefore[i] = w.failures.Load()
	}

	proxy.Cut()
	cutAt := time.Now()

	// /readyz says the store is unavailable.
	var body string
	if !waitFor(ctx, func() bool {
		var code int
		code, body = opsReadyz(ctx, n.Base)
		return code == http.StatusServiceUnavailable && strings.Contains(body, `"store":"unavailable"`)
	}) {
		t.Fatalf("/readyz during the outage: %s", body)
	}
	t.Logf("/readyz %s after the cut: %s", time.Since(cutAt), strings.TrimSpace(body))

	// Fresh tokens cannot be validated: 503 unavailable (not 401: the token may well be good).
	for _, s := range fresh {
		_, err := client.NewAPI(n.Base, s.Token).Session(ctx)
		if !client.IsCode(err, "unavailable") {
			t.Fatalf("fresh token during the outage: %v, want unavailable", err)
		}
	}
	r, err := client.NewAPI(n.Base, fresh[0].Token).Do(ctx, http.MethodGet, "/api/v1/session", nil, nil)
	if err != nil || r.Status != http.StatusServiceUnavailable {
		t.Fatalf("fresh token over HTTP during the outage: %v %d, want 503", err, r.Status)
	}
	// A new login and a connected device's request: unavailable, and the connection stays.
	login := dialBase(t, n.Base)
	if _, err := login.Login(ctx, freshName, "pw", ""); !client.IsCode(err, "unavailable") {
		t.Fatalf("login during the outage: %v, want unavailable", err)
	}
	if _, err := watcher.Sessions(ctx); !client.IsCode(err, "unavailable") {
		t.Fatalf("sessions.list during the outage: %v, want unavailable", err)
	}
	// The load keeps hitting the outage for a while: every worker retries more often than the
	// per-user login limit (10 a minute) allows for failed attempts.
	if !waitFor(ctx, func() bool {
		for i, w := range ws {
			if w.failures.Load()-failuresBefore[i] < 12 {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("the load did not meet the outage: %v", codes.snapshot())
	}
	if n.opsExited() {
		t.Fatalf("node exited during the outage:\n%s", n.logs.String())
	}
	outage := time.Since(cutAt)

	proxy.Restore(t)
	restoredAt := time.Now()
	// The node serves again by itself: readiness, a fresh token, a login, and every worker.
	if !waitFor(ctx, func() bool {
		code, _ := opsReadyz(ctx, n.Base)
		return code == http.StatusOK
	}) {
		t.Fatal("/readyz never recovered")
	}
	readyAfter := time.Since(restoredAt)
	if !waitFor(ctx, func() bool {
		_, err := client.NewAPI(n.Base, fresh[1].Token).Session(ctx)
		return err == nil
	}) {
		t.Fatal("fresh token never validated again")
	}
	if !waitFor(ctx, func() bool {
		for _, w := range ws {
			if w.lastOK.Load() < restoredAt.UnixNano() {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("the load did not recover: %v", codes.snapshot())
	}
	recovered := time.Since(restoredAt)
	t.Logf("outage %s; after restore: /readyz ok in %s, every worker through a full iteration in %s",
		outage.Round(time.Millisecond), readyAfter.Round(time.Millisecond), recovered.Round(time.Millisecond))
	if recovered > opsPGRecoveryBound {
		t.Errorf("service returned %s after PostgreSQL did; the documented bound is %s", recovered, opsPGRecoveryBound)
	}
	if _, err := watcher.Sessions(ctx); err != nil {
		t.Fatalf("the device connected through the outage: %v", err)
	}
	stop()

	// Only unavailable, never internal, never a dropped connection.
	all := codes.snapshot()
	t.Logf("outcomes: %v", all)
	for k, v := range all {
		if strings.HasSuffix(k, ":ok") || strings.HasSuffix(k, ":unavailable") {
			continue
		}
		t.Errorf("%d × %s: only unavailable is expected during a store outage", v, k)
	}
	if strings.Contains(n.logs.String(), "panic") {
		t.Errorf("the node panicked:\n%s", n.logs.String())
	}

	// No session lost or duplicated.
	db := opsPGConnect(t, ctx, direct)
	orphans := 0
	for _, w := range append(ws, &opsLoadWorker{userID: freshUser}) {
		rows, err := db.Query(ctx, `SELECT id FROM sessions WHERE user_id = $1`, w.userID)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		stored := map[string]bool{}
		for _, id := range ids {
			stored[id] = true
		}
		ok := map[string]bool{}
		for _, id := range w.okIDs {
			if ok[id] {
				t.Errorf("session id %s issued twice", id)
			}
			ok[id] = true
			if !stored[id] {
				t.Errorf("login.ok for session %s, but no row", id)
			}
		}
		extra := 0
		for id := range stored {
			if !ok[id] {
				extra++
			}
		}
		if w.name == "" {
			continue // the fresh user: its logins were not tracked one by one
		}
		if extra > w.finishFails {
			t.Errorf("user %s: %d rows of failed logins, but only %d logins failed at login.finish", w.name, extra, w.finishFails)
		}
		orphans += extra
	}
	t.Logf("orphan rows from logins whose reply was lost: %d", orphans)
	opsAssertNothingHalfWritten(t, ctx, db)
}

// TestOpsKill: SIGKILL on a node with devices connected and registrations and logins in flight.
// The devices see their connections drop without a close frame, resume on the other node with
// their tokens, and nothing was half-written.
func TestOpsKill(t *testing.T) {
	c := startCluster(t, opsEnv(nil))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()

	type device struct {
		conn  *client.Conn
		token string
		id    string
	}
	var devs []device
	for range 3 {
		name := uniqueName("kill")
		opsRegister(t, ctx, c.n1.Base, name)
		for range 2 {
			conn := dialBase(t, c.n1.Base)
			r, err := conn.Login(ctx, name, "pw", "")
			if err != nil {
				t.Fatal(err)
			}
			devs = append(devs, device{conn: conn, token: r.Session.Token, id: r.Session.ID})
		}
	}

	// Workers register new accounts and sign in to them, on node 1, until it dies.
	type outcome struct {
		name       string
		registered bool
		sessions   []string
	}
	const workers = 4
	outcomes := make([][]*outcome, workers)
	var iterations [workers]atomic.Int64
	var wg sync.WaitGroup
	wctx, stopWorkers := context.WithCancel(ctx)
	defer stopWorkers()
	for i := range workers {
		wg.Go(func() {
			for wctx.Err() == nil {
				o := &outcome{name: uniqueName("inflight")}
				outcomes[i] = append(outcomes[i], o)
				conn, err := client.Dial(wctx, c.n1.Base, cheap)
				if err != nil {
					return
				}
				if _, _, err := conn.Register(wctx, o.name, "pw"); err != nil {
					conn.Close()
					return
				}
				o.registered = true
				for range 2 {
					lc, err := client.Dial(wctx, c.n1.Base, cheap)
					if err != nil {
						conn.Close()
						return
					}
					r, err := lc.Login(wctx, o.name, "pw", "")
					lc.Close()
					if err != nil {
						conn.Close()
						return
					}
					o.sessions = append(o.sessions, r.Session.ID)
				}
				conn.Close()
				iterations[i].Add(1)
			}
		})
	}
	if !waitFor(ctx, func() bool {
		for i := range workers {
			if iterations[i].Load() < 2 {
				return false
			}
		}
		return true
	}) {
		t.Fatal("the workers never got going")
	}

	killedAt := time.Now()
	c.n1.Kill()
	for _, d := range devs {
		select {
		case <-d.conn.Done():
		case <-ctx.Done():
			t.Fatal("a device on the killed node did not notice")
		}
		// No close frame: the connection dropped (abnormal closure, 1006 in a browser).
		if code := d.conn.CloseCode(); code != -1 {
			t.Fatalf("device on the killed node closed with %d, want no close frame", code)
		}
	}
	t.Logf("every device saw the drop within %s", time.Since(killedAt))
	stopWorkers()
	wg.Wait()

	// They resume on node 2 with their tokens, over the WebSocket and over HTTP.
	for _, d := range devs {
		conn := dialBase(t, c.n2.Base)
		s, err := conn.Resume(ctx, d.token)
		if err != nil || s.ID != d.id {
			t.Fatalf("resume on node 2 after the kill: %+v %v", s, err)
		}
		if _, err := client.NewAPI(c.n2.Base, d.token).Session(ctx); err != nil {
			t.Fatalf("token on node 2 after the kill: %v", err)
		}
	}

	// Nothing half-written: what was confirmed is there, what was in flight is all or nothing.
	db := opsPGConnect(t, ctx, opsClusterDatabaseURL(t, c))
	opsAssertNothingHalfWritten(t, ctx, db)
	inflight := 0
	for i := range workers {
		for _, o := range outcomes[i] {
			users := opsPGCount(t, ctx, db, `SELECT count(*) FROM users WHERE username = $1`, o.name)
			if o.registered && users != 1 {
				t.Errorf("register.ok for %s, but %d account rows", o.name, users)
			}
			if !o.registered {
				inflight++
				if users > 1 {
					t.Errorf("%d account rows for %s", users, o.name)
				}
			}
			for _, id := range o.sessions {
				if opsPGCount(t, ctx, db, `SELECT count(*) FROM sessions WHERE id = $1`, id) != 1 {
					t.Errorf("login.ok for session %s, but no row", id)
				}
			}
			if users == 1 {
				// A login in flight at the kill may have committed without its reply.
				rows := opsPGCount(t, ctx, db, `SELECT count(*) FROM sessions s JOIN users u ON u.id = s.user_id WHERE u.username = $1`, o.name)
				if rows < len(o.sessions) || rows > len(o.sessions)+1 {
					t.Errorf("%s: %d session rows for %d confirmed logins", o.name, rows, len(o.sessions))
				}
			}
		}
	}
	t.Logf("%d registrations in flight at the kill", inflight)
}

// opsClusterDatabaseURL reads the database URL a cluster's processes were started with.
func opsClusterDatabaseURL(t *testing.T, c *cluster) string {
	t.Helper()
	for _, kv := range c.n1.cmd.Env {
		if v, ok := strings.CutPrefix(kv, "SESSIOND_DATABASE_URL="); ok {
			return v
		}
	}
	t.Fatal("no SESSIOND_DATABASE_URL in the cluster's environment")
	return ""
}

// TestOpsRedisOutageRevocations: node 2 loses Redis while it holds 120 signed-in devices and
// serves API calls; half of the devices are revoked from node 1 during the gap. Their tokens
// are refused on node 2 at once (the store is the authority), and every one of them is closed
// with 4403 within opsRedisRecoveryBound of Redis coming back; the other half stay connected.
func TestOpsRedisOutageRevocations(t *testing.T) {
	c := startCluster(t, opsEnv(nil))
	ctx, cancel := context.WithTimeout(context.Background(), 55*time.Second)
	defer cancel()

	const users, perUser = 12, 10
	type device struct {
		conn  *client.Conn
		token string
		id    string
	}
	controllers := make([]*client.Conn, users)
	devs := make([][]device, users)
	var wg sync.WaitGroup
	errs := make(chan error, users)
	for u := range users {
		wg.Go(func() {
			name := uniqueName("gapload")
			rc, err := client.Dial(ctx, c.n1.Base, cheap)
			if err != nil {
				errs <- err
				return
			}
			defer rc.Close()
			if _, _, err := rc.Register(ctx, name, "pw"); err != nil {
				errs <- err
				return
			}
			ctl, err := client.Dial(ctx, c.n1.Base, cheap)
			if err != nil {
				errs <- err
				return
			}
			controllers[u] = ctl
			if _, err := ctl.Login(ctx, name, "pw", "controller"); err != nil {
				errs <- err
				return
			}
			for range perUser {
				conn, err := client.Dial(ctx, c.n2.Base, cheap)
				if err != nil {
					errs <- err
					return
				}
				r, err := conn.Login(ctx, name, "pw", "")
				if err != nil {
					conn.Close()
					errs <- err
					return
				}
				devs[u] = append(devs[u], device{conn: conn, token: r.Session.Token, id: r.Session.ID})
			}
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for u := range users {
			if controllers[u] != nil {
				controllers[u].Close()
			}
			for _, d := range devs[u] {
				d.conn.Close()
			}
		}
	})
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}

	c.proxy.Cut()
	if !waitFor(ctx, func() bool {
		code, body := opsReadyz(ctx, c.n2.Base)
		return code == http.StatusOK && strings.Contains(body, `"hub":"degraded"`)
	}) {
		t.Fatal("node 2 never reported its hub degraded")
	}

	// API load on node 2 through the gap and after it.
	var codes opsCounts
	lctx, stopLoad := context.WithCancel(ctx)
	var lwg sync.WaitGroup
	for w := range 4 {
		lwg.Go(func() {
			for i := 0; lctx.Err() == nil; i++ {
				d := devs[(w*3+i)%users][i%perUser]
				_, err := client.NewAPI(c.n2.Base, d.token).Session(lctx)
				if lctx.Err() != nil {
					return
				}
				if err == nil {
					codes.add("ok")
				} else {
					codes.add(opsCode(err))
				}
			}
		})
	}
	defer func() { stopLoad(); lwg.Wait() }()

	// Node 1 revokes half of each user's devices while node 2 cannot hear it.
	revoked := map[string]bool{}
	for u := range users {
		for _, d := range devs[u][:perUser/2] {
			if _, err := controllers[u].Revoke(ctx, d.id); err != nil {
				t.Fatalf("revoke during the gap: %v", err)
			}
			revoked[d.id] = true
		}
	}
	// Refused on the cut-off node at once: the store is the authority.
	for u := range users {
		d := devs[u][0]
		if _, err := client.NewAPI(c.n2.Base, d.token).Session(ctx); !client.IsCode(err, "session_invalid") {
			t.Fatalf("revoked token on the cut-off node: %v", err)
		}
	}

	restored := time.Now()
	c.proxy.Restore(t)
	var slowest time.Duration
	for u := range users {
		for _, d := range devs[u] {
			if !revoked[d.id] {
				continue
			}
			select {
			case <-d.conn.Done():
			case <-time.After(time.Until(restored.Add(opsRedisRecoveryBound))):
				t.Fatalf("a device revoked during the gap was still open %s after Redis returned", opsRedisRecoveryBound)
			}
			if code := d.conn.CloseCode(); code != 4403 {
				t.Fatalf("revoked device closed with %d, want 4403", code)
			}
			slowest = max(slowest, time.Since(restored))
		}
	}
	t.Logf("all %d devices revoked during the gap closed within %s of Redis returning", len(revoked), slowest.Round(time.Millisecond))
	for u := range users {
		for _, d := range devs[u][perUser/2:] {
			if d.conn.CloseCode() != -1 {
				t.Fatalf("a device that was not revoked closed with %d", d.conn.CloseCode())
			}
			if _, err := d.conn.Call(ctx, "ping", nil); err != nil {
				t.Fatalf("a device that was not revoked: %v", err)
			}
		}
	}
	stopLoad()
	lwg.Wait()
	all := codes.snapshot()
	t.Logf("API calls on node 2 through the gap: %v", all)
	for k, v := range all {
		if k != "ok" && k != "session_invalid" {
			t.Errorf("%d × %s during the Redis gap", v, k)
		}
	}
	if all["ok"] == 0 {
		t.Error("no API call succeeded during the gap")
	}
}

// opsStallProxy forwards TCP like tcpProxy, but Stall turns it into a black hole: connections
// stay open and whatever either side sends is dropped, as in a network partition. (A refused
// connection fails fast; a partition only ever fails by a deadline.) Resume drops every
// connection and forwards again.
type opsStallProxy struct {
	addr    string
	stalled atomic.Bool
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
}

func newOpsStallProxy(t *testing.T, target string) *opsStallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &opsStallProxy{addr: ln.Addr().String(), conns: map[net.Conn]struct{}{}}
	track := func(cs ...net.Conn) {
		p.mu.Lock()
		for _, c := range cs {
			p.conns[c] = struct{}{}
		}
		p.mu.Unlock()
	}
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if err != nil {
				dst.Close()
				return
			}
			if !p.stalled.Load() {
				if _, err := dst.Write(buf[:n]); err != nil {
					src.Close()
					return
				}
			}
		}
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			track(c)
			if p.stalled.Load() {
				continue // held open, never answered
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			track(up)
			go pipe(up, c)
			go pipe(c, up)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.dropAll()
	})
	return p
}

func (p *opsStallProxy) Stall() { p.stalled.Store(true) }

func (p *opsStallProxy) Resume() {
	p.dropAll()
	p.stalled.Store(false)
}

func (p *opsStallProxy) dropAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]struct{}{}
}

// opsPGStallBound is how long a request may wait on a PostgreSQL that stopped answering before
// it is told unavailable: the server's per-request deadline (5 s) and some slack.
const opsPGStallBound = 8 * time.Second

// TestOpsPostgresStall: PostgreSQL stops answering without refusing anything (a partition).
// Logins, API calls and a connected device's requests are answered unavailable within
// opsPGStallBound instead of hanging, and the node serves again once the database is back.
func TestOpsPostgresStall(t *testing.T) {
	direct := postgresURL(t)
	u, err := url.Parse(direct)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newOpsStallProxy(t, u.Host)
	pu := *u
	pu.Host = proxy.addr
	n := startProcess(t, opsEnv(map[string]string{"SESSIOND_DATABASE_URL": pu.String()}))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()

	name := uniqueName("stall")
	opsRegister(t, ctx, n.Base, name)
	var fresh []string
	for range 2 {
		r, err := dialBase(t, n.Base).Login(ctx, name, "pw", "")
		if err != nil {
			t.Fatal(err)
		}
		fresh = append(fresh, r.Session.Token)
	}
	watcher := dialBase(t, n.Base)
	if _, err := watcher.Login(ctx, name, "pw", "watcher"); err != nil {
		t.Fatal(err)
	}
	// A connection handles one message at a time, and the login's handler goes on after
	// login.ok (it reads the device list for the first notice): the pong says it is done, so
	// that the list below is not queued behind it.
	if _, err := watcher.Call(ctx, "ping", nil); err != nil {
		t.Fatal(err)
	}
	loginConn := dialBase(t, n.Base)

	proxy.Stall()
	stalledAt := time.Now()
	type result struct {
		what string
		err  error
		took time.Duration
	}
	results := make(chan result, 3)
	timed := func(what string, f func() error) {
		go func() {
			start := time.Now()
			err := f()
			results <- result{what, err, time.Since(start)}
		}()
	}
	timed("login", func() error { _, err := loginConn.Login(ctx, name, "pw", ""); return err })
	timed("API call with a fresh token", func() error { _, err := client.NewAPI(n.Base, fresh[0]).Session(ctx); return err })
	timed("sessions.list of a connected device", func() error { _, err := watcher.Sessions(ctx); return err })
	for range 3 {
		r := <-results
		t.Logf("%s during the stall: %v after %s", r.what, r.err, r.took.Round(time.Millisecond))
		if !client.IsCode(r.err, "unavailable") {
			t.Errorf("%s during the stall: %v, want unavailable", r.what, r.err)
		}
		if r.took > opsPGStallBound {
			t.Errorf("%s waited %s for a stalled store; the bound is %s", r.what, r.took, opsPGStallBound)
		}
	}
	if code, body := opsReadyz(ctx, n.Base); code != http.StatusServiceUnavailable || !strings.Contains(body, `"store":"unavailable"`) {
		t.Errorf("/readyz during the stall: %d %s", code, body)
	}
	if n.opsExited() {
		t.Fatalf("node exited during the stall:\n%s", n.logs.String())
	}
	stalled := time.Since(stalledAt)

	proxy.Resume()
	resumedAt := time.Now()
	if !waitFor(ctx, func() bool {
		c, err := client.Dial(ctx, n.Base, cheap)
		if err != nil {
			return false
		}
		defer c.Close()
		_, err = c.Login(ctx, name, "pw", "")
		return err == nil
	}) {
		t.Fatal("logins never worked again after the stall")
	}
	if _, err := client.NewAPI(n.Base, fresh[1]).Session(ctx); err != nil {
		t.Fatalf("fresh token after the stall: %v", err)
	}
	recovered := time.Since(resumedAt)
	t.Logf("stalled %s; logins work again %s after the database answers", stalled.Round(time.Millisecond), recovered.Round(time.Millisecond))
	if recovered > opsPGRecoveryBound {
		t.Errorf("service returned %s after PostgreSQL did; the documented bound is %s", recovered, opsPGRecoveryBound)
	}
	if _, err := watcher.Sessions(ctx); err != nil {
		t.Fatalf("the device connected through the stall: %v", err)
	}
}
