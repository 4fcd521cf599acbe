package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/sessiond/sessiond/client"
)

// interopResult is the JSON line web/interop/interop.mjs prints.
type interopResult struct {
	OK        bool   `json:"ok"`
	Code      string `json:"code"`
	UserID    string `json:"user_id"`
	SessionID string `json:"session_id"`
	APIStatus int    `json:"api_status"`
}

// runInterop runs the @serenity-kit/opaque client. Without node or the npm packages the test
// is skipped locally; CI installs both, so there it must run.
func runInterop(t *testing.T, args ...string) interopResult {
	t.Helper()
	script, _ := filepath.Abs("../../web/interop/interop.mjs")
	mods, _ := filepath.Abs("../../web/node_modules/@serenity-kit/opaque")
	_, nodeErr := exec.LookPath("node")
	if _, err := os.Stat(mods); err != nil || nodeErr != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("node and web/node_modules are required in CI (npm ci in web/)")
		}
		t.Skip("node or web/node_modules missing; run `npm ci` in web/")
	}
	out, err := exec.Command("node", append([]string{script}, args...)...).Output()
	var r interopResult
	if jerr := json.Unmarshal(out, &r); jerr != nil {
		t.Fatalf("interop %s: %v (output %q)", args[0], err, out)
	}
	return r
}

// TestInteropSerenity proves that accounts registered by the Go client log in with
// @serenity-kit/opaque 1.1.0 and the other way round, on the real server.
func TestInteropSerenity(t *testing.T) {
	n := startNode(t, nil)
	// Real Argon2id (64 MiB, t=3, p=4) runs in the Go client here, which the race detector
	// slows down a lot on a busy 2-core machine: allow minutes, not seconds.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	interopOpts := client.Options{}

	// Go registers, serenity logs in (and calls GET /api/v1/session with its token).
	goUser := uniqueName("go-made")
	c := dial(t, n, interopOpts)
	uid, goExport, err := c.Register(ctx, goUser, "pässword one")
	if err != nil {
		t.Fatal(err)
	}
	r := runInterop(t, "login", n.Base, goUser, "pässword one")
	if !r.OK || r.UserID != uid || r.APIStatus != 200 {
		t.Fatalf("serenity login of a Go-registered account: %+v", r)
	}
	if r := runInterop(t, "login", n.Base, goUser, "wrong"); r.OK || r.Code != "auth_failed" {
		t.Fatalf("serenity login with a wrong password: %+v", r)
	}

	// serenity registers, Go logs in.
	jsUser := uniqueName("js-made")
	r = runInterop(t, "register", n.Base, jsUser, "password two")
	if !r.OK || r.UserID == "" {
		t.Fatalf("serenity registration: %+v", r)
	}
	c2 := dial(t, n, interopOpts)
	res, err := c2.Login(ctx, jsUser, "password two", "go")
	if err != nil {
		t.Fatalf("Go login of a serenity-registered account: %v", err)
	}
	if res.Session.UserID != r.UserID {
		t.Fatalf("user ids differ: %s vs %s", res.Session.UserID, r.UserID)
	}
	if _, err := client.NewAPI(n.Base, res.Session.Token).Session(ctx); err != nil {
		t.Fatal(err)
	}
	// The Go client logs in to its own account too, with the same export key as at registration.
	c3 := dial(t, n, interopOpts)
	res3, err := c3.Login(ctx, goUser, "pässword one", "")
	if err != nil || string(res3.ExportKey) != string(goExport) {
		t.Fatalf("Go re-login: %v (export key equal: %v)", err, string(res3.ExportKey) == string(goExport))
	}
}
