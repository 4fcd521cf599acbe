package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
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
	adminAddr := freeAddr(t)
	n := startNode(t, map[string]string{"SESSIOND_ADMIN_ADDR": adminAddr})
	out, err := cli(t, "admin", "-url", "http://"+adminAddr, "-key-file", filepath.Join(n.DataDir, "keys.json"), "service", "create", "app")
	var svc struct{ Secret string }
	if err != nil || json.Unmarshal([]byte(out), &svc) != nil {
		t.Fatalf("service create: %v %s", err, out)
	}
	g := backend.New(backend.Config{Base: n.Base, Secret: svc.Secret, CacheTTL: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = g.Run(ctx) }()
	app := httptest.NewServer(g.RequireSession(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := backend.IdentityFrom(r.Context())
		fmt.Fprint(w, id.UserID)
	})))
	t.Cleanup(app.Close)
	call := func(token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctxT(t), http.MethodGet, app.URL, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b [64]byte
		k, _ := resp.Body.Read(b[:])
		return resp.StatusCode, string(b[:k])
	}

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
