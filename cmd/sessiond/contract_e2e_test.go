package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestContractEveryOperation calls, on one real node, every operation of docs/openapi.yaml
// that the other end-to-end tests reach only through a proxy (forward auth with every method)
// or not at all (readiness, the CORS preflight of every path), so that each has its answers
// checked against the document by TestMain's transport in every run; the rest are covered by
// the tests of their features (the list: go test -v, or SESSIOND_CONTRACT_COVERAGE=1).
func TestContractEveryOperation(t *testing.T) {
	const app = "https://app.example"
	n := startNode(t, map[string]string{"SESSIOND_ALLOWED_ORIGINS": app})
	name, _ := account(t, n, "contract", "pw")
	c, s := loginOn(t, n, name, "pw", "contract")
	defer c.Close()

	before := api.Seen()
	call := func(method, path string, h map[string]string) int {
		t.Helper()
		req, err := http.NewRequestWithContext(ctxT(t), method, n.Base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range h {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := call("GET", "/readyz", nil); got != http.StatusOK {
		t.Errorf("readyz: %d", got)
	}
	bearer := map[string]string{"Authorization": "Bearer " + s.Token}
	for _, m := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} {
		if got := call(m, "/api/v1/forward-auth", bearer); got != http.StatusOK {
			t.Errorf("forward auth with %s: %d", m, got)
		}
		if got := call(m, "/api/v1/forward-auth", nil); got != http.StatusUnauthorized {
			t.Errorf("forward auth with %s and no token: %d", m, got)
		}
	}
	for _, p := range []string{"/api/v1/opaque/config", "/api/v1/session", "/api/v1/session/refresh", "/api/v1/sessions",
		"/api/v1/sessions/revoke-others", "/api/v1/sessions/" + s.ID, "/api/v1/vault", "/api/v1/activity"} {
		pre := map[string]string{"Origin": app, "Access-Control-Request-Method": "GET"}
		if got := call("OPTIONS", p, pre); got != http.StatusNoContent {
			t.Errorf("preflight of %s: %d", p, got)
		}
		pre["Origin"] = "https://elsewhere.example"
		if got := call("OPTIONS", p, pre); got != http.StatusMethodNotAllowed {
			t.Errorf("preflight of %s from another origin: %d", p, got)
		}
	}

	// Each of those operations was checked.
	after := api.Seen()
	for _, op := range api.Operations() {
		if !strings.Contains(op, "forward-auth") && !strings.HasPrefix(op, "OPTIONS ") && op != "GET /readyz" {
			continue
		}
		grew := false
		for k, v := range after {
			if strings.HasPrefix(k, op+" ") && v > before[k] {
				grew = true
			}
		}
		if !grew {
			t.Errorf("%s: no answer checked", op)
		}
	}
}
