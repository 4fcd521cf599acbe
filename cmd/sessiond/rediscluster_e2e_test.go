package main

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sessiond/sessiond/client"
	"github.com/sessiond/sessiond/internal/rediscluster"
)

// TestRedisClusterSharded: two nodes on a real three-master Redis Cluster
// (SESSIOND_REDIS_CLUSTER, sharded pub/sub). A revocation on node 1 reaches the device on node
// 2 through the cluster; logins count their limits in the cluster. Then a master is killed:
// the nodes' hubs go degraded, a revocation made meanwhile is refused at once on the other node
// (from the store), and once the master is back the revoked device is told (reconcile), while
// the others stay signed in.
func TestRedisClusterSharded(t *testing.T) {
	rc := rediscluster.Start(t)
	keyFile := filepath.Join(t.TempDir(), "keys.json")
	if _, err := cli(t, "keygen", "-o", keyFile); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"SESSIOND_DATABASE_URL": postgresURL(t), "SESSIOND_KEY_FILE": keyFile,
		"SESSIOND_REDIS_URL": rc.URL(), "SESSIOND_REDIS_CLUSTER": "true", "SESSIOND_REDIS_PREFIX": "e2e-" + randomHex(4) + ":"}
	n1, n2 := startProcess(t, env), startProcess(t, env)
	ctx := ctxT(t)
	hub := func(n *proc) string {
		r, err := client.NewAPI(n.Base, "").Do(ctx, http.MethodGet, "/readyz", nil, nil)
		if err != nil {
			return err.Error()
		}
		return string(r.Body)
	}
	if h := hub(n1); !containsAll(h, `"hub":"ok"`) {
		t.Fatalf("node 1 on the cluster: %s", h)
	}

	// Three users, so that their topics land on different shards.
	type user struct {
		a, b, c *client.Conn
		rb, rc  client.LoginResult
	}
	users := make([]user, 3)
	for i := range users {
		name := uniqueName("cluster")
		u := &users[i]
		u.a = dialBase(t, n1.Base)
		if _, _, err := u.a.Register(ctx, name, "pw"); err != nil {
			t.Fatal(err)
		}
		if _, err := u.a.Login(ctx, name, "pw", "a"); err != nil {
			t.Fatal(err)
		}
		var err error
		u.b = dialBase(t, n2.Base)
		if u.rb, err = u.b.Login(ctx, name, "pw", "b"); err != nil {
			t.Fatal(err)
		}
		u.c = dialBase(t, n2.Base)
		if u.rc, err = u.c.Login(ctx, name, "pw", "c"); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range users {
		if _, err := u.a.Revoke(ctx, u.rb.Session.ID); err != nil {
			t.Fatal(err)
		}
		expectEnd(t, u.b, "a device on node 2, revoked on node 1", "notice.revoked", "revoked_by_user", 4403)
	}

	// The logins counted their limits in the cluster (a failing shared counter falls back to
	// counting per node and says so in the log).
	for _, n := range []*proc{n1, n2} {
		if strings.Contains(n.logs.String(), "rate limits are counted per node") {
			t.Fatalf("the shared limit counters did not work on the cluster:\n%s", n.logs.String())
		}
	}

	rc.Stop(0)
	for _, n := range []*proc{n1, n2} {
		if !waitFor(ctx, func() bool { return containsAll(hub(n), `"hub":"degraded"`) }) {
			t.Fatal("a node never reported its hub degraded with a master down")
		}
	}
	victim := users[1]
	if _, err := victim.a.Revoke(ctx, victim.rc.Session.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := client.NewAPI(n2.Base, victim.rc.Session.Token).Session(ctx); !client.IsCode(err, "session_invalid") {
		t.Fatalf("the token revoked while a master was down, on node 2: %v", err)
	}
	rc.Restart(0)
	for _, n := range []*proc{n1, n2} {
		if !waitFor(ctx, func() bool { return containsAll(hub(n), `"hub":"ok"`) }) {
			t.Fatal("a node's hub never came back after the master returned")
		}
	}
	expectEnd(t, victim.c, "a device revoked while a master was down", "notice.revoked", "revoked_by_user", 4403)
	for i, u := range users {
		if i == 1 {
			continue
		}
		if _, err := u.c.Sessions(ctx); err != nil {
			t.Fatalf("a device nobody revoked, after the master's restart: %v", err)
		}
	}
}
