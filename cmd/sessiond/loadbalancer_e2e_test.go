package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sessiond/sessiond/client"
	"github.com/sessiond/sessiond/internal/fleet"
)

// haproxyBinary finds Debian's haproxy (in /usr/sbin, which may not be on PATH); without it the
// test is skipped, or fails in CI.
func haproxyBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("haproxy"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/haproxy"); err == nil {
		return "/usr/sbin/haproxy"
	}
	if os.Getenv("CI") != "" {
		t.Fatal("haproxy is required in CI")
	}
	t.Skip("haproxy not installed")
	return ""
}

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
	haproxy := haproxyBinary(t)
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

// restart starts node i again on its address and waits until it is ready.
func (c *lbCluster) restart(ctx context.Context, i int) error {
	c.start(i)
	if !waitFor(ctx, func() bool { return c.readyVia("http://" + c.addrs[i]) }) {
		return fmt.Errorf("node %d never became ready again", i+1)
	}
	return nil
}

func (c *lbCluster) readyVia(base string) bool {
	r, err := client.NewAPI(base, "").Do(context.Background(), http.MethodGet, "/readyz", nil, nil)
	return err == nil && r.Status == http.StatusOK
}

// lbFleet connects 300 devices (reconnecting Go clients of 100 users, internal/fleet) through
// HAProxy to three nodes, runs disrupt while they call the API, and returns what they saw.
// Every device comes through the balancer from 127.0.0.1: the per-address limits are raised
// (opsEnv), as for a real crowd behind one NAT they would be by its operator.
func lbFleet(t *testing.T, extra map[string]string, disrupt func(ctx context.Context, c *lbCluster, f *fleet.Fleet) error) fleet.Phase {
	t.Helper()
	c := startLBCluster(t, opsEnv(extra))
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	devices, err := fleet.Connect(ctx, c.base, 300)
	if err != nil {
		t.Fatal(err)
	}
	defer devices.Close()
	p, err := devices.Run(func() error { return disrupt(ctx, c, devices) })
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLoadBalancerRollingRestart: while the 300 devices call the API, every node in turn is
// drained (SIGINT), stopped and started again; while each node is down one device is revoked.
// Nobody else is signed out, no API call fails after the client's retries, every revocation is
// refused at once and reaches its device.
func TestLoadBalancerRollingRestart(t *testing.T) {
	p := lbFleet(t, map[string]string{"SESSIOND_DRAIN_DELAY": "1s", "SESSIOND_DRAIN_SPREAD": "1s"},
		func(ctx context.Context, c *lbCluster, devices *fleet.Fleet) error {
			for i := range c.nodes {
				// Draining: /readyz says 503 at once while the node still holds its WebSockets
				// (for the drain delay), so that the balancer takes it out before they move.
				_ = c.nodes[i].cmd.Process.Signal(os.Interrupt)
				if !waitFor(ctx, func() bool { return !c.readyVia("http://" + c.addrs[i]) }) {
					return fmt.Errorf("node %d never said it was draining", i+1)
				}
				<-c.nodes[i].done
				if err := devices.Revoke(ctx, -1); err != nil {
					return err
				}
				if err := c.restart(ctx, i); err != nil {
					return err
				}
			}
			return nil
		})
	t.Logf("rolling restart of 3 nodes behind HAProxy: %v", p)
	if !p.OK() || p.Revoked != 3 {
		t.Fatalf("rolling restart: %v", p)
	}
}

// TestLoadBalancerNodeKilled: one node is killed (SIGKILL: no drain, its devices see the
// connection drop); one of its devices is revoked while it is reconnecting, then the node is
// started again. Its devices resume on the other two through the balancer, and the revoked
// one ends with the revocation's reason (told on its resume).
func TestLoadBalancerNodeKilled(t *testing.T) {
	p := lbFleet(t, nil, func(ctx context.Context, c *lbCluster, devices *fleet.Fleet) error {
		c.nodes[1].Kill()
		victim, err := devices.Away(ctx)
		if err != nil {
			return err
		}
		if err := devices.Revoke(ctx, victim); err != nil {
			return err
		}
		time.Sleep(2 * time.Second) // the killed node's devices find the others
		return c.restart(ctx, 1)
	})
	t.Logf("a node SIGKILLed behind HAProxy: %v", p)
	if !p.OK() || p.Revoked != 1 {
		t.Fatalf("node killed: %v", p)
	}
}

// TestKeygenIfMissing: the init step of deploy/compose.yaml writes the key file once; on every
// later start it leaves the file alone and succeeds, where plain keygen refuses.
func TestKeygenIfMissing(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "keys.json")
	if _, err := cli(t, "keygen", "-if-missing", "-o", keyFile); err != nil {
		t.Fatal(err)
	}
	first, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli(t, "keygen", "-if-missing", "-o", keyFile); err != nil {
		t.Fatalf("a second keygen -if-missing: %v", err)
	}
	if again, _ := os.ReadFile(keyFile); string(again) != string(first) {
		t.Fatal("keygen -if-missing replaced an existing key file")
	}
	if _, err := cli(t, "keygen", "-o", keyFile); err == nil {
		t.Fatal("plain keygen over an existing key file succeeded")
	}
}

// TestComposeHAProxyConfig: deploy/compose's HAProxy configuration is valid for HAProxy, with a
// certificate (TLS) and as the local trial (no certificate). Its nodes' names resolve only on
// the compose network, which HAProxy accepts at start.
func TestComposeHAProxyConfig(t *testing.T) {
	haproxy := haproxyBinary(t)
	dir := t.TempDir()
	// HAProxy reads the certificate and its key from one file.
	certPath, keyPath, _ := selfSigned(t)
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	cert := filepath.Join(dir, "site.pem")
	if err := os.WriteFile(cert, append(certPEM, keyPEM...), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile("../../deploy/compose/haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	withCert := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(withCert, []byte(strings.ReplaceAll(string(cfg), "/certs/site.pem", cert)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, trial := range []bool{false, true} {
		cmd := exec.Command(haproxy, "-c", "-f", withCert)
		cmd.Env = os.Environ()
		if trial {
			cmd.Env = append(cmd.Env, "SESSIOND_TRIAL=true")
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("haproxy -c (trial %v): %v\n%s", trial, err, out)
		}
	}
}

// TestLoadBalancerJSClients: 30 devices of the JavaScript client (web/client/e2e/rolling.mjs,
// in Node) signed in through HAProxy and calling the API with authFetch while every node in
// turn is drained, stopped and started again. They reconnect through the balancer and resume:
// all still signed in, no call failed, no "ended" event.
func TestLoadBalancerJSClients(t *testing.T) {
	web := needNode(t)
	c := startLBCluster(t, opsEnv(map[string]string{"SESSIOND_DRAIN_DELAY": "1s", "SESSIOND_DRAIN_SPREAD": "1s"}))
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "e2e/rolling.mjs")
	cmd.Dir = filepath.Join(web, "client")
	cmd.Env = append(os.Environ(), "SESSIOND_URL="+c.base, "DEVICES=30", "NO_COLOR=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || lines.Text() != "ready" {
		t.Fatalf("the JS devices did not sign in: %q\n%s", lines.Text(), stderr.String())
	}
	for i := range c.nodes {
		_ = c.nodes[i].cmd.Process.Signal(os.Interrupt)
		<-c.nodes[i].done
		if err := c.restart(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := io.WriteString(stdin, "check\n"); err != nil {
		t.Fatal(err)
	}
	if !lines.Scan() {
		t.Fatalf("no figures from the JS devices\n%s", stderr.String())
	}
	var f struct {
		Devices, SignedIn, Calls, Failed, Reconnecting, Reopened int
		Ended, Errors                                            []string
	}
	if err := json.Unmarshal(lines.Bytes(), &f); err != nil {
		t.Fatalf("%v: %s", err, lines.Text())
	}
	t.Logf("JS clients through HAProxy, rolling restart: %s", lines.Text())
	if f.SignedIn != f.Devices || f.Failed != 0 || len(f.Ended) != 0 || f.Reopened == 0 {
		t.Fatalf("JS devices: %d of %d signed in, %d of %d calls failed, ended %v, %d reconnects", f.SignedIn, f.Devices, f.Failed, f.Calls, f.Ended, f.Reopened)
	}
}
