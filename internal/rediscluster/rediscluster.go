// Package rediscluster starts a real Redis Cluster of three masters (no replicas) on loopback
// ports for tests: Debian's redis-server with --cluster-enabled yes, joined by
// redis-cli --cluster create. A master can be restarted on its port (the cluster keeps its
// slots in the node's config file).
package rediscluster

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Cluster is three masters; Addrs are "127.0.0.1:port".
type Cluster struct {
	t     testing.TB
	dir   string
	Addrs []string
	procs []*exec.Cmd
}

// Start starts the cluster and waits until it reports cluster_state:ok. Without redis-server
// and redis-cli it skips the test, or fails it in CI.
func Start(t testing.TB) *Cluster {
	t.Helper()
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is required in CI", bin)
			}
			t.Skipf("%s not installed", bin)
		}
	}
	c := &Cluster{t: t, dir: t.TempDir()}
	for len(c.Addrs) < 3 {
		if p := freePort(); p != 0 && !c.has(p) {
			c.Addrs = append(c.Addrs, "127.0.0.1:"+strconv.Itoa(p))
		}
	}
	c.procs = make([]*exec.Cmd, 3)
	for i := range c.Addrs {
		c.start(i)
	}
	t.Cleanup(func() {
		for i := range c.procs {
			c.Stop(i)
		}
	})
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitOK()
	return c
}

func (c *Cluster) has(p int) bool {
	for _, a := range c.Addrs {
		if strings.HasSuffix(a, ":"+strconv.Itoa(p)) {
			return true
		}
	}
	return false
}

// freePort picks a port in 10000–21999 that is free, as is its cluster bus port (+10000): both
// below the kernel's range for outgoing connections, so that neither is taken meanwhile.
func freePort() int {
	p := 10000 + rand.IntN(12000)
	for _, q := range []int{p, p + 10000} {
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(q))
		if err != nil {
			return 0
		}
		ln.Close()
	}
	return p
}

func (c *Cluster) start(i int) {
	c.t.Helper()
	port := strings.TrimPrefix(c.Addrs[i], "127.0.0.1:")
	cmd := exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1", "--cluster-enabled", "yes",
		"--cluster-config-file", filepath.Join(c.dir, "nodes-"+port+".conf"), "--cluster-node-timeout", "2000",
		"--dir", c.dir, "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("redis-server: %v", err)
	}
	c.procs[i] = cmd
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.Dial("tcp", c.Addrs[i])
		if err == nil {
			conn.Close()
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("redis-server on %s did not start", c.Addrs[i])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills master i.
func (c *Cluster) Stop(i int) {
	if c.procs[i] != nil {
		_ = c.procs[i].Process.Kill()
		_ = c.procs[i].Wait()
		c.procs[i] = nil
	}
}

// Restart starts master i again on its port and waits until the cluster is ok.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.start(i)
	c.WaitOK()
}

// WaitOK waits until every master reports cluster_state:ok.
func (c *Cluster) WaitOK() {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok := true
		for i, a := range c.Addrs {
			if c.procs[i] == nil {
				continue
			}
			host, port, _ := net.SplitHostPort(a)
			out, err := exec.Command("redis-cli", "-h", host, "-p", port, "cluster", "info").Output()
			if err != nil || !strings.Contains(string(out), "cluster_state:ok") {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the Redis cluster %v is not ok after 30 s", c.Addrs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// URL is the cluster as SESSIOND_REDIS_URL takes it with SESSIOND_REDIS_CLUSTER=true: the first
// master, the others as addr parameters.
func (c *Cluster) URL() string {
	return fmt.Sprintf("redis://%s/?addr=%s&addr=%s", c.Addrs[0], c.Addrs[1], c.Addrs[2])
}
