package main

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"testing"

	"github.com/sessiond/sessiond/internal/wirecheck"
)

// wire validates every frame the server sends to a WebSocket these tests open through the
// default HTTP transport (the Go client's, unless a test gives it another) against
// docs/asyncapi.yaml; TestMain fails the run when one does not match, so that the document
// cannot drift from the server.
var wire struct {
	mu         sync.Mutex
	checked    int
	violations []string
}

func TestMain(m *testing.M) {
	checker, err := wirecheck.Load("../../docs/asyncapi.yaml")
	if err != nil {
		fmt.Fprintln(os.Stderr, "docs/asyncapi.yaml:", err)
		os.Exit(1)
	}
	http.DefaultTransport = checker.Transport(http.DefaultTransport, func(frame []byte, err error) {
		wire.mu.Lock()
		defer wire.mu.Unlock()
		wire.checked++
		if err != nil && len(wire.violations) < 20 {
			f := string(frame)
			if len(f) > 300 {
				f = f[:300] + "…"
			}
			wire.violations = append(wire.violations, fmt.Sprintf("%v\n    frame: %s", err, f))
		}
	})
	code := m.Run()
	wire.mu.Lock()
	defer wire.mu.Unlock()
	if len(wire.violations) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: %d of %d frames received did not match docs/asyncapi.yaml:\n", len(wire.violations), wire.checked)
		for _, v := range wire.violations {
			fmt.Fprintln(os.Stderr, "  "+v)
		}
		code = 1
	}
	os.Exit(code)
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
	wire.mu.Lock()
	before := wire.checked
	wire.mu.Unlock()
	n := startNode(t, nil)
	account(t, n, "wire", "pw") // a registration: challenge and ok
	wire.mu.Lock()
	after := wire.checked
	wire.mu.Unlock()
	if after-before < 2 {
		t.Fatalf("%d frames checked on a registration's connection: the transport does not see them", after-before)
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
