package main

import (
	"testing"

	"github.com/sessiond/sessiond/client"
	"github.com/sessiond/sessiond/internal/clientx"
)

// from dials a connection whose client address is ip (a loopback address).
func from(t *testing.T, n *node, ip string) *client.Conn {
	t.Helper()
	return dial(t, n, clientx.Cheap(client.Options{HTTPClient: httpFrom(ip)}))
}

// TestLoginLockoutPerAddress: guesses from one address use up that address's budget for the
// username, not the owner's: the owner still signs in from another address. Re-authentication
// spends the same budget as logins.
func TestLoginLockoutPerAddress(t *testing.T) {
	n := startNode(t, map[string]string{"SESSIOND_LOGIN_LIMIT_PER_USER": "3"})
	ctx := ctxT(t)
	victim, _ := account(t, n, "lockout", "right password")

	attacker := from(t, n, "127.0.0.1")
	for i := 0; i < 3; i++ {
		if _, err := attacker.Login(ctx, victim, "guess", ""); !client.IsCode(err, "auth_failed") {
			t.Fatalf("guess %d: %v", i+1, err)
		}
	}
	if _, err := attacker.Login(ctx, victim, "right password", ""); !client.IsCode(err, "rate_limited") {
		t.Fatalf("the attacker's 4th attempt: %v, want rate_limited", err)
	}
	owner := from(t, n, "127.0.0.2")
	if _, err := owner.Login(ctx, victim, "right password", ""); err != nil {
		t.Fatalf("the owner from another address while the attacker's is locked: %v", err)
	}

	// A token thief on 127.0.0.3 guessing through reauth.* spends the login budget of that
	// address: after three wrong re-authentications a login from there is refused too.
	s, err := owner.Sessions(ctx)
	if err != nil || len(s) == 0 {
		t.Fatal(err)
	}
	thief := from(t, n, "127.0.0.3")
	if _, err := thief.Resume(ctx, owner.Token()); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := thief.Reauth(ctx, "guess"); !client.IsCode(err, "auth_failed") {
			t.Fatalf("wrong reauth %d: %v", i+1, err)
		}
	}
	if err := thief.Reauth(ctx, "right password"); !client.IsCode(err, "rate_limited") {
		t.Fatalf("4th reauth: %v, want rate_limited", err)
	}
	if _, err := from(t, n, "127.0.0.3").Login(ctx, victim, "right password", ""); !client.IsCode(err, "rate_limited") {
		t.Fatalf("a login from the address that spent its budget on reauth: %v, want rate_limited", err)
	}
}

// TestLoginCeilingPerUser: guesses spread over many addresses meet the username's ceiling.
func TestLoginCeilingPerUser(t *testing.T) {
	n := startNode(t, map[string]string{"SESSIOND_LOGIN_LIMIT_PER_USER": "2", "SESSIOND_LOGIN_CEILING_PER_USER": "4"})
	ctx := ctxT(t)
	victim, _ := account(t, n, "ceiling", "pw")
	for _, ip := range []string{"127.0.0.1", "127.0.0.2"} {
		c := from(t, n, ip)
		for i := 0; i < 2; i++ {
			if _, err := c.Login(ctx, victim, "guess", ""); !client.IsCode(err, "auth_failed") {
				t.Fatalf("guess %d from %s: %v", i+1, ip, err)
			}
		}
	}
	if _, err := from(t, n, "127.0.0.3").Login(ctx, victim, "guess", ""); !client.IsCode(err, "rate_limited") {
		t.Fatalf("a fifth guess from a third address: %v, want rate_limited (the ceiling)", err)
	}
	// Another user is untouched.
	other, _ := account(t, n, "ceiling-other", "pw")
	if _, err := from(t, n, "127.0.0.3").Login(ctx, other, "pw", ""); err != nil {
		t.Fatalf("another user: %v", err)
	}
}
