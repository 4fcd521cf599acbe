package main

import (
	"bytes"
	"encoding/base64"
	"path/filepath"
	"testing"
	"time"

	"github.com/bytemare/opaque"

	"github.com/sessiond/sessiond/client"
)

// heldProof is a KE3 computed from a challenge and kept back, as an attacker who knows the
// password would, to be sent later.
type heldProof struct {
	finish string // login.finish or reauth.finish
	ke3    string // base64url
}

// holdProof sends start (login.start or reauth.start) on c with password and returns the
// finished but unsent proof.
func holdProof(t *testing.T, c *client.Conn, start string, fields map[string]any, password string) heldProof {
	t.Helper()
	oc, err := opaque.DefaultConfiguration().Client()
	if err != nil {
		t.Fatal(err)
	}
	ke1, err := oc.GenerateKE1([]byte(password))
	if err != nil {
		t.Fatal(err)
	}
	if fields == nil {
		fields = map[string]any{}
	}
	fields["ke1"] = base64.RawURLEncoding.EncodeToString(ke1.Serialize())
	m, err := c.Call(ctxT(t), start, fields)
	if err != nil {
		t.Fatalf("%s: %v", start, err)
	}
	var ch struct {
		KE2 string `json:"ke2"`
	}
	if err := m.Decode(&ch); err != nil {
		t.Fatal(err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(ch.KE2)
	if err != nil {
		t.Fatal(err)
	}
	ke2, err := oc.Deserialize.KE2(raw)
	if err != nil {
		t.Fatal(err)
	}
	cheapKSF := &opaque.ClientOptions{KSFSalt: make([]byte, 16), KSFLength: 64, KSFParameters: []uint64{1, 64, 1}}
	ke3, _, _, err := oc.GenerateKE3(ke2, nil, nil, cheapKSF)
	if err != nil {
		t.Fatalf("the password does not open the envelope: %v", err)
	}
	finish := "login.finish"
	if start == "reauth.start" {
		finish = "reauth.finish"
	}
	return heldProof{finish: finish, ke3: base64.RawURLEncoding.EncodeToString(ke3.Serialize())}
}

// send delivers the held proof on c.
func (h heldProof) send(t *testing.T, c *client.Conn) (client.Message, error) {
	t.Helper()
	return c.Call(ctxT(t), h.finish, map[string]any{"ke3": h.ke3})
}

// TestLoginStartedBeforePasswordChange: a KE3 computed against the old registration record is
// refused once the password changed or the user was deleted, and writes no session.
func TestLoginStartedBeforePasswordChange(t *testing.T) {
	adminAddr := freeAddr(t)
	n := startNode(t, map[string]string{"SESSIOND_ADMIN_ADDR": adminAddr})
	ctx := ctxT(t)

	name, _ := account(t, n, "stale-login", "old password")
	thief := dial(t, n, cheap)
	held := holdProof(t, thief, "login.start", map[string]any{"username": name}, "old password")

	owner, own := loginOn(t, n, name, "old password", "owner")
	if _, err := owner.ChangePassword(ctx, "new password"); err != nil {
		t.Fatalf("password change: %v", err)
	}
	if m, err := held.send(t, thief); !client.IsCode(err, "auth_failed") {
		t.Fatalf("login.finish with a proof made before the password change: %v %s", err, m.Raw)
	}
	if list, err := owner.Sessions(ctx); err != nil || !exactly(own.ID)(list) {
		t.Fatalf("the owner's devices after the refused login: %+v %v", list, err)
	}
	// The thief's connection is still signed out, and the new password works.
	if _, err := thief.Sessions(ctx); !client.IsCode(err, "unauthenticated") {
		t.Fatalf("the thief's connection after the refused login: %v", err)
	}
	loginOn(t, n, name, "new password", "owner again")

	// The same for a user deleted between login.start and login.finish.
	gone, _ := account(t, n, "stale-delete", "pw")
	late := dial(t, n, cheap)
	held = holdProof(t, late, "login.start", map[string]any{"username": gone}, "pw")
	var out bytes.Buffer
	args := []string{"admin", "-url", "http://" + adminAddr, "-key-file", filepath.Join(n.DataDir, "keys.json"), "delete-user", gone}
	if err := run(ctx, args, func(string) string { return "" }, &out, &out, nil); err != nil {
		t.Fatalf("delete-user: %v %s", err, out.String())
	}
	if m, err := held.send(t, late); !client.IsCode(err, "auth_failed") {
		t.Fatalf("login.finish for a user deleted after login.start: %v %s", err, m.Raw)
	}
}

// TestReauthStartedBeforePasswordChange: a thief holding a stolen token and the old password
// cannot turn a re-authentication started before the owner's password change into a fresh
// proof, nor change the password on a proof made before it.
func TestReauthStartedBeforePasswordChange(t *testing.T) {
	n := startNode(t, nil)
	ctx := ctxT(t)
	name, _ := account(t, n, "stale-reauth", "old password")
	owner, own := loginOn(t, n, name, "old password", "owner")

	// The thief's connections run on the owner's own session (a stolen token), so the
	// password change, which keeps the changing session, leaves them signed in.
	pending := resumeOn(t, n, own.Token)
	held := holdProof(t, pending, "reauth.start", nil, "old password")
	proved := resumeOn(t, n, own.Token)
	if err := proved.Reauth(ctx, "old password"); err != nil {
		t.Fatalf("reauth before the change: %v", err)
	}

	if _, err := owner.ChangePassword(ctx, "new password"); err != nil {
		t.Fatalf("password change: %v", err)
	}
	if _, err := held.send(t, pending); !client.IsCode(err, "auth_failed") {
		t.Fatalf("reauth.finish with a proof made before the password change: %v", err)
	}
	if _, err := pending.ChangePassword(ctx, "thief's password"); !client.IsCode(err, "reauth_required") {
		t.Fatalf("password change after the refused reauth: %v", err)
	}
	if _, err := proved.ChangePassword(ctx, "thief's password"); !client.IsCode(err, "auth_failed") {
		t.Fatalf("password change on a proof made before the owner's change: %v", err)
	}
	// The owner's password stands.
	loginOn(t, n, name, "new password", "owner again")
	// And the owner, whose proof is the change itself, can change it again.
	if _, err := owner.ChangePassword(ctx, "newer password"); err != nil {
		t.Fatalf("a second change on the owner's connection: %v", err)
	}
}

// TestPendingLoginExpires: login.start and reauth.start can be finished only within the pending
// timeout, for real and unknown users alike; a new start works at once.
func TestPendingLoginExpires(t *testing.T) {
	n := startNode(t, map[string]string{"SESSIOND_LOGIN_PENDING_TIMEOUT": "1s"})
	name, _ := account(t, n, "pending", "pw")

	c := dial(t, n, cheap)
	held := holdProof(t, c, "login.start", map[string]any{"username": name}, "pw")
	u := dial(t, n, cheap)
	if _, err := u.Call(ctxT(t), "login.start", map[string]any{"username": uniqueName("nobody"), "ke1": secKE1(t, "pw")}); err != nil {
		t.Fatal(err)
	}
	o, own := loginOn(t, n, name, "pw", "owner")
	r := resumeOn(t, n, own.Token)
	heldReauth := holdProof(t, r, "reauth.start", nil, "pw")
	time.Sleep(1500 * time.Millisecond)

	if _, err := held.send(t, c); !client.IsCode(err, "out_of_order") {
		t.Fatalf("login.finish after the pending timeout: %v", err)
	}
	if _, err := u.Call(ctxT(t), "login.finish", map[string]any{"ke3": base64.RawURLEncoding.EncodeToString(make([]byte, 64))}); !client.IsCode(err, "out_of_order") {
		t.Fatalf("login.finish of an unknown user after the pending timeout: %v", err)
	}
	if _, err := heldReauth.send(t, r); !client.IsCode(err, "out_of_order") {
		t.Fatalf("reauth.finish after the pending timeout: %v", err)
	}
	if _, err := c.Login(ctxT(t), name, "pw", ""); err != nil {
		t.Fatalf("a new login after an expired one: %v", err)
	}
	if err := r.Reauth(ctxT(t), "pw"); err != nil {
		t.Fatalf("a new reauth after an expired one: %v", err)
	}
	o.Close()
}
