package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessiond/sessiond/client"
	"github.com/sessiond/sessiond/internal/clientx"
)

// lbCluster is three sessiond processes behind HAProxy (deploy/local/haproxy.cfg), sharing
// PostgreSQL, Redis and one key file, each on a fixed address so that it can be restarted.
type lbCluster struct {
	t     *testing.T
	env   map[string]string
	addrs [3]string
	nodes [3]*proc
	base  string // the load balancer
}

func startLBCluster(t *testing.T, extra map[string]string) *lbCluster {
	t.Helper()
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/haproxy"); serr == nil {
			haproxy, err = "/usr/sbin/haproxy", nil
		}
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("haproxy is required in CI")
		}
		t.Skip("haproxy not installed")
	}
	keyFile := filepath.Join(t.TempDir(), "keys.json")
	if _, err := cli(t, "keygen", "-o", keyFile); err != nil {
		t.Fatal(err)
	}
	c := &lbCluster{t: t, env: map[string]string{
		"SESSIOND_DATABASE_URL": postgresURL(t), "SESSIOND_REDIS_URL": redisURL(t), "SESSIOND_KEY_FILE": keyFile,
		"SESSIOND_REDIS_PREFIX": "e2e-" + randomHex(4) + ":", "SESSIOND_TRUSTED_PROXIES": "127.0.0.1/32",
	}}
	for k, v := range extra {
		c.env[k] = v
	}
	for i := range c.nodes {
		c.addrs[i] = freeAddr(t)
		c.start(i)
	}
	lb := freeAddr(t)
	cmd := exec.Command(haproxy, "-db", "-f", "../../deploy/local/haproxy.cfg")
	cmd.Env = append(os.Environ(), "LB_ADDR="+lb, "NODE1_ADDR="+c.addrs[0], "NODE2_ADDR="+c.addrs[1], "NODE3_ADDR="+c.addrs[2])
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	c.base = "http://" + lb
	if !waitFor(ctxT(t), func() bool { return c.readyVia(c.base) }) {
		t.Fatalf("HAProxy never answered /readyz:\n%s", logs.String())
	}
	return c
}

func (c *lbCluster) start(i int) {
	env := map[string]string{"SESSIOND_ADDR": c.addrs[i]}
	for k, v := range c.env {
		env[k] = v
	}
	c.nodes[i] = startProcess(c.t, env)
}

func (c *lbCluster) readyVia(base string) bool {
	r, err := client.NewAPI(base, "").Do(context.Background(), http.MethodGet, "/readyz", nil, nil)
	return err == nil && r.Status == http.StatusOK
}

// TestLoadBalancerRollingRestart: 30 devices (Go clients that reconnect) connected through
// HAProxy to three nodes, calling the API in a loop, while every node in turn is drained
// (SIGINT), stopped and started again. Nobody is signed out, every API call succeeds (after the
// client's retry on a refused connection), and a revocation issued while a node is down is
// enforced at once and reaches its device after it reconnects.
func TestLoadBalancerRollingRestart(t *testing.T) {
	c := startLBCluster(t, map[string]string{"SESSIOND_DRAIN_DELAY": "1s", "SESSIOND_DRAIN_SPREAD": "500ms"})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const users, perUser = 10, 3
	opts := clientx.Cheap(client.Options{ReconnectMin: 50 * time.Millisecond, ReconnectMax: 500 * time.Millisecond})
	type device struct {
		c    *client.Client
		user int
	}
	var devs []*device
	for u := 0; u < users; u++ {
		name := uniqueName("lb")
		reg := client.NewClient(c.base, opts)
		if _, _, err := reg.Register(ctx, name, "pw"); err != nil {
			t.Fatal(err)
		}
		reg.Close()
		for d := 0; d < perUser; d++ {
			cl := client.NewClient(c.base, opts)
			t.Cleanup(func() { cl.Close() })
			if _, _, err := cl.Login(ctx, name, "pw", fmt.Sprintf("device %d", d)); err != nil {
				t.Fatal(err)
			}
			devs = append(devs, &device{c: cl, user: u})
		}
	}
	// The devices of user 0 but the last: the revoking one and the one it revokes.
	revoker, victim := devs[0], devs[1]
	victimID := func() string { s, _ := victim.c.Session(); return s.ID }()
	victimToken := victim.c.Token()

	// API calls through the load balancer in a loop, retried once on a transport error (a
	// connection the draining node closed).
	var calls, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, d := range devs[2:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Duration(20+i) * time.Millisecond):
				}
				var err error
				for try := 0; try < 3; try++ {
					if _, err = client.NewAPI(c.base, d.c.Token()).Session(ctx); err == nil {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				calls.Add(1)
				if err != nil {
					failed.Add(1)
					t.Errorf("an API call failed after retries: %v", err)
				}
			}
		}()
	}

	for i := range c.nodes {
		// Draining: /readyz says 503 (at once) while the node still holds its WebSockets (for
		// the drain delay), so the load balancer takes it out before its devices move.
		_ = c.nodes[i].cmd.Process.Signal(os.Interrupt)
		if !waitFor(ctx, func() bool { return !c.readyVia("http://" + c.addrs[i]) }) {
			t.Fatalf("node %d never said it was draining", i+1)
		}
		<-c.nodes[i].done
		if i == 1 {
			// A revocation while a node is down: refused at once everywhere.
			if err := revoker.c.Revoke(ctx, victimID); err != nil {
				t.Fatal(err)
			}
			if _, err := client.NewAPI(c.base, victimToken).Session(ctx); !client.IsCode(err, "session_invalid") {
				t.Fatalf("the revoked token through the load balancer: %v", err)
			}
		}
		c.start(i)
		if !waitFor(ctx, func() bool { return c.readyVia("http://" + c.addrs[i]) }) {
			t.Fatalf("node %d never became ready again", i+1)
		}
	}
	// The revoked device is told (after its reconnect, if its node was restarted).
	ended := nextEventOf(t, victim.c, client.EventEnded, 30*time.Second)
	if ended.Reason != "revoked_by_user" {
		t.Fatalf("the revoked device ended with %+v", ended)
	}
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	signedIn := 0
	for _, d := range devs {
		if d == victim {
			continue
		}
		if _, ok := d.c.Session(); ok {
			signedIn++
		}
		if _, err := d.c.Devices(ctx); err != nil {
			t.Errorf("a device after the rolling restart: %v", err)
		}
	}
	t.Logf("rolling restart of 3 nodes behind HAProxy: %d of %d devices still signed in, %d API calls, %d failed after retries",
		signedIn, len(devs)-1, calls.Load(), failed.Load())
	if signedIn != len(devs)-1 || failed.Load() != 0 {
		t.Fatalf("%d of %d devices signed in, %d API calls failed", signedIn, len(devs)-1, failed.Load())
	}
}
