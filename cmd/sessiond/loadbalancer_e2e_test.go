package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
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

// lbDevice is one Go client behind the load balancer, with the times of its connection events.
type lbDevice struct {
	c    *client.Client
	user int

	mu          sync.Mutex
	lostAt      time.Time       // the last disconnect not yet followed by a resume
	reconnects  []time.Duration // disconnect → resumed
	endedAt     time.Time
	endedReason string
}

// follow records the device's events until the client closes.
func (d *lbDevice) follow() {
	for ev := range d.c.Events() {
		now := time.Now()
		d.mu.Lock()
		switch ev.Type {
		case client.EventDisconnected:
			d.lostAt = now
		case client.EventResumed:
			if !d.lostAt.IsZero() {
				d.reconnects = append(d.reconnects, now.Sub(d.lostAt))
				d.lostAt = time.Time{}
			}
		case client.EventEnded:
			d.endedAt, d.endedReason = now, ev.Reason
		}
		d.mu.Unlock()
	}
}

// lbFigures is what a run behind the load balancer measured.
type lbFigures struct {
	devices, signedIn, apiCalls, apiFailed, reconnects int
	reconnectP50, reconnectP99                         time.Duration
	noticeLate                                         []time.Duration // revocation → its device told
}

// lbRun connects users×perUser reconnecting Go clients through the load balancer, keeps every
// one calling the API about twice a second (a call is retried twice on a transport error),
// runs disrupt (which may revoke devices through revoke), then checks every device: the
// revoked ones told, all others still signed in and answering.
func lbRun(t *testing.T, c *lbCluster, users, perUser int, disrupt func(revoke func(victim int), away func() int)) lbFigures {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	opts := clientx.Cheap(client.Options{ReconnectMin: 100 * time.Millisecond, ReconnectMax: time.Second})
	devs := make([]*lbDevice, 0, users*perUser)
	names := make([]string, users)
	for u := range names {
		names[u] = uniqueName("lb")
		reg := client.NewClient(c.base, opts)
		if _, _, err := reg.Register(ctx, names[u], "pw"); err != nil {
			t.Fatal(err)
		}
		reg.Close()
	}
	var mu sync.Mutex
	err := parallel(ctx, users*perUser, 16, func(i int) error {
		cl := client.NewClient(c.base, opts)
		if _, _, err := cl.Login(ctx, names[i/perUser], "pw", fmt.Sprintf("device %d", i%perUser)); err != nil {
			cl.Close()
			return err
		}
		d := &lbDevice{c: cl, user: i / perUser}
		go d.follow()
		mu.Lock()
		devs = append(devs, d)
		mu.Unlock()
		return nil
	})
	t.Cleanup(func() {
		for _, d := range devs {
			d.c.Close()
		}
	})
	if err != nil {
		t.Fatal(err)
	}

	revoked := map[*lbDevice]time.Time{}
	var revMu sync.Mutex
	var calls, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(time.Duration(400+i%200) * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				revMu.Lock()
				_, gone := revoked[d]
				revMu.Unlock()
				token := d.c.Token()
				if gone || token == "" {
					continue
				}
				var err error
				for try := 0; try < 3; try++ {
					if _, err = client.NewAPI(c.base, token).Session(ctx); err == nil || client.IsCode(err, "session_invalid") {
						break
					}
					time.Sleep(200 * time.Millisecond)
				}
				calls.Add(1)
				revMu.Lock()
				_, gone = revoked[d]
				revMu.Unlock()
				if err != nil && !gone {
					failed.Add(1)
					t.Errorf("an API call failed after retries: %v", err)
				}
			}
		}()
	}

	// away finds a device that is disconnected right now (its node went away), waiting for one.
	away := func() int {
		for ctx.Err() == nil {
			for i, d := range devs {
				d.mu.Lock()
				lost := !d.lostAt.IsZero()
				d.mu.Unlock()
				if lost {
					return i
				}
			}
			time.Sleep(time.Millisecond)
		}
		t.Fatal("no device was disconnected")
		return 0
	}
	disrupt(func(victim int) {
		// A device of another user revokes device victim (both found by index).
		v := devs[victim]
		var by *lbDevice
		revMu.Lock()
		for _, d := range devs {
			if _, gone := revoked[d]; d.user == v.user && d != v && !gone {
				by = d
				break
			}
		}
		revMu.Unlock()
		token := v.c.Token()
		s, _ := v.c.Session()
		revMu.Lock()
		revoked[v] = time.Now()
		revMu.Unlock()
		// The revoking device may be on the node that just went away: like an app, it tries
		// again once its client has reconnected.
		var err error
		for try := 0; try < 10; try++ {
			var werr *client.Error
			if err = by.c.Revoke(ctx, s.ID); err == nil || errors.As(err, &werr) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("revoke during the disruption: %v", err)
		}
		// Enforced at once, whichever node answers.
		if _, err := client.NewAPI(c.base, token).Session(ctx); !client.IsCode(err, "session_invalid") {
			t.Fatalf("the revoked token through the load balancer: %v", err)
		}
	}, away)

	// Every revoked device is told, after its reconnect if its node went away.
	f := lbFigures{devices: len(devs)}
	waitFor(ctx, func() bool {
		for d := range revoked {
			d.mu.Lock()
			told := !d.endedAt.IsZero()
			d.mu.Unlock()
			if !told {
				return false
			}
		}
		return true
	})
	time.Sleep(time.Second) // a last round of calls on the settled cluster
	close(stop)
	wg.Wait()
	var all []time.Duration
	for _, d := range devs {
		d.mu.Lock()
		all = append(all, d.reconnects...)
		at, told, reason := revoked[d], d.endedAt, d.endedReason
		d.mu.Unlock()
		if _, ok := revoked[d]; ok {
			if told.IsZero() || reason != "revoked_by_user" {
				t.Errorf("a device revoked during the disruption was not told (ended %v, %q)", told, reason)
			} else {
				f.noticeLate = append(f.noticeLate, told.Sub(at))
			}
			continue
		}
		if _, ok := d.c.Session(); ok {
			f.signedIn++
		}
		if _, err := d.c.Devices(ctx); err != nil {
			t.Errorf("a device after the disruption: %v", err)
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	f.reconnects = len(all)
	if len(all) > 0 {
		f.reconnectP50, f.reconnectP99 = all[len(all)/2], all[min(len(all)-1, len(all)*99/100)]
	}
	f.apiCalls, f.apiFailed = int(calls.Load()), int(failed.Load())
	if want := len(devs) - len(revoked); f.signedIn != want || f.apiFailed != 0 {
		t.Fatalf("%d of %d devices signed in, %d of %d API calls failed after retries", f.signedIn, want, f.apiFailed, f.apiCalls)
	}
	return f
}

func (f lbFigures) String() string {
	return fmt.Sprintf("%d devices: %d reconnects (disconnect → resumed p50 %s, p99 %s); %d API calls, %d failed after retries; %d still signed in; revoked devices told %v after the revocation",
		f.devices, f.reconnects, f.reconnectP50.Round(time.Millisecond), f.reconnectP99.Round(time.Millisecond),
		f.apiCalls, f.apiFailed, f.signedIn, f.noticeLate)
}

// parallel runs f(i) for i in [0,n) on conc goroutines and returns the first error.
func parallel(ctx context.Context, n, conc int, f func(i int) error) error {
	var next atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := f(i); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// TestLoadBalancerRollingRestart: 300 devices (Go clients that reconnect) of 100 users
// connected through HAProxy to three nodes and calling the API, while every node in turn is
// drained (SIGINT), stopped and started again; while each node is down one device is revoked.
// Nobody else is signed out, no API call fails after the client's retries, every revocation
// is refused at once and reaches its device after its reconnect.
func TestLoadBalancerRollingRestart(t *testing.T) {
	// Every device comes through the balancer from 127.0.0.1: the per-address limits are
	// raised (opsEnv), as for a real crowd behind one NAT they would be by its operator.
	c := startLBCluster(t, opsEnv(map[string]string{"SESSIOND_DRAIN_DELAY": "1s", "SESSIOND_DRAIN_SPREAD": "1s"}))
	f := lbRun(t, c, 100, 3, func(revoke func(int), _ func() int) {
		for i := range c.nodes {
			// Draining: /readyz says 503 at once while the node still holds its WebSockets
			// (for the drain delay), so that the balancer takes it out before they move.
			_ = c.nodes[i].cmd.Process.Signal(os.Interrupt)
			if !waitFor(ctxT(t), func() bool { return !c.readyVia("http://" + c.addrs[i]) }) {
				t.Fatalf("node %d never said it was draining", i+1)
			}
			<-c.nodes[i].done
			revoke(30*i + 1)
			c.start(i)
			if !waitFor(ctxT(t), func() bool { return c.readyVia("http://" + c.addrs[i]) }) {
				t.Fatalf("node %d never became ready again", i+1)
			}
		}
	})
	t.Logf("rolling restart of 3 nodes behind HAProxy: %v", f)
}

// TestLoadBalancerNodeKilled: the same 300 devices, and one node is killed (SIGKILL: no drain,
// its devices see the connection drop); one of its devices is revoked while it is reconnecting,
// then the node is started again. Its devices resume on the other two through the balancer,
// and the revoked one ends with the revocation's reason.
func TestLoadBalancerNodeKilled(t *testing.T) {
	c := startLBCluster(t, opsEnv(nil))
	f := lbRun(t, c, 100, 3, func(revoke func(int), away func() int) {
		c.nodes[1].Kill()
		// A device of the killed node, revoked while it is reconnecting: it learns of it on
		// its resume (session_invalid with the reason), wherever it lands.
		revoke(away())
		time.Sleep(2 * time.Second) // the killed node's devices find the others
		c.start(1)
		if !waitFor(ctxT(t), func() bool { return c.readyVia("http://" + c.addrs[1]) }) {
			t.Fatal("the killed node never became ready again")
		}
	})
	t.Logf("a node SIGKILLed behind HAProxy: %v", f)
}
