package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sessiond/sessiond/client"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

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
