package main

import (
	"context"
	"net/http"
	"net/url"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/sessiond/sessiond/client"
)

// cluster is two real sessiond processes sharing PostgreSQL, Redis and one key file.
type cluster struct {
	n1, n2 *proc
	proxy  *tcpProxy // node 2's path to Redis, to cut it
}

func startCluster(t *testing.T, extra map[string]string) *cluster {
	t.Helper()
	dbURL := postgresURL(t)
	rURL := redisURL(t)
	u, err := url.Parse(rURL)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "keys.json")
	if err := run(context.Background(), []string{"keygen", "-o", keyFile}, func(string) string { return "" }, &syncBuffer{}, &syncBuffer{}, nil); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"SESSIOND_DATABASE_URL": dbURL, "SESSIOND_KEY_FILE": keyFile,
		"SESSIOND_REDIS_PREFIX": "e2e-" + randomHex(4) + ":",
	}
	for k, v := range extra {
		env[k] = v
	}
	c := &cluster{}
	env["SESSIOND_REDIS_URL"] = rURL
	c.n1 = startProcess(t, env)
	c.proxy = newTCPProxy(t, u.Host)
	u2 := *u
	u2.Host = c.proxy.addr
	env["SESSIOND_REDIS_URL"] = u2.String()
	c.n2 = startProcess(t, env)
	return c
}

func dialBase(t *testing.T, base string) *client.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, base, cheap)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func reasonOf(t *testing.T, m client.Message) string {
	var r struct{ Reason string }
	if err := m.Decode(&r); err != nil {
		t.Fatal(err)
	}
	return r.Reason
}

// TestMultiNode: devices on two nodes see each other's changes at once.
func TestMultiNode(t *testing.T) {
	c := startCluster(t, nil)
	ctx := ctxT(t)
	name := uniqueName("two-nodes")
	a := dialBase(t, c.n1.Base)
	if _, _, err := a.Register(ctx, name, "pw"); err != nil {
		t.Fatal(err)
	}
	ra, err := a.Login(ctx, name, "pw", "phone on node 1")
	if err != nil {
		t.Fatal(err)
	}
	// A login on node 2 shows up in node 1's notice.sessions_changed.
	b := dialBase(t, c.n2.Base)
	rb, err := b.Login(ctx, name, "pw", "laptop on node 2")
	if err != nil {
		t.Fatal(err)
	}
	for {
		m, err := a.WaitNotice(ctx, "notice.sessions_changed")
		if err != nil {
			t.Fatal(err)
		}
		var ch struct{ Sessions []client.Device }
		_ = m.Decode(&ch)
		ids := []string{}
		for _, s := range ch.Sessions {
			ids = append(ids, s.ID)
			if s.ID == ra.Session.ID && !s.Current {
				t.Fatal("current not relative to the recipient")
			}
		}
		sort.Strings(ids)
		if len(ids) == 2 {
			break
		}
	}
	// Device A on node 1 revokes device B on node 2: B is told and closed with 4403.
	start := time.Now()
	if _, err := a.Revoke(ctx, rb.Session.ID); err != nil {
		t.Fatal(err)
	}
	m, err := b.WaitNotice(ctx, "notice.revoked")
	if err != nil || reasonOf(t, m) != "revoked_by_user" {
		t.Fatalf("B on node 2: %v %s", err, m.Raw)
	}
	t.Logf("revoke on node 1 -> notice on node 2: %s", time.Since(start))
	waitClosed(t, b, 4403)
	if _, err := client.NewAPI(c.n2.Base, rb.Session.Token).Session(ctx); !client.IsCode(err, "session_invalid") {
		t.Fatalf("revoked token on node 2: %v", err)
	}

	// A password change on node 1 closes every other device on node 2.
	var others []*client.Conn
	for i := 0; i < 3; i++ {
		o := dialBase(t, c.n2.Base)
		if _, err := o.Login(ctx, name, "pw", ""); err != nil {
			t.Fatal(err)
		}
		others = append(others, o)
	}
	if _, err := a.ChangePassword(ctx, "new pw"); err != nil {
		t.Fatal(err)
	}
	for _, o := range others {
		m, err := o.WaitNotice(ctx, "notice.revoked")
		if err != nil || reasonOf(t, m) != "password_changed" {
			t.Fatalf("device on node 2 after password change: %v", err)
		}
		waitClosed(t, o, 4403)
	}
	if _, err := client.NewAPI(c.n1.Base, ra.Session.Token).Session(ctx); err != nil {
		t.Fatalf("the changing device must stay: %v", err)
	}
}

// TestMultiNodeRedisGap: node 2 loses Redis; a revocation during the gap is still enforced on
// next use, and the device is closed once Redis is back (the node re-checks its connections).
func TestMultiNodeRedisGap(t *testing.T) {
	// An hour-long cache: whatever node 2 enforces during the gap, it cannot owe to an entry
	// that expired meanwhile.
	c := startCluster(t, map[string]string{"SESSIOND_CACHE_TTL": "1h"})
	ctx := ctxT(t)
	name := uniqueName("gap")
	a := dialBase(t, c.n1.Base)
	if _, _, err := a.Register(ctx, name, "pw"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Login(ctx, name, "pw", ""); err != nil {
		t.Fatal(err)
	}
	// On node 2: B is in use during the gap, E stays idle through it.
	b := dialBase(t, c.n2.Base)
	rb, err := b.Login(ctx, name, "pw", "")
	if err != nil {
		t.Fatal(err)
	}
	e := dialBase(t, c.n2.Base)
	re, err := e.Login(ctx, name, "pw", "")
	if err != nil {
		t.Fatal(err)
	}
	api := client.NewAPI(c.n2.Base, rb.Session.Token)
	if _, err := api.Session(ctx); err != nil { // now cached on node 2, by token and by id
		t.Fatal(err)
	}
	if _, err := b.Sessions(ctx); err != nil {
		t.Fatal(err)
	}

	c.proxy.Cut()
	degraded := func() bool {
		r, err := client.NewAPI(c.n2.Base, "").Do(ctx, http.MethodGet, "/readyz", nil, nil)
		return err == nil && r.Status == 200 && containsAll(string(r.Body), `"hub":"degraded"`)
	}
	if !waitFor(ctx, degraded) {
		t.Fatal("node 2 never reported its hub degraded")
	}
	// Logins on node 2 keep working from the store.
	d := dialBase(t, c.n2.Base)
	if _, err := d.Login(ctx, name, "pw", ""); err != nil {
		t.Fatalf("login during the Redis gap: %v", err)
	}
	for _, id := range []string{rb.Session.ID, re.Session.ID} {
		if _, err := a.Revoke(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	// Enforced on next use on the node that missed the notices, though its cache still holds
	// both sessions as live: with the hub degraded, node 2 reads the store.
	if _, err := api.Session(ctx); !client.IsCode(err, "session_invalid") {
		t.Fatalf("revoked token over HTTP on the cut-off node: %v", err)
	}
	if _, err := b.Sessions(ctx); !client.IsCode(err, "session_invalid") {
		t.Fatalf("revoked session's WebSocket on the cut-off node: %v", err)
	}
	expectEnd(t, b, "B used during the gap", "notice.revoked", "revoked_by_user", 4403)

	// E, idle, cannot have heard yet: a ping's answer comes with no notice.revoked before it.
	if _, err := e.Call(ctx, "ping", nil); err != nil {
		t.Fatalf("E during the gap: %v", err)
	}
	for pending := true; pending; {
		select {
		case m := <-e.Notices():
			if m.Type == "notice.revoked" {
				t.Fatalf("E was told while its node could not have heard: %s", m.Raw)
			}
		default:
			pending = false
		}
	}
	restored := time.Now()
	c.proxy.Restore(t)
	m, err := e.WaitNotice(ctx, "notice.revoked")
	if err != nil || reasonOf(t, m) != "revoked_by_user" {
		t.Fatalf("after Redis returned: %v", err)
	}
	waitClosed(t, e, 4403)
	t.Logf("idle device closed %s after Redis returned", time.Since(restored))
}

func containsAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !contains(s, p) {
			return false
		}
	}
	return true
}

func contains(s, sub string) bool {
	return len(sub) == 0 || (len(s) >= len(sub) && (s[:len(sub)] == sub || contains(s[1:], sub)))
}
