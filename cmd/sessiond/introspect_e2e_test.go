package main

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/sessiond/sessiond/client"
	"github.com/sessiond/sessiond/internal/clientx"
)

// introspect posts form to /api/v1/introspect with the Authorization header auth and returns
// the status and the decoded answer.
func introspect(t *testing.T, n *node, auth string, form url.Values) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctxT(t), http.MethodPost, n.Base+"/api/v1/introspect", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// TestIntrospection: a service client (made with the admin CLI, its secret shown once) asks
// about tokens per RFC 7662: live ones are active with the user, session and deadlines; anything
// else is just inactive. The service's own User-Agent does not trip the fingerprint policy; the
// end user's, when passed, does. Unauthenticated and revoked services get 401.
func TestIntrospection(t *testing.T) {
	n, admin := startAdminNode(t, nil)
	var svc struct{ ID, Name, Secret string }
	if err := json.Unmarshal([]byte(admin("service", "create", "orders")), &svc); err != nil || !strings.HasPrefix(svc.Secret, "sds_") {
		t.Fatalf("service create: %v %+v", err, svc)
	}
	bearer := "Bearer " + svc.Secret
	c := dial(t, n, clientx.Cheap(client.Options{Header: withUA(chromeUA)}))
	name := uniqueName("introspected")
	uid, _, err := c.Register(ctxT(t), name, "pw")
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Login(ctxT(t), name, "pw", "")
	if err != nil {
		t.Fatal(err)
	}
	code, out := introspect(t, n, bearer, url.Values{"token": {res.Session.Token}})
	if code != 200 || out["active"] != true || out["sub"] != uid || out["sid"] != res.Session.ID || out["token_type"] != "sessiond" ||
		out["exp"] == nil || out["idle_exp"] == nil || out["iat"] == nil || out["vault_id"] != res.Session.VaultID {
		t.Fatalf("a live token: %d %v", code, out)
	}
	// HTTP Basic with the secret as the password works too.
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(svc.ID+":"+svc.Secret))
	if code, out := introspect(t, n, basic, url.Values{"token": {res.Session.Token}, "touch": {"false"}}); code != 200 || out["active"] != true {
		t.Fatalf("with Basic: %d %v", code, out)
	}
	for what, tok := range map[string]string{"garbage": "sdt_" + strings.Repeat("A", 43), "malformed": "x", "empty": ""} {
		if code, out := introspect(t, n, bearer, url.Values{"token": {tok}}); code != 200 || len(out) != 1 || out["active"] != false {
			t.Fatalf("a %s token: %d %v, want just active false", what, code, out)
		}
	}
	// The service calls from Go-http-client: the user's Chrome session lives on.
	tokenWorksUA := func(what string) {
		t.Helper()
		api := client.NewAPI(n.Base, res.Session.Token)
		api.Header = withUA(chromeUA)
		if _, err := api.Session(ctxT(t)); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	tokenWorksUA("the user's token after server-side introspection")
	for what, auth := range map[string]string{"no secret": "", "a wrong secret": "Bearer sds_" + strings.Repeat("B", 43), "a user's token": "Bearer " + res.Session.Token} {
		if code, _ := introspect(t, n, auth, url.Values{"token": {res.Session.Token}}); code != http.StatusUnauthorized {
			t.Fatalf("%s: %d, want 401", what, code)
		}
	}
	// Passing the end user's client applies the fingerprint policy: another browser ends it.
	if code, out := introspect(t, n, bearer, url.Values{"token": {res.Session.Token}, "client_ip": {"127.0.0.1"}, "user_agent": {firefoxUA}}); code != 200 || out["active"] != false {
		t.Fatalf("with another browser's user agent: %d %v", code, out)
	}
	tokenRefused(t, n, "after the fingerprint mismatch reported by the service", res.Session.Token)
	// A revoked service client is refused.
	admin("service", "revoke", svc.ID)
	if code, _ := introspect(t, n, bearer, url.Values{"token": {"x"}}); code != http.StatusUnauthorized {
		t.Fatalf("a revoked service client: %d, want 401", code)
	}
	if list := admin("service", "list"); !strings.Contains(list, svc.ID) || !strings.Contains(list, "revoked_at") || strings.Contains(list, svc.Secret) {
		t.Fatalf("service list: %s", list)
	}
}
