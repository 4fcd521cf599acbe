package main

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/sessiond/sessiond/internal/wirecheck"
)

// contract records what the end-to-end tests received that docs/asyncapi.yaml (every frame the
// server sends to a WebSocket these tests open through the default HTTP transport, the Go
// client's unless a test gives it another) and docs/openapi.yaml (every answer from a node's
// listeners, which startNode watches) do not describe; TestMain fails the run when there is
// any, so that neither document can drift from the server.
type contract struct {
	mu         sync.Mutex
	checked    int
	violations []string
}

func (c *contract) record(what string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checked++
	if err != nil && len(c.violations) < 20 {
		if len(what) > 300 {
			what = what[:300] + "…"
		}
		c.violations = append(c.violations, fmt.Sprintf("%v\n    %s", err, what))
	}
}

func (c *contract) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.checked
}

// report prints the violations and says whether there were any.
func (c *contract) report(doc, unit string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.violations) == 0 {
		return false
	}
	fmt.Fprintf(os.Stderr, "FAIL: %d of %d %s received did not match %s:\n", len(c.violations), c.checked, unit, doc)
	for _, v := range c.violations {
		fmt.Fprintln(os.Stderr, "  "+v)
	}
	return true
}

var (
	wire    contract       // WebSocket frames
	answers contract       // HTTP answers
	api     *wirecheck.API // docs/openapi.yaml, compiled
)

func TestMain(m *testing.M) {
	checker, err := wirecheck.Load("../../docs/asyncapi.yaml")
	if err != nil {
		fmt.Fprintln(os.Stderr, "docs/asyncapi.yaml:", err)
		os.Exit(1)
	}
	if api, err = wirecheck.LoadOpenAPI("../../docs/openapi.yaml"); err != nil {
		fmt.Fprintln(os.Stderr, "docs/openapi.yaml:", err)
		os.Exit(1)
	}
	frames := checker.Transport(http.DefaultTransport, func(frame []byte, err error) { wire.record("frame: "+string(frame), err) })
	http.DefaultTransport = api.Transport(frames, answers.record)
	code := m.Run()
	if wire.report("docs/asyncapi.yaml", "frames") {
		code = 1
	}
	if answers.report("docs/openapi.yaml", "HTTP answers") {
		code = 1
	}
	if testing.Verbose() || os.Getenv("SESSIOND_CONTRACT_COVERAGE") != "" {
		printCoverage()
	}
	os.Exit(code)
}

// printCoverage lists, for docs/TESTING.md, the documented operations and the statuses the run
// checked for each, and those it never saw.
func printCoverage() {
	seen := api.Seen()
	fmt.Fprintf(os.Stderr, "contract: %d frames and %d HTTP answers checked\n", wire.count(), answers.count())
	for _, op := range api.Operations() {
		var got []string
		for k, n := range seen {
			if rest, ok := strings.CutPrefix(k, op+" "); ok && !strings.Contains(rest, " ") {
				got = append(got, fmt.Sprintf("%s×%d", rest, n))
			}
		}
		sort.Strings(got)
		if len(got) == 0 {
			got = []string{"NOT EXERCISED"}
		}
		fmt.Fprintf(os.Stderr, "  %-45s %s\n", op, strings.Join(got, " "))
	}
}

// TestWireCheckCatchesDrift: the validator refuses frames that differ from the document — a
// notice without its reason, an unknown field, an unknown type — and takes a right one.
func TestWireCheckCatchesDrift(t *testing.T) {
	c, err := wirecheck.Load("../../docs/asyncapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{
		`{"type":"notice.revoked"}`,
		`{"type":"pong","id":"p1","extra":true}`,
		`{"type":"notice.expired","reason":"tired"}`,
		`{"type":"sessions.revoked","id":"r1","session_ids":["not an id"]}`,
		`{"type":"login.ok2"}`,
	} {
		if err := c.Check([]byte(bad)); err == nil {
			t.Errorf("the validator took %s", bad)
		}
	}
	if err := c.Check([]byte(`{"type":"notice.revoked","reason":"revoked_by_user"}`)); err != nil {
		t.Errorf("a right frame: %v", err)
	}
	// And the frames of a real connection do reach the check.
	before := wire.count()
	n := startNode(t, nil)
	account(t, n, "wire", "pw") // a registration: challenge and ok
	if after := wire.count(); after-before < 2 {
		t.Fatalf("%d frames checked on a registration's connection: the transport does not see them", wire.count()-before)
	}
}

// TestAsyncAPILint: docs/asyncapi.yaml passes the AsyncAPI parser's validation and rules (the
// pinned @asyncapi/parser in web/, through web/lint/asyncapi.mjs).
func TestAsyncAPILint(t *testing.T) {
	web := needNode(t)
	cmd := exec.Command("node", "lint/asyncapi.mjs", "../docs/asyncapi.yaml")
	cmd.Dir = web
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the AsyncAPI parser refuses docs/asyncapi.yaml: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

// TestAPICheckCatchesDrift: the HTTP checker refuses answers that differ from
// docs/openapi.yaml — a session answer that leaks its token, a 401 without WWW-Authenticate,
// an undocumented status, a field the schema does not have, a 405 without Allow, a body where
// none is documented, another media type, a time that is not one, a listed secret — and
// takes right ones; and a real node's answers do reach it.
func TestAPICheckCatchesDrift(t *testing.T) {
	a, err := wirecheck.LoadOpenAPI("../../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	const (
		sessionJSON = `{"id":"AAAAAAAAAAAAAAAAAAAAAA","user_id":"u1","vault_id":"v1","device":"Firefox on Linux","created_at":"2026-12-04T08:00:00.000Z","last_seen_at":"2026-12-04T08:00:00.000Z","idle_expires_at":"2026-12-04T09:00:00.000Z","expires_at":"2026-12-05T08:00:00.000Z"`
		token       = `"sdt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"`
	)
	hdr := func(kv ...string) http.Header {
		h := http.Header{"X-Request-Id": {"r1"}, "Cache-Control": {"no-store"}, "Vary": {"Origin"}}
		for i := 0; i+1 < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	type answer struct {
		name, listener, method, path string
		status                       int
		header                       http.Header
		body                         string
	}
	jsonH := func(kv ...string) http.Header {
		return hdr(append([]string{"Content-Type", "application/json"}, kv...)...)
	}
	right := []answer{
		{"session", "public", "GET", "/api/v1/session", 200, jsonH(), `{"session":` + sessionJSON + `}}`},
		{"401", "public", "GET", "/api/v1/session", 401, jsonH("WWW-Authenticate", `Bearer error="invalid_token"`), `{"code":"session_invalid","message":"no"}`},
		{"revoke", "public", "DELETE", "/api/v1/sessions/AAAAAAAAAAAAAAAAAAAAAA", 204, hdr(), ``},
		{"revoke-others beats {id}", "public", "POST", "/api/v1/sessions/revoke-others", 200, jsonH(), `{"session_ids":[]}`},
		{"405", "public", "PATCH", "/api/v1/session", 405, jsonH("Allow", "GET, HEAD, DELETE"), `{"code":"method_not_allowed","message":"no"}`},
		{"unknown API path", "public", "GET", "/api/v1/nothing", 404, jsonH(), `{"code":"not_found","message":"no"}`},
		{"a static file is not the API's", "public", "GET", "/sessiond.js", 200, http.Header{"Content-Type": {"text/javascript"}}, `x`},
		{"admin", "admin", "DELETE", "/admin/v1/sessions/x", 404, jsonH(), `{"code":"not_found","message":"no"}`},
	}
	for _, r := range right {
		if _, err := a.Check(r.listener, r.method, r.path, r.status, r.header, []byte(r.body)); err != nil {
			t.Errorf("%s: a right answer refused: %v", r.name, err)
		}
	}
	wrong := []answer{
		{"the token leaks", "public", "GET", "/api/v1/session", 200, jsonH(), `{"session":` + sessionJSON + `,"token":` + token + `}}`},
		{"an unknown field", "public", "GET", "/api/v1/session", 200, jsonH(), `{"session":` + sessionJSON + `,"colour":"red"}}`},
		{"no WWW-Authenticate", "public", "GET", "/api/v1/session", 401, jsonH(), `{"code":"session_invalid","message":"no"}`},
		{"a code the status does not take", "public", "GET", "/api/v1/session", 401, jsonH("WWW-Authenticate", "Bearer"), `{"code":"not_found","message":"no"}`},
		{"an undocumented status", "public", "GET", "/api/v1/session", 418, jsonH(), `{"code":"internal","message":"no"}`},
		{"no request id", "public", "DELETE", "/api/v1/session", 204, http.Header{"Clear-Site-Data": {`"storage"`}, "Cache-Control": {"no-store"}, "Vary": {"Origin"}}, ``},
		{"a body where none is documented", "public", "DELETE", "/api/v1/sessions/AAAAAAAAAAAAAAAAAAAAAA", 204, hdr(), `{}`},
		{"405 without Allow", "public", "PATCH", "/api/v1/session", 405, jsonH(), `{"code":"method_not_allowed","message":"no"}`},
		{"another media type", "public", "GET", "/api/v1/sessions", 200, hdr("Content-Type", "text/html"), `<p>`},
		{"an unknown API path answered 200", "public", "GET", "/api/v1/nothing", 200, jsonH(), `{}`},
		{"a refresh that is cacheable", "public", "POST", "/api/v1/session/refresh", 200, jsonH("Cache-Control", "max-age=60"), `{"token":` + token + `,"idle_expires_at":"2026-12-04T09:00:00.000Z","expires_at":"2026-12-05T08:00:00.000Z"}`},
		{"a time that is not one", "public", "POST", "/api/v1/session/refresh", 200, jsonH(), `{"token":` + token + `,"idle_expires_at":"tomorrow","expires_at":"2026-12-05T08:00:00.000Z"}`},
		{"a listed service's secret", "admin", "GET", "/admin/v1/services", 200, jsonH(), `{"services":[{"id":"s1","name":"n","created_at":"2026-12-04T08:00:00.000Z","secret":"x"}]}`},
	}
	for _, r := range wrong {
		covered, err := a.Check(r.listener, r.method, r.path, r.status, r.header, []byte(r.body))
		if err == nil {
			t.Errorf("%s: the checker took it (covered %v)", r.name, covered)
		}
	}

	// A real node's answers reach the check through the default transport.
	before := answers.count()
	n := startNode(t, nil)
	for _, p := range []string{"/healthz", "/api/v1/session", "/api/v1/nothing"} {
		resp, err := http.Get(n.Base + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if got := answers.count() - before; got < 3 {
		t.Fatalf("%d answers of a real node checked: the transport does not see them", got)
	}
}

// TestOpenAPILint: docs/openapi.yaml passes Redocly's linter with its recommended rules as
// errors (the pinned @redocly/cli in web/, configured by docs/redocly.yaml).
func TestOpenAPILint(t *testing.T) {
	web := needNode(t)
	cmd := exec.Command(filepath.Join(web, "node_modules", ".bin", "redocly"), "lint", "--config", "redocly.yaml", "openapi.yaml")
	cmd.Dir = "../../docs"
	cmd.Env = append(os.Environ(), "REDOCLY_TELEMETRY=off", "REDOCLY_SUPPRESS_UPDATE_NOTICE=true", "NO_COLOR=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("redocly lint refuses docs/openapi.yaml: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
