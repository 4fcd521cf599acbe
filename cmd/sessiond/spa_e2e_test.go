package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sessiond/sessiond/client/backend"
)

// TestExampleSPA runs examples/spa — built from the @sessiond/client tarball that `make web`
// packs and installs into it — in headless Chromium, on its own origin with its own API guarded
// by client/backend: the page registers and signs in against sessiond on another origin, calls
// the API through authFetch, and shows the forced logout when an administrator ends the session.
func TestExampleSPA(t *testing.T) {
	requireBrowser(t)
	spa, _ := filepath.Abs("../../examples/spa")
	for _, f := range []string{"dist/app.js", "node_modules/@sessiond/client/package.json"} {
		if _, err := os.Stat(filepath.Join(spa, f)); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("examples/spa/%s is missing: make web packs the client and builds the example", f)
			}
			t.Skipf("examples/spa/%s missing; run make web", f)
		}
	}
	mux := http.NewServeMux()
	app := httptest.NewServer(mux)
	t.Cleanup(app.Close)
	n, admin := startAdminNode(t, map[string]string{"SESSIOND_ALLOWED_ORIGINS": app.URL})
	svc := serviceClient(t, admin, "spa-api")
	g := backend.New(backend.Config{Base: n.Base, Secret: svc.Secret})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = g.Run(ctx) }()
	mux.Handle("GET /api/orders", g.RequireSession(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := backend.IdentityFrom(r.Context())
		_ = json.NewEncoder(w).Encode(map[string]any{"user": id.UserID, "session": id.SessionID, "orders": []string{"#1001"}})
	})))
	mux.Handle("/", http.FileServer(http.Dir(spa)))

	b := newBrowser(t, "spa", app.URL)
	b.do("open the example", 30*time.Second, chromedp.Navigate(app.URL+"/?sessiond="+n.Base), chromedp.WaitVisible(chromedp.CSS(hook("username"))))
	b.fill("username", uniqueName("spa"))
	b.fill("password", "correct horse battery")
	b.click(hook("register"))
	b.waitFor("signed in", browserWait, `document.getElementById('status').dataset.status === 'signed_in'`)

	b.click(hook("load"))
	b.waitFor("the orders", browserWait, `document.getElementById('orders').dataset.status !== undefined`)
	var orders struct{ User, Session string }
	if status := eval[string](b, `document.getElementById('orders').dataset.status`); status != "200" {
		t.Fatalf("the app's API through authFetch: %s %s\n%s", status, eval[string](b, `document.getElementById('orders').textContent`), b.report())
	}
	if err := json.Unmarshal([]byte(eval[string](b, `document.getElementById('orders').textContent`)), &orders); err != nil || orders.Session == "" {
		t.Fatalf("the app's answer: %v %+v", err, orders)
	}

	// Ended elsewhere: the page is told at once, and its API calls stop.
	admin("revoke", orders.Session)
	b.waitFor("the forced logout", 5*time.Second, `document.getElementById('status').dataset.ended === 'admin'`)
	if got := eval[string](b, `document.getElementById('status').textContent`); !strings.Contains(got, "Signed out: admin") {
		t.Fatalf("the page after the revocation says %q", got)
	}
	if visible := eval[bool](b, `document.getElementById('signin').checkVisibility()`); !visible {
		t.Fatal("the sign-in form is not shown again after the forced logout")
	}
	b.checkNoProblems()
}
