package main

import (
	"net/http"
	"testing"
)

// TestCORS: a page on an allowed origin may call /api/v1 with its token: the preflight names
// the origin (never "*"), the methods and the headers the API takes, credentials are never
// allowed; another origin gets no CORS headers at all; forward auth, meant for proxies, none.
func TestCORS(t *testing.T) {
	const app = "https://app.example.com"
	n := startNode(t, map[string]string{"SESSIOND_ALLOWED_ORIGINS": app})
	name, _ := account(t, n, "cors", "pw")
	_, s := loginOn(t, n, name, "pw", "")
	do := func(method, path, origin string, h http.Header) *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctxT(t), method, n.Base+path, nil)
		for k, v := range h {
			req.Header[k] = v
		}
		req.Header.Set("Origin", origin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	preflight := http.Header{"Access-Control-Request-Method": {"PUT"}, "Access-Control-Request-Headers": {"authorization, if-match"}}

	r := do(http.MethodOptions, "/api/v1/vault", app, preflight)
	h := r.Header
	if r.StatusCode != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != app || h.Get("Access-Control-Allow-Credentials") != "" ||
		!contains(h.Get("Access-Control-Allow-Headers"), "Authorization") || !contains(h.Get("Access-Control-Allow-Headers"), "If-Match") ||
		!contains(h.Get("Access-Control-Allow-Headers"), "Sessiond-PoP") || !contains(h.Get("Access-Control-Allow-Methods"), "PUT") ||
		!contains(h.Get("Vary"), "Origin") {
		t.Fatalf("preflight from the allowed origin: %d %v", r.StatusCode, h)
	}
	r = do(http.MethodGet, "/api/v1/session", app, http.Header{"Authorization": {"Bearer " + s.Token}})
	if r.StatusCode != 200 || r.Header.Get("Access-Control-Allow-Origin") != app || !contains(r.Header.Get("Access-Control-Expose-Headers"), "ETag") {
		t.Fatalf("a call from the allowed origin: %d %v", r.StatusCode, r.Header)
	}
	for _, tc := range []struct{ method, path, origin string }{
		{http.MethodOptions, "/api/v1/vault", "https://evil.example"},
		{http.MethodGet, "/api/v1/session", "https://evil.example"},
		{http.MethodOptions, "/api/v1/forward-auth", app},
	} {
		r := do(tc.method, tc.path, tc.origin, preflight)
		if v := r.Header.Get("Access-Control-Allow-Origin"); v != "" {
			t.Fatalf("%s %s from %s: Access-Control-Allow-Origin %q", tc.method, tc.path, tc.origin, v)
		}
		if tc.method == http.MethodOptions && r.StatusCode == http.StatusNoContent {
			t.Fatalf("%s %s from %s: the preflight succeeded", tc.method, tc.path, tc.origin)
		}
	}
}
