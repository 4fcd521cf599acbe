package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sessiond/sessiond/client"
	"github.com/sessiond/sessiond/session"
)

const keyFileWarning = "the key file is inside the data directory"

// TestKeyFileInDataDirWarning: a node serving beyond loopback warns when its key file sits in
// the data directory (a copy of the directory would carry the keys); not on loopback, and not
// with the key file elsewhere.
func TestKeyFileInDataDirWarning(t *testing.T) {
	inside := startNode(t, map[string]string{"SESSIOND_ADDR": "0.0.0.0:0"})
	if !strings.Contains(inside.logs.String(), keyFileWarning) {
		t.Fatalf("no warning for the default key file inside the data directory:\n%s", inside.logs.String())
	}
	elsewhere := startNode(t, map[string]string{"SESSIOND_ADDR": "0.0.0.0:0", "SESSIOND_KEY_FILE": filepath.Join(t.TempDir(), "keys.json")})
	loopback := startNode(t, nil)
	for name, n := range map[string]*node{"key file elsewhere": elsewhere, "loopback": loopback} {
		if strings.Contains(n.logs.String(), keyFileWarning) {
			t.Fatalf("%s: warned anyway", name)
		}
	}
}

// adminReq sends one request with a bearer token.
func adminReq(t *testing.T, method, url, token string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctxT(t), method, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// TestAdminTokenOwnSecret: the admin token comes from the key file's own admin key, not from the
// log key; a key file from before admin keys still works, with a warning.
func TestAdminTokenOwnSecret(t *testing.T) {
	adminAddr := freeAddr(t)
	n := startNode(t, map[string]string{"SESSIOND_ADMIN_ADDR": adminAddr})
	keyFile := filepath.Join(n.DataDir, "keys.json")
	keys, err := session.LoadKeys(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys.AdminKey) != 32 {
		t.Fatal("a new key file has no admin key")
	}
	url := "http://" + adminAddr + "/admin/v1/users/nobody/sessions"
	tok, _ := cli(t, "admin", "-key-file", keyFile, "token")
	if r := adminReq(t, "GET", url, strings.TrimSpace(tok)); r.StatusCode != http.StatusNotFound {
		t.Fatalf("the key file's admin token: HTTP %d, want 404 (no such user)", r.StatusCode)
	}
	legacy := *keys
	legacy.AdminKey = nil
	if r := adminReq(t, "GET", url, legacy.AdminToken()); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a token derived from the log key: HTTP %d, want 401", r.StatusCode)
	}
	if strings.Contains(n.logs.String(), "the key file has no admin key") {
		t.Fatal("warned about a key file that has an admin key")
	}

	// A key file without admin_key (made before it existed): the legacy token, and a warning.
	old := filepath.Join(t.TempDir(), "old-keys.json")
	var raw map[string]any
	data, _ := os.ReadFile(keyFile)
	_ = json.Unmarshal(data, &raw)
	delete(raw, "admin_key")
	data, _ = json.Marshal(raw)
	if err := os.WriteFile(old, data, 0o600); err != nil {
		t.Fatal(err)
	}
	oldAdmin := freeAddr(t)
	n2 := startNode(t, map[string]string{"SESSIOND_ADMIN_ADDR": oldAdmin, "SESSIOND_KEY_FILE": old})
	if !strings.Contains(n2.logs.String(), "the key file has no admin key") {
		t.Fatal("no warning for a key file without an admin key")
	}
	if r := adminReq(t, "GET", "http://"+oldAdmin+"/admin/v1/users/nobody/sessions", legacy.AdminToken()); r.StatusCode != http.StatusNotFound {
		t.Fatalf("the legacy token with an old key file: HTTP %d, want 404", r.StatusCode)
	}
}

// TestAdminNonLoopbackNeedsTLS: an admin listener beyond loopback without TLS stops the node.
func TestAdminNonLoopbackNeedsTLS(t *testing.T) {
	port := freeAddr(t)[len("127.0.0.1:"):]
	err := startFails(t, map[string]string{"SESSIOND_ADMIN_ADDR": "0.0.0.0:" + port})
	if err == nil || !strings.Contains(err.Error(), "needs TLS") {
		t.Fatalf("a non-loopback admin address without TLS: %v", err)
	}
	// With TLS it starts (on a port picked just now: the first one may be taken meanwhile).
	certPath, keyPath, _ := selfSigned(t)
	port = freeAddr(t)[len("127.0.0.1:"):]
	startNode(t, map[string]string{"SESSIOND_ADMIN_ADDR": "0.0.0.0:" + port, "SESSIOND_TLS_CERT": certPath, "SESSIOND_TLS_KEY": keyPath})
}

// TestAdminActionsAudited: every admin action is a security event of the user it concerns,
// reads included, visible in the user's activity (and in the log for a deleted user).
func TestAdminActionsAudited(t *testing.T) {
	adminAddr := freeAddr(t)
	n := startNode(t, map[string]string{"SESSIOND_ADMIN_ADDR": adminAddr})
	keyFile := filepath.Join(n.DataDir, "keys.json")
	admin := func(args ...string) {
		t.Helper()
		if out, err := cli(t, append([]string{"admin", "-url", "http://" + adminAddr, "-key-file", keyFile}, args...)...); err != nil {
			t.Fatalf("admin %v: %v %s", args, err, out)
		}
	}
	name, _ := account(t, n, "audited", "pw")
	watcher, _ := loginOn(t, n, name, "pw", "watcher")
	_, victim := loginOn(t, n, name, "pw", "victim")
	admin("sessions", name)
	admin("revoke", victim.ID)
	acts, err := watcher.Call(ctxT(t), "activity.list", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"kind":"admin_action","reason":"list_sessions"`, `"kind":"admin_action","reason":"revoke_session"`} {
		if !strings.Contains(string(acts.Raw), want) {
			t.Fatalf("activity lacks %s: %s", want, acts.Raw)
		}
	}
	admin("revoke-user", name)
	admin("delete-user", name)
	for _, reason := range []string{"revoke_user", "delete_user"} {
		if !strings.Contains(n.logs.String(), `"event":"admin_action"`) || !strings.Contains(n.logs.String(), `"reason":"`+reason+`"`) {
			t.Fatalf("no admin_action %s in the log", reason)
		}
	}
}

// TestMethodNotAllowed: a known path with a wrong method is 405 method_not_allowed with Allow,
// on the API, the page and the admin API; an unknown path stays 404.
func TestMethodNotAllowed(t *testing.T) {
	adminAddr := freeAddr(t)
	n := startNode(t, map[string]string{"SESSIOND_ADMIN_ADDR": adminAddr})
	for _, tc := range []struct{ method, url, allow string }{
		{"POST", n.Base + "/api/v1/session", "GET, HEAD, DELETE"},
		{"PATCH", n.Base + "/api/v1/vault", "GET, HEAD, PUT"},
		{"PUT", n.Base + "/", "GET, HEAD"},
		{"POST", "http://" + adminAddr + "/admin/v1/sessions/x", "DELETE"},
	} {
		r := adminReq(t, tc.method, tc.url, "x")
		if r.StatusCode != http.StatusMethodNotAllowed || r.Header.Get("Allow") != tc.allow {
			t.Fatalf("%s %s: HTTP %d Allow %q, want 405 Allow %q", tc.method, tc.url, r.StatusCode, r.Header.Get("Allow"), tc.allow)
		}
	}
	r, _ := client.NewAPI(n.Base, "").Do(ctxT(t), "POST", "/api/v1/session", nil, nil)
	wantStatus(t, "POST /api/v1/session", r, http.StatusMethodNotAllowed, "method_not_allowed")
	r, _ = client.NewAPI(n.Base, "").Do(ctxT(t), "GET", "/api/v1/nothing", nil, nil)
	wantStatus(t, "GET /api/v1/nothing", r, http.StatusNotFound, "not_found")
}

// TestBearerCaseInsensitive: the scheme name of Authorization is case-insensitive everywhere,
// refresh included.
func TestBearerCaseInsensitive(t *testing.T) {
	n := startNode(t, nil)
	name, _ := account(t, n, "bearer", "pw")
	_, s := loginOn(t, n, name, "pw", "")
	for _, scheme := range []string{"bearer", "BEARER"} {
		r, _ := client.NewAPI(n.Base, "").Do(ctxT(t), "GET", "/api/v1/session", nil, http.Header{"Authorization": {scheme + " " + s.Token}})
		wantStatus(t, scheme+" on GET /api/v1/session", r, http.StatusOK, "")
	}
	r, _ := client.NewAPI(n.Base, "").Do(ctxT(t), "POST", "/api/v1/session/refresh", nil, http.Header{"Authorization": {"bearer " + s.Token}})
	wantStatus(t, "bearer on refresh", r, http.StatusOK, "")
}
