package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sessiond/sessiond/internal/fleet"
)

// privatePostgres is a PostgreSQL of the test's own (Debian's binaries, initdb on a temporary
// directory, a free loopback port), which the test may restart or pause (SIGSTOP) without
// touching the machine's shared instance. As root it runs as the postgres user.
type privatePostgres struct {
	t        *testing.T
	bin, dir string
	port     string
	asUser   string // "postgres" when run as root
}

func startPrivatePostgres(t *testing.T) *privatePostgres {
	t.Helper()
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) == 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("PostgreSQL's server binaries are required in CI")
		}
		t.Skip("PostgreSQL's server binaries not installed")
	}
	p := &privatePostgres{t: t, bin: filepath.Dir(matches[len(matches)-1]), port: freeAddr(t)[len("127.0.0.1:"):]}
	dir, err := os.MkdirTemp("", "sessiond-pg")
	if err != nil {
		t.Fatal(err)
	}
	p.dir = dir
	t.Cleanup(func() { os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		p.asUser = "postgres"
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := p.run("initdb", "-D", filepath.Join(dir, "data"), "-A", "trust", "-U", "postgres", "--no-sync"); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	p.start()
	t.Cleanup(func() {
		p.resume()
		_, _ = p.run("pg_ctl", "-D", filepath.Join(dir, "data"), "-w", "-m", "immediate", "stop")
	})
	return p
}

func (p *privatePostgres) run(tool string, args ...string) ([]byte, error) {
	path := filepath.Join(p.bin, tool)
	if p.asUser != "" {
		return exec.Command("runuser", append([]string{"-u", p.asUser, "--", path}, args...)...).CombinedOutput()
	}
	return exec.Command(path, args...).CombinedOutput()
}

func (p *privatePostgres) start() {
	p.t.Helper()
	if err := p.startErr(); err != nil {
		p.t.Fatal(err)
	}
}

func (p *privatePostgres) startErr() error {
	opts := fmt.Sprintf("-p %s -k %s -c listen_addresses=127.0.0.1 -c fsync=off", p.port, p.dir)
	if out, err := p.run("pg_ctl", "-D", filepath.Join(p.dir, "data"), "-o", opts, "-l", filepath.Join(p.dir, "log"), "-w", "start"); err != nil {
		return fmt.Errorf("pg_ctl start: %v\n%s", err, out)
	}
	return nil
}

func (p *privatePostgres) url() string {
	return "postgres://postgres@127.0.0.1:" + p.port + "/postgres?sslmode=disable"
}

// restart stops the server (fast: sessions are cut) and starts it again. It may run on a
// goroutine of its own: it reports, it does not stop the test.
func (p *privatePostgres) restart() error {
	if err := p.stopErr(); err != nil {
		return err
	}
	return p.startErr()
}

func (p *privatePostgres) stopErr() error {
	if out, err := p.run("pg_ctl", "-D", filepath.Join(p.dir, "data"), "-w", "-m", "fast", "stop"); err != nil {
		return fmt.Errorf("pg_ctl stop: %v\n%s", err, out)
	}
	return nil
}

// pids are the postmaster and its children.
func (p *privatePostgres) pids() []int {
	b, err := os.ReadFile(filepath.Join(p.dir, "data", "postmaster.pid"))
	if err != nil {
		return nil
	}
	master, _ := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	out := []int{master}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(master) {
			out = append(out, pid)
		}
	}
	return out
}

// pause freezes every process of the server (SIGSTOP): connections stay open, nothing answers.
func (p *privatePostgres) pause() {
	for _, pid := range p.pids() {
		_ = syscall.Kill(pid, syscall.SIGSTOP)
	}
}

func (p *privatePostgres) resume() {
	for _, pid := range p.pids() {
		_ = syscall.Kill(pid, syscall.SIGCONT)
	}
}

// TestFaultsUnderLoad: 150 devices behind HAProxy on three nodes, on a PostgreSQL and a Redis
// of the test's own, calling the API throughout, while Redis is restarted, PostgreSQL is
// restarted, and PostgreSQL is paused (SIGSTOP) for 10 s; in each, a device is revoked and
// another signs in. Nobody is signed out, no API call fails after the client's retries (a
// device retries `unavailable` for up to 15 s, as an app would), every revocation is enforced
// and its device told, and the figures of each fault are logged (docs/OPERATIONS.md).
func TestFaultsUnderLoad(t *testing.T) {
	pg := startPrivatePostgres(t)
	redis := startPrivateRedis(t)
	c := startLBCluster(t, opsEnv(map[string]string{"SESSIOND_DATABASE_URL": pg.url(), "SESSIOND_REDIS_URL": redis.url()}))
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	devices, err := fleet.Connect(ctx, c.base, 150)
	if err != nil {
		t.Fatal(err)
	}
	defer devices.Close()
	during := func(fault func()) fleet.Phase {
		p, err := devices.Run(func() error {
			fault()
			return devices.SignIn(ctx) // tries again while unavailable, as an app would
		})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	faults := []struct {
		name  string
		fault func()
	}{
		{"Redis restarted", func() {
			redis.stop()
			if err := devices.Revoke(ctx, -1); err != nil {
				t.Error(err)
			}
			time.Sleep(time.Second)
			redis.start()
		}},
		{"PostgreSQL restarted", func() {
			restarted := make(chan error, 1)
			go func() { restarted <- pg.restart() }()
			if err := devices.Revoke(ctx, -1); err != nil {
				t.Error(err)
			}
			if err := <-restarted; err != nil {
				t.Fatal(err)
			}
		}},
		{"PostgreSQL paused 10 s", func() {
			pg.pause()
			resumed := make(chan struct{})
			go func() {
				defer close(resumed)
				time.Sleep(10 * time.Second)
				pg.resume()
			}()
			if err := devices.Revoke(ctx, -1); err != nil {
				t.Error(err)
			}
			<-resumed
		}},
	}
	for _, f := range faults {
		start := time.Now()
		p := during(f.fault)
		t.Logf("%s: %v (phase %s)", f.name, p, time.Since(start).Round(100*time.Millisecond))
		if !p.OK() || p.Revoked != 1 {
			t.Errorf("%s: %v", f.name, p)
		}
	}
}
