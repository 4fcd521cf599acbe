package main

import (
	"context"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/sessiond/sessiond/client"
	"github.com/sessiond/sessiond/internal/clientx"
	"github.com/sessiond/sessiond/protocol"
)

const (
	chromeUA  = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.85 Safari/537.36"
	firefoxUA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
)

// httpFrom returns an HTTP client whose connections come from a given loopback address.
func httpFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
}

func withUA(ua string) http.Header { return http.Header{"User-Agent": {ua}} }

// TestFingerprint: a token presented by another browser family ends the session (default
// policy revoke); another network prefix is only logged (default), or refused when configured.
func TestFingerprint(t *testing.T) {
	n := startNode(t, nil)
	ctx := ctxT(t)
	name := uniqueName("fp")
	phone := dial(t, n, clientx.Cheap(client.Options{Header: withUA(chromeUA)}))
	if _, _, err := phone.Register(ctx, name, "pw"); err != nil {
		t.Fatal(err)
	}
	ph, err := phone.Login(ctx, name, "pw", "phone")
	if err != nil {
		t.Fatal(err)
	}
	laptop := dial(t, n, clientx.Cheap(client.Options{Header: withUA(chromeUA)}))
	res, err := laptop.Login(ctx, name, "pw", "laptop")
	if err != nil {
		t.Fatal(err)
	}
	// Drain the phone's notices up to the list with the laptop: its own login's list (the
	// phone alone) must not pass for the one after the laptop's revocation.
	waitChanged(t, phone, "phone after the laptop's login", ph.Session.ID, exactly(ph.Session.ID, res.Session.ID))
	api := client.NewAPI(n.Base, res.Session.Token)
	if r, _ := api.Do(ctx, "GET", "/api/v1/session", nil, withUA(chromeUA)); r.Status != 200 {
		t.Fatalf("same browser: %d %s", r.Status, r.Body)
	}
	// Another network prefix (127.0.1.x is not 127.0.0.0/24): logged, allowed.
	api.HTTP = httpFrom("127.0.1.1")
	if r, _ := api.Do(ctx, "GET", "/api/v1/session", nil, withUA(chromeUA)); r.Status != 200 {
		t.Fatalf("other network under the log policy: %d %s", r.Status, r.Body)
	}
	api.HTTP = nil
	// The same token from Firefox: revoked, and every device is told.
	r, _ := api.Do(ctx, "GET", "/api/v1/session", nil, withUA(firefoxUA))
	if r.Status != 401 || !client.IsCode(r.Err(), "session_invalid") {
		t.Fatalf("other browser: %d %s", r.Status, r.Body)
	}
	m, err := laptop.WaitNotice(ctx, "notice.revoked")
	if err != nil || reasonOf(t, m) != "fingerprint_mismatch" {
		t.Fatalf("laptop: %v", err)
	}
	waitClosed(t, laptop, 4403)
	// The phone is told by a device list without the laptop.
	waitChanged(t, phone, "phone after the laptop's revocation", ph.Session.ID, exactly(ph.Session.ID))
	// Each mismatch is its own event of the laptop's session: the network one logged only,
	// the browser one with the revocation.
	acts, err := phone.Call(ctx, "activity.list", nil)
	if err != nil {
		t.Fatal(err)
	}
	var al struct {
		Events []struct {
			Kind      string `json:"kind"`
			Reason    string `json:"reason"`
			SessionID string `json:"session_id"`
		} `json:"events"`
	}
	if err := acts.Decode(&al); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range al.Events {
		if e.Kind == "fingerprint_mismatch" && e.SessionID == res.Session.ID {
			got = append(got, e.Reason)
		}
	}
	if !slices.Contains(got, "network") || !slices.Contains(got, "user_agent (revoked)") || len(got) != 2 {
		t.Fatalf("the laptop's fingerprint_mismatch events have reasons %q, want network and user_agent (revoked): %s", got, acts.Raw)
	}

	// With the network policy at revoke, another prefix ends the session.
	n2 := startNode(t, map[string]string{"SESSIOND_FINGERPRINT_NETWORK": "revoke", "SESSIOND_FINGERPRINT_USER_AGENT": "off"})
	c := dial(t, n2, cheap)
	if _, _, err := c.Register(ctx, name, "pw"); err != nil {
		t.Fatal(err)
	}
	res2, err := c.Login(ctx, name, "pw", "")
	if err != nil {
		t.Fatal(err)
	}
	api2 := client.NewAPI(n2.Base, res2.Session.Token)
	if r, _ := api2.Do(ctx, "GET", "/api/v1/session", nil, withUA(firefoxUA)); r.Status != 200 {
		t.Fatalf("user agent policy off: %d", r.Status)
	}
	api2.HTTP = httpFrom("127.0.1.1")
	if _, err := api2.Session(ctx); !client.IsCode(err, "session_invalid") {
		t.Fatalf("other network under revoke: %v", err)
	}
	// The session ended: the token is refused from its original address too.
	api2.HTTP = nil
	if _, err := api2.Session(ctx); !client.IsCode(err, "session_invalid") {
		t.Fatalf("the original address after the network revocation: %v", err)
	}
}

// TestProofOfPossession: with the mode on, a stolen token alone is useless; a replayed,
// tampered or stale proof is refused; the rightful client works over HTTP and on resume.
func TestProofOfPossession(t *testing.T) {
	n := startNode(t, map[string]string{"SESSIOND_PROOF_OF_POSSESSION": "true"})
	ctx := ctxT(t)
	name := uniqueName("pop")
	c := dial(t, n, cheap)
	if _, _, err := c.Register(ctx, name, "pw"); err != nil {
		t.Fatal(err)
	}
	res, err := c.Login(ctx, name, "pw", "")
	if err != nil {
		t.Fatal(err)
	}
	if !res.Session.PoP || len(res.PoPKey) != 32 {
		t.Fatalf("session does not require proofs: %+v", res.Session)
	}
	good := client.NewAPI(n.Base, res.Session.Token).WithProof(res.PoPKey)
	if _, err := good.Session(ctx); err != nil {
		t.Fatalf("signed request: %v", err)
	}
	r, err := good.Do(ctx, "PUT", "/api/v1/vault", []byte("ciphertext"), http.Header{"If-None-Match": {"*"}})
	if err != nil || r.Status != 204 {
		t.Fatalf("signed vault write: %v %d %s", err, r.Status, r.Body)
	}
	// The body the proof was checked over reached the handler whole.
	if r, err := good.Do(ctx, "GET", "/api/v1/vault", nil, nil); err != nil || r.Status != 200 || string(r.Body) != "ciphertext" {
		t.Fatalf("signed vault read back: %v %d %q", err, r.Status, r.Body)
	}
	// Token alone.
	thief := client.NewAPI(n.Base, res.Session.Token)
	if _, err := thief.Session(ctx); !client.IsCode(err, "proof_invalid") {
		t.Fatalf("token-only request: %v", err)
	}
	// Replay of a captured signed request, a proof for another path or body, a stale proof,
	// and a proof under another key.
	now := time.Now().UnixMilli()
	captured := protocol.SignProof(res.PoPKey, "GET", "/api/v1/session", now-3000, nil) // unlike any the client signs later
	send := func(method, path string, body []byte, proof string) client.Response {
		t.Helper()
		r, err := thief.Do(ctx, method, path, body, http.Header{"Sessiond-PoP": {proof}})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := send("GET", "/api/v1/session", nil, captured); r.Status != 200 {
		t.Fatalf("first use of a proof: %d %s", r.Status, r.Body)
	}
	refused := func(what string, r client.Response) {
		t.Helper()
		if r.Status != 401 || !client.IsCode(r.Err(), "proof_invalid") {
			t.Fatalf("%s: %d %s, want 401 proof_invalid", what, r.Status, r.Body)
		}
	}
	refused("replayed proof", send("GET", "/api/v1/session", nil, captured))
	refused("proof for another path", send("GET", "/api/v1/sessions", nil, protocol.SignProof(res.PoPKey, "GET", "/api/v1/session", now+1, nil)))
	refused("proof for another body", send("PUT", "/api/v1/vault", []byte("evil"), protocol.SignProof(res.PoPKey, "PUT", "/api/v1/vault", now+2, []byte("good"))))
	refused("stale proof", send("GET", "/api/v1/session", nil, protocol.SignProof(res.PoPKey, "GET", "/api/v1/session", now-int64(time.Minute/time.Millisecond), nil)))
	refused("proof under another key", send("GET", "/api/v1/session", nil, protocol.SignProof(make([]byte, 32), "GET", "/api/v1/session", now+3, nil)))
	// The proof-less request, the replay and the bad proofs ended nothing: the session works.
	if _, err := good.Session(ctx); err != nil {
		t.Fatalf("the session after refused proofs: %v", err)
	}
	// A captured resume proof works once.
	resume := protocol.SignProof(res.PoPKey, "RESUME", "/ws", now-5000, []byte(res.Session.Token)) // unlike any a client signs now
	first := dial(t, n, cheap)
	if _, err := first.Call(ctx, "session.resume", map[string]any{"token": res.Session.Token, "proof": resume}); err != nil {
		t.Fatalf("first use of a resume proof: %v", err)
	}
	replay := dial(t, n, cheap)
	if _, err := replay.Call(ctx, "session.resume", map[string]any{"token": res.Session.Token, "proof": resume}); !client.IsCode(err, "proof_invalid") {
		t.Fatalf("replayed resume proof: %v", err)
	}
	// Resume: token only is refused and the connection stays usable; with the proof it works.
	c2 := dial(t, n, cheap)
	if _, err := c2.Resume(ctx, res.Session.Token); !client.IsCode(err, "proof_invalid") {
		t.Fatalf("resume without proof: %v", err)
	}
	if _, err := c2.ResumeWithProof(ctx, res.Session.Token, res.PoPKey); err != nil {
		t.Fatalf("resume with proof: %v", err)
	}
	// A rotation keeps the key: the new token needs the same proofs.
	ref, err := good.Refresh(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.NewAPI(n.Base, ref.Token).Session(ctx); !client.IsCode(err, "proof_invalid") {
		t.Fatalf("rotated token alone: %v", err)
	}
	if _, err := good.Session(ctx); err != nil {
		t.Fatalf("rotated token with proof: %v", err)
	}
	_ = context.Background
}

// TestProofReplayAcrossNodes: a proof used on one node is a replay on the other (the seen-proof
// record is shared through Redis), over HTTP and on session.resume.
func TestProofReplayAcrossNodes(t *testing.T) {
	c := startCluster(t, map[string]string{"SESSIOND_PROOF_OF_POSSESSION": "true"})
	ctx := ctxT(t)
	name := uniqueName("pop-nodes")
	a := dialBase(t, c.n1.Base)
	if _, _, err := a.Register(ctx, name, "pw"); err != nil {
		t.Fatal(err)
	}
	res, err := a.Login(ctx, name, "pw", "")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	proof := protocol.SignProof(res.PoPKey, "GET", "/api/v1/session", now, nil)
	h := http.Header{"Sessiond-PoP": {proof}}
	r1, err := client.NewAPI(c.n1.Base, res.Session.Token).Do(ctx, "GET", "/api/v1/session", nil, h)
	if err != nil || r1.Status != 200 {
		t.Fatalf("first use on node 1: %v %d %s", err, r1.Status, r1.Body)
	}
	r2, err := client.NewAPI(c.n2.Base, res.Session.Token).Do(ctx, "GET", "/api/v1/session", nil, h)
	if err != nil || r2.Status != 401 || !client.IsCode(r2.Err(), "proof_invalid") {
		t.Fatalf("replay on node 2: %v %d %s, want 401 proof_invalid", err, r2.Status, r2.Body)
	}

	resume := protocol.SignProof(res.PoPKey, "RESUME", "/ws", now+1, []byte(res.Session.Token))
	on1 := dialBase(t, c.n1.Base)
	if _, err := on1.Call(ctx, "session.resume", map[string]any{"token": res.Session.Token, "proof": resume}); err != nil {
		t.Fatalf("resume on node 1: %v", err)
	}
	on2 := dialBase(t, c.n2.Base)
	if _, err := on2.Call(ctx, "session.resume", map[string]any{"token": res.Session.Token, "proof": resume}); !client.IsCode(err, "proof_invalid") {
		t.Fatalf("replayed resume proof on node 2: %v", err)
	}
}

// TestPasswordChangeNeedsFreshAuth: a stolen token (a resumed connection) cannot change the
// password; proving the password again on the connection allows it.
func TestPasswordChangeNeedsFreshAuth(t *testing.T) {
	n := startNode(t, nil)
	ctx := ctxT(t)
	name := uniqueName("reauth")
	c := dial(t, n, cheap)
	if _, _, err := c.Register(ctx, name, "pw"); err != nil {
		t.Fatal(err)
	}
	res, err := c.Login(ctx, name, "pw", "")
	if err != nil {
		t.Fatal(err)
	}
	thief := dial(t, n, cheap)
	if _, err := thief.Resume(ctx, res.Session.Token); err != nil {
		t.Fatal(err)
	}
	if _, err := thief.ChangePassword(ctx, "mine now"); !client.IsCode(err, "reauth_required") {
		t.Fatalf("password change on a resumed connection: %v", err)
	}
	if err := thief.Reauth(ctx, "guess"); !client.IsCode(err, "auth_failed") {
		t.Fatalf("reauth with a wrong password: %v", err)
	}
	if _, err := thief.Call(ctx, "reauth.finish", map[string]any{"ke3": "AAAA"}); !client.IsCode(err, "out_of_order") {
		t.Fatalf("reauth.finish without start: %v", err)
	}
	// The owner, who knows the password, re-authenticates on a resumed connection and changes it.
	owner := dial(t, n, cheap)
	if _, err := owner.Resume(ctx, res.Session.Token); err != nil {
		t.Fatal(err)
	}
	if err := owner.Reauth(ctx, "pw"); err != nil {
		t.Fatalf("reauth: %v", err)
	}
	if _, err := owner.ChangePassword(ctx, "new pw"); err != nil {
		t.Fatalf("password change after reauth: %v", err)
	}
	// Right after a login no extra step is needed.
	c2 := dial(t, n, cheap)
	if _, err := c2.Login(ctx, name, "new pw", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.ChangePassword(ctx, "newer pw"); err != nil {
		t.Fatalf("password change right after login: %v", err)
	}
}
