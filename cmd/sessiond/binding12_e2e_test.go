package main

import (
	"database/sql"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	_ "modernc.org/sqlite"

	"github.com/sessiond/sessiond/client"
	"github.com/sessiond/sessiond/internal/clientx"
)

const chromeNextUA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/132.0.6834.83 Safari/537.36"

// signUpWithUA registers a fresh user and signs in on a connection sending User-Agent ua.
func signUpWithUA(t *testing.T, n *node, ua string) (*client.Conn, client.LoginResult) {
	t.Helper()
	c := dial(t, n, clientx.Cheap(client.Options{Header: withUA(ua)}))
	name := uniqueName("bind")
	if _, _, err := c.Register(ctxT(t), name, "pw"); err != nil {
		t.Fatal(err)
	}
	res, err := c.Login(ctxT(t), name, "pw", "")
	if err != nil {
		t.Fatal(err)
	}
	return c, res
}

// popLogin signs a fresh user in from Chrome (with proof of possession when the node has it on).
func popLogin(t *testing.T, n *node) client.LoginResult {
	t.Helper()
	_, res := signUpWithUA(t, n, chromeUA)
	return res
}

// TestProofBeforeFingerprint: with proof of possession on, a thief holding only the token cannot
// get the owner's session revoked by presenting it from another browser: the missing proof is
// refused first, and the session lives on.
func TestProofBeforeFingerprint(t *testing.T) {
	n := startNode(t, map[string]string{"SESSIOND_PROOF_OF_POSSESSION": "true"})
	ctx := ctxT(t)
	res := popLogin(t, n)
	thief := client.NewAPI(n.Base, res.Session.Token)
	r, _ := thief.Do(ctx, http.MethodGet, "/api/v1/session", nil, withUA(firefoxUA))
	wantStatus(t, "token alone from another browser", r, http.StatusUnauthorized, "proof_invalid")
	c := dial(t, n, clientx.Cheap(client.Options{Header: withUA(firefoxUA)}))
	if _, err := c.Resume(ctx, res.Session.Token); !client.IsCode(err, "proof_invalid") {
		t.Fatalf("resume with the token alone from another browser: %v", err)
	}
	owner := client.NewAPI(n.Base, res.Session.Token).WithProof(res.PoPKey)
	owner.Header = withUA(chromeUA)
	if _, err := owner.Session(ctx); err != nil {
		t.Fatalf("the owner after the thief's attempts: %v", err)
	}
}

// TestMissingUserAgentIsMismatch: dropping the User-Agent header does not skip the check; nor
// does an agent the server does not recognise.
func TestMissingUserAgentIsMismatch(t *testing.T) {
	n := startNode(t, nil)
	ctx := ctxT(t)
	for _, ua := range []string{"", "Totally/1.0 (unknown agent)"} {
		res := popLogin(t, n)
		r, _ := client.NewAPI(n.Base, res.Session.Token).Do(ctx, http.MethodGet, "/api/v1/session", nil, http.Header{"User-Agent": {ua}})
		wantStatus(t, fmt.Sprintf("the token with User-Agent %q", ua), r, http.StatusUnauthorized, "session_invalid")
		tokenRefused(t, n, "after the mismatch", res.Session.Token)
	}
}

// TestUserAgentVersionChangeOnlyLogged: a browser update under a running session (same family,
// new major version) is logged, not revoked; another family still is.
func TestUserAgentVersionChangeOnlyLogged(t *testing.T) {
	n := startNode(t, nil)
	ctx := ctxT(t)
	c, res := signUpWithUA(t, n, chromeUA)
	api := client.NewAPI(n.Base, res.Session.Token)
	r, _ := api.Do(ctx, http.MethodGet, "/api/v1/session", nil, withUA(chromeNextUA))
	wantStatus(t, "the same browser one version on", r, http.StatusOK, "")
	acts, err := c.Call(ctx, "activity.list", nil)
	if err != nil || !strings.Contains(string(acts.Raw), `"reason":"user_agent_version"`) {
		t.Fatalf("the version change is not in the activity: %v %s", err, acts.Raw)
	}
	r, _ = api.Do(ctx, http.MethodGet, "/api/v1/session", nil, withUA(firefoxUA))
	wantStatus(t, "another browser", r, http.StatusUnauthorized, "session_invalid")
}

// TestProofReplayCheckFailsClosed: while the shared record of used proofs (Redis) is down, a
// proof cannot be checked for replays on other nodes, so it is refused (503 unavailable), not
// accepted on this node's word alone.
func TestProofReplayCheckFailsClosed(t *testing.T) {
	redis := startPrivateRedis(t)
	keyFile := filepath.Join(t.TempDir(), "keys.json")
	if _, err := cli(t, "keygen", "-o", keyFile); err != nil {
		t.Fatal(err)
	}
	n := startNode(t, map[string]string{"SESSIOND_PROOF_OF_POSSESSION": "true", "SESSIOND_REDIS_URL": redis.url(),
		"SESSIOND_KEY_FILE": keyFile})
	ctx := ctxT(t)
	res := popLogin(t, n)
	owner := client.NewAPI(n.Base, res.Session.Token).WithProof(res.PoPKey)
	owner.Header = withUA(chromeUA)
	if _, err := owner.Session(ctx); err != nil {
		t.Fatalf("with Redis up: %v", err)
	}
	redis.stop()
	r, err := owner.Do(ctx, http.MethodGet, "/api/v1/session", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "a fresh proof with Redis down", r, http.StatusServiceUnavailable, "unavailable")
}

// TestEmptyDeviceRecordRefused: a session whose sealed device record is empty (tampered with or
// lost) is refused, not waved through without its fingerprint and proof checks.
func TestEmptyDeviceRecordRefused(t *testing.T) {
	n := startNode(t, nil)
	ctx := ctxT(t)
	name, _ := account(t, n, "emptydev", "pw")
	_, s := loginOn(t, n, name, "pw", "")
	n.stop()

	matches, _ := filepath.Glob(filepath.Join(n.DataDir, "*.db"))
	if len(matches) != 1 {
		t.Fatalf("store files %v", matches)
	}
	db, err := sql.Open("sqlite", matches[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `UPDATE sessions SET device = X'' WHERE id = ?`, s.ID); err != nil {
		t.Fatal(err)
	}
	db.Close()

	n2 := startNode(t, map[string]string{"SESSIOND_DATA_DIR": n.DataDir})
	r := apiDo(t, n2, s.Token, http.MethodGet, "/api/v1/session", nil, nil)
	wantStatus(t, "a session with an empty device record", r, http.StatusServiceUnavailable, "unavailable")
}
