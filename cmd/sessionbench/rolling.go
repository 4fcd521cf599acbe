package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"time"

	"github.com/sessiond/sessiond/client"
	"github.com/sessiond/sessiond/internal/fleet"
)

// rollingScenario measures what devices see of a rolling restart and of a killed node behind a
// real load balancer: HAProxy (deploy/local/haproxy.cfg) in front of three nodes sharing
// PostgreSQL, Redis and a key file, -connections devices (300 by default; reconnecting Go
// clients of a third as many users) calling the API about twice a second. Phase 1 drains and
// restarts every node in turn (SESSIOND_DRAIN_DELAY 1 s, SESSIOND_DRAIN_SPREAD 1 s), revoking
// one device while each is down; phase 2 SIGKILLs one node, revokes one of its devices while it
// reconnects, and starts the node again. Printed per phase: devices signed out, API calls
// failed after the client's retries, reconnect times, and how late the revoked devices heard.
func rollingScenario(ctx context.Context, o options) (map[string]any, error) {
	if o.databaseURL == "" || o.redisURL == "" {
		return nil, errors.New("rolling needs -database-url and -redis-url (or TEST_POSTGRES_URL and TEST_REDIS_URL)")
	}
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/haproxy"); serr != nil {
			return nil, errors.New("rolling needs HAProxy (Debian package haproxy)")
		}
		haproxy = "/usr/sbin/haproxy"
	}
	n := o.connections
	if !o.set["connections"] {
		n = 300
	}
	raiseFileLimit()
	bin, env, cleanup, err := sharedEnv(ctx, o, map[string]string{
		"SESSIOND_TRUSTED_PROXIES": "127.0.0.1/32", "SESSIOND_DRAIN_DELAY": "1s", "SESSIOND_DRAIN_SPREAD": "1s",
		"SESSIOND_CONNECTIONS_PER_ADDRESS": "100000", "SESSIOND_MAX_SESSIONS": "0",
	})
	if err != nil {
		return nil, err
	}
	defer cleanup()
	cl := &lbNodes{bin: bin, env: env}
	defer cl.stopAll()
	for i := range cl.addrs {
		if cl.addrs[i], err = freeLoopbackAddr(); err != nil {
			return nil, err
		}
		if err := cl.start(ctx, i); err != nil {
			return nil, err
		}
	}
	lbAddr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	lb := exec.CommandContext(ctx, haproxy, "-db", "-f", "deploy/local/haproxy.cfg")
	lb.Env = append(os.Environ(), "LB_ADDR="+lbAddr, "NODE1_ADDR="+cl.addrs[0], "NODE2_ADDR="+cl.addrs[1], "NODE3_ADDR="+cl.addrs[2])
	if err := lb.Start(); err != nil {
		return nil, fmt.Errorf("haproxy (run from the repository's root: it reads deploy/local/haproxy.cfg): %w", err)
	}
	defer func() { _ = lb.Process.Kill(); _ = lb.Wait() }()
	base := "http://" + lbAddr
	if !waitReady(ctx, base) {
		return nil, errors.New("HAProxy never answered /readyz 200 (is this the repository's root?)")
	}

	devices, err := fleet.Connect(ctx, base, n)
	if err != nil {
		return nil, err
	}
	defer devices.Close()
	logf("%d devices signed in through the load balancer", n)
	out := map[string]any{"devices": n, "users": n / 3, "topology": "HAProxy (deploy/local/haproxy.cfg) + 3 nodes on PostgreSQL and Redis, drain delay 1 s, spread 1 s"}

	logf("phase 1: rolling restart of 3 nodes")
	rolling, err := devices.Run(func() error {
		for i := range cl.addrs {
			cl.nodes[i].stop()
			if err := devices.Revoke(ctx, -1); err != nil {
				return err
			}
			if err := cl.start(ctx, i); err != nil {
				return err
			}
			if !waitReady(ctx, "http://"+cl.addrs[i]) {
				return fmt.Errorf("node %d never became ready again", i+1)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	report(out, "rolling_", rolling)

	logf("phase 2: SIGKILL of node 2")
	killed, err := devices.Run(func() error {
		cl.nodes[1].kill()
		victim, err := devices.Away(ctx)
		if err != nil {
			return err
		}
		if err := devices.Revoke(ctx, victim); err != nil {
			return err
		}
		time.Sleep(2 * time.Second)
		if err := cl.start(ctx, 1); err != nil {
			return err
		}
		if !waitReady(ctx, "http://"+cl.addrs[1]) {
			return errors.New("node 2 never became ready again")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	report(out, "kill_", killed)
	out["targets"] = "0 devices signed out, 0 API calls failed after retries, every revocation refused at once and delivered"
	out["target_rolling_met"] = rolling.OK()
	out["target_kill_met"] = killed.OK()
	return out, nil
}

// lbNodes are three nodes on fixed addresses, so that each can be restarted behind HAProxy.
type lbNodes struct {
	bin   string
	env   map[string]string
	addrs [3]string
	nodes [3]*nodeProc
}

func (c *lbNodes) start(ctx context.Context, i int) error {
	nd, err := startNode(ctx, c.bin, fmt.Sprintf("node%d", i+1), withEnv(c.env, map[string]string{"SESSIOND_ADDR": c.addrs[i]}))
	c.nodes[i] = nd
	return err
}

func (c *lbNodes) stopAll() {
	for _, nd := range c.nodes {
		if nd != nil && nd.alive() {
			nd.stop()
		}
	}
}

func waitReady(ctx context.Context, base string) bool {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if r, err := client.NewAPI(base, "").Do(ctx, http.MethodGet, "/readyz", nil, nil); err == nil && r.Status == http.StatusOK {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// report puts a phase's figures into out under prefix.
func report(out map[string]any, prefix string, p fleet.Phase) {
	out[prefix+"signed_out"] = p.SignedOut
	out[prefix+"api_calls"] = p.Calls
	out[prefix+"api_failed_after_retries"] = p.Failures
	out[prefix+"reconnects"] = len(p.Reconnects)
	out[prefix+"reconnect_p50_ms"] = ms(p.Reconnect(0.50))
	out[prefix+"reconnect_p99_ms"] = ms(p.Reconnect(0.99))
	out[prefix+"revoked"] = p.Revoked
	out[prefix+"revoked_told"] = p.Told
	told := make([]float64, 0, len(p.ToldAfter))
	for _, d := range p.ToldAfter {
		told = append(told, ms(d))
	}
	out[prefix+"revoked_told_after_ms"] = told
	if len(p.UnexpectedEnds) > 0 {
		out[prefix+"unexpected_end_reasons"] = p.UnexpectedEnds
	}
}
