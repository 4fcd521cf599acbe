package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sessiond/sessiond/client"
)

// freeAddr returns a loopback address free at the moment, for a listener another process (or
// a node started later) binds. The port is taken below Linux's ephemeral range (32768–60999):
// a port the kernel handed out for ":0" can be handed out again, between our close and the
// real bind, as the local port of any outgoing connection (to PostgreSQL, Redis, a test
// server), which made "address already in use" failures. Ports are not handed out twice in
// one test process.
func freeAddr(t *testing.T) string {
	t.Helper()
	freePorts.Lock()
	defer freePorts.Unlock()
	for range 1000 {
		port := 10000 + rand.IntN(22000)
		if freePorts.used[port] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		ln.Close()
		freePorts.used[port] = true
		return ln.Addr().String()
	}
	t.Fatal("no free loopback port below the ephemeral range")
	return ""
}

var freePorts = struct {
	sync.Mutex
	used map[int]bool
}{used: map[int]bool{}}

// TestAdmin drives the admin CLI against a running node: the devices are told at once.
func TestAdmin(t *testing.T) {
	adminAddr := freeAddr(t)
	n := startNode(t, map[string]string{"SESSIOND_ADMIN_ADDR": adminAddr})
	ctx := ctxT(t)
	name := uniqueName("admin-target")
	c := dial(t, n, cheap)
	if _, _, err := c.Register(ctx, name, "pw"); err != nil {
		t.Fatal(err)
	}
	res, err := c.Login(ctx, name, "pw", "laptop")
	if err != nil {
		t.Fatal(err)
	}
	c2 := dial(t, n, cheap)
	res2, err := c2.Login(ctx, name, "pw", "phone")
	if err != nil {
		t.Fatal(err)
	}
	adminCmd := func(args ...string) (string, error) {
		var out bytes.Buffer
		full := append([]string{"-url", "http://" + adminAddr, "-key-file", filepath.Join(n.DataDir, "keys.json")}, args...)
		err := run(ctx, append([]string{"admin"}, full...), func(string) string { return "" }, &out, &out, nil)
		return out.String(), err
	}
	out, err := adminCmd("sessions", strings.ToUpper(name))
	if err != nil || !strings.Contains(out, res.Session.ID) || !strings.Contains(out, "laptop") {
		t.Fatalf("admin sessions: %v %s", err, out)
	}
	if _, err := adminCmd("revoke", res.Session.ID); err != nil {
		t.Fatal(err)
	}
	m, err := c.WaitNotice(ctx, "notice.revoked")
	var reason struct{ Reason string }
	_ = m.Decode(&reason)
	if err != nil || reason.Reason != "admin" {
		t.Fatalf("revoked notice: %v %+v", err, reason)
	}
	waitClosed(t, c, 4403)
	if _, err := adminCmd("revoke", res.Session.ID); err == nil {
		t.Fatal("revoking an ended session twice succeeded")
	}
	if _, err := adminCmd("delete-user", name); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, c2, 4403)
	if _, err := client.NewAPI(n.Base, res2.Session.Token).Session(ctx); !client.IsCode(err, "session_invalid") {
		t.Fatalf("token of a deleted user: %v", err)
	}
	c3 := dial(t, n, cheap)
	if _, err := c3.Login(ctx, name, "pw", ""); !client.IsCode(err, "auth_failed") {
		t.Fatalf("login of a deleted user: %v", err)
	}
	// Without the token the admin API refuses.
	req, _ := http.NewRequestWithContext(context.Background(), "GET", "http://"+adminAddr+"/admin/v1/users/x/sessions", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 401 {
		t.Fatalf("admin API without token: %v %v", err, resp)
	}
	resp.Body.Close()
}
