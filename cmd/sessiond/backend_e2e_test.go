package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/sessiond/sessiond/client/backend"
)

// TestBackendMiddleware: an application's handler behind client/backend's RequireSession sees
// the user's identity; its cached answer is dropped as soon as the event stream says the
// session ended, so the next request is refused although the cache would have kept the answer
// for an hour.
func TestBackendMiddleware(t *testing.T) {
	n, admin := startAdminNode(t, nil)
	svc := serviceClient(t, admin, "app")
	g := backend.New(backend.Config{Base: n.Base, Secret: svc.Secret, CacheTTL: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = g.Run(ctx) }()
	if !waitFor(ctxT(t), g.Live) {
		t.Fatal("the middleware never connected to the event stream")
	}
	call := appCaller(t, g)

	name, uid := account(t, n, "backend", "pw")
	owner, _ := loginOn(t, n, name, "pw", "owner")
	_, other := loginOn(t, n, name, "pw", "other")
	if code, body := call(other.Token); code != 200 || body != uid {
		t.Fatalf("a live token: %d %q", code, body)
	}
	if code, _ := call(other.Token); code != 200 { // from the cache now
		t.Fatalf("a live token, cached: %d", code)
	}
	if _, err := owner.Revoke(ctxT(t), other.ID); err != nil {
		t.Fatal(err)
	}
	if !waitFor(ctxT(t), func() bool { return g.Evictions() > 0 }) {
		t.Fatal("the session's end never reached the middleware's cache")
	}
	if code, _ := call(other.Token); code != http.StatusUnauthorized {
		t.Fatalf("the revoked token after its session.ended: %d, want 401", code)
	}
	if code, _ := call("sdt_garbage"); code != http.StatusUnauthorized {
		t.Fatalf("a garbage token: %d", code)
	}
}

// appCaller serves an application handler behind g.RequireSession that writes the user id, and
// returns a function calling it with a token (and extra headers, name then value).
func appCaller(t *testing.T, g *backend.Guard) func(token string, hdr ...string) (int, string) {
	app := httptest.NewServer(g.RequireSession(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := backend.IdentityFrom(r.Context())
		fmt.Fprint(w, id.UserID)
	})))
	t.Cleanup(app.Close)
	return func(token string, hdr ...string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctxT(t), http.MethodGet, app.URL, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b [64]byte
		k, _ := resp.Body.Read(b[:])
		return resp.StatusCode, string(b[:k])
	}
}

// TestBackendMiddlewareStreamDown: while the middleware's event stream is not connected, its
// cache is not trusted (a revocation it cannot hear of is refused at once); the cache stays
// within MaxEntries; forward-auth identity headers count only from a trusted proxy.
func TestBackendMiddlewareStreamDown(t *testing.T) {
	n, admin := startAdminNode(t, nil)
	svc := serviceClient(t, admin, "app")
	// Run is called, but its stream ends at once: the middleware follows nothing.
	g := backend.New(backend.Config{Base: n.Base, Secret: svc.Secret, CacheTTL: time.Hour, MaxEntries: 2})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = g.Run(ctx)
	call := appCaller(t, g)

	name, uid := account(t, n, "backenddown", "pw")
	owner, _ := loginOn(t, n, name, "pw", "owner")
	_, other := loginOn(t, n, name, "pw", "other")
	_, third := loginOn(t, n, name, "pw", "third")
	if code, body := call(other.Token); code != 200 || body != uid {
		t.Fatalf("a live token: %d %q", code, body)
	}
	if _, err := owner.Revoke(ctxT(t), other.ID); err != nil {
		t.Fatal(err)
	}
	if code, _ := call(other.Token); code != http.StatusUnauthorized {
		t.Fatalf("a revoked token while the stream is down: %d, want 401 (the cache must not be trusted)", code)
	}
	for _, tok := range []string{third.Token, owner.Token()} {
		if code, _ := call(tok); code != 200 {
			t.Fatalf("a live token: %d", code)
		}
	}
	if _, _ = call(third.Token); g.Len() > 2 {
		t.Fatalf("the cache holds %d answers, over MaxEntries 2", g.Len())
	}

	// Forward-auth headers: believed from a trusted proxy only.
	forged := []string{"X-Sessiond-User-Id", "u_forged", "X-Sessiond-Session-Id", "s_forged"}
	if code, _ := call("", forged...); code != http.StatusUnauthorized {
		t.Fatalf("identity headers from an untrusted peer: %d, want 401", code)
	}
	trusting := backend.New(backend.Config{Base: n.Base, Secret: svc.Secret,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	if code, body := appCaller(t, trusting)("", forged...); code != 200 || body != "u_forged" {
		t.Fatalf("identity headers from a trusted proxy: %d %q", code, body)
	}
}

// startAdminNode starts a node with an admin listener and returns a function running
// `sessiond admin ARGS…` against it (failing the test on an error).
func startAdminNode(t *testing.T, env map[string]string) (*node, func(args ...string) string) {
	t.Helper()
	adminAddr := freeAddr(t)
	all := map[string]string{"SESSIOND_ADMIN_ADDR": adminAddr}
	for k, v := range env {
		all[k] = v
	}
	n := startNode(t, all)
	return n, func(args ...string) string {
		t.Helper()
		out, err := cli(t, append([]string{"admin", "-url", "http://" + adminAddr, "-key-file", filepath.Join(n.DataDir, "keys.json")}, args...)...)
		if err != nil {
			t.Fatalf("admin %v: %v %s", args, err, out)
		}
		return out
	}
}

// serviceClient creates a service client and returns what `admin service create` printed.
func serviceClient(t *testing.T, admin func(args ...string) string, name string) struct{ ID, Name, Secret string } {
	t.Helper()
	var svc struct{ ID, Name, Secret string }
	if out := admin("service", "create", name); json.Unmarshal([]byte(out), &svc) != nil || svc.Secret == "" {
		t.Fatalf("service create: %s", out)
	}
	return svc
}
