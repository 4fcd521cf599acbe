package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sessiond/sessiond/client"
	"github.com/sessiond/sessiond/internal/clientx"
)

// crossOriginPage is a page of another origin that calls sessiond's API with a token.
const crossOriginPage = `<!doctype html><meta charset="utf-8"><title>app</title><script>
window.run = async (base, token) => {
  const out = {};
  const auth = {Authorization: "Bearer " + token};
  try {
    const r = await fetch(base + "/api/v1/session", {headers: auth});
    out.session = r.status;
    out.sid = (await r.json()).session.id;
    const p = await fetch(base + "/api/v1/vault", {method: "PUT", body: "ciphertext",
      headers: {...auth, "If-None-Match": "*", "Content-Type": "application/octet-stream"}});
    out.put = p.status;
    out.etag = p.headers.get("ETag");
    const g = await fetch(base + "/api/v1/vault", {headers: auth});
    out.get = g.status;
    out.body = await g.text();
  } catch (e) {
    out.error = String(e);
  }
  window.result = out;
};
</script>`

// TestBrowserCrossOriginAPI: a single-page app served from an allowed origin calls /api/v1 (the
// session, a vault write with its conditional header, the vault read with its ETag) from a real
// Chromium; the same page from another origin is refused by the browser.
func TestBrowserCrossOriginAPI(t *testing.T) {
	requireBrowser(t)
	page := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, crossOriginPage)
	})
	allowed, other := httptest.NewServer(page), httptest.NewServer(page)
	t.Cleanup(allowed.Close)
	t.Cleanup(other.Close)
	n := startNode(t, map[string]string{"SESSIOND_ALLOWED_ORIGINS": allowed.URL})

	run := func(b *browser, pageURL, token string) map[string]any {
		t.Helper()
		b.do("open "+pageURL, 30*time.Second, chromedp.Navigate(pageURL))
		eval[any](b, fmt.Sprintf(`void window.run(%q, %q)`, n.Base, token))
		b.waitFor("the page's calls", 20*time.Second, `window.result !== undefined`)
		var out map[string]any
		_ = json.Unmarshal([]byte(eval[string](b, `JSON.stringify(window.result)`)), &out)
		return out
	}
	b := newBrowser(t, "spa", allowed.URL)
	// Sign in with the browser's own User-Agent, as the page's sign-in would.
	b.do("open the page", 30*time.Second, chromedp.Navigate(allowed.URL))
	ua := eval[string](b, `navigator.userAgent`)
	c := dial(t, n, clientx.Cheap(client.Options{Header: withUA(ua)}))
	name := uniqueName("spa")
	if _, _, err := c.Register(ctxT(t), name, "pw"); err != nil {
		t.Fatal(err)
	}
	res, err := c.Login(ctxT(t), name, "pw", "")
	if err != nil {
		t.Fatal(err)
	}

	out := run(b, allowed.URL, res.Session.Token)
	if out["error"] != nil || out["session"] != 200.0 || out["sid"] != res.Session.ID || out["put"] != 204.0 ||
		out["etag"] == nil || out["get"] != 200.0 || out["body"] != "ciphertext" {
		t.Fatalf("from the allowed origin: %v\n%s", out, b.report())
	}
	out = run(b, other.URL, res.Session.Token)
	if out["error"] == nil {
		t.Fatalf("from an origin not allowed, the browser let the page read the answer: %v", out)
	}
}
