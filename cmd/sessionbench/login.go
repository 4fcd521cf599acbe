package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bytemare/opaque"
	"github.com/rs/zerolog"

	"github.com/sessiond/sessiond/session"
	"github.com/sessiond/sessiond/store"
)

// loginScenario measures OPAQUE logins per second against one node at saturation and the
// node's CPU time per login, and compares the latter with the in-process cost of the server
// steps (Manager.LoginStart + LoginFinish: KE2, KE3 check, session creation) measured in this
// process in the same run.
func loginScenario(ctx context.Context, o options) (map[string]any, error) {
	nUsers := o.intOr("sessions", 2000)
	c := o.intOr("concurrency", 16)

	// In-process reference first, while the machine is quiet.
	inproc, err := inProcessLogins(ctx, 400)
	if err != nil {
		return nil, fmt.Errorf("in-process logins: %w", err)
	}
	logf("in-process: %.3f ms CPU, %.3f ms wall per login (LoginStart+LoginFinish)", inproc.cpuMs, inproc.wallMs)

	node, stop, err := startBenchNode(ctx, o, "login", nil)
	if err != nil {
		return nil, err
	}
	defer stop()
	users := userNames("l", nUsers)
	if err := registerUsers(ctx, node.base, users, c, nil); err != nil {
		return nil, err
	}

	// Each user logs in at most 8 times in the run, so no login evicts an older session (the
	// default limit is 10 per user) and every login is the same work. Worker w uses the users
	// w, w+c, w+2c, … in turn.
	const perUser = 8
	var budgetOut atomic.Bool
	next := make([]int, c) // per worker: logins done
	loginPhase := func(d time.Duration) (latencies, int) {
		pctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		var mu sync.Mutex
		var all latencies
		errs := 0
		var wg sync.WaitGroup
		for w := 0; w < c; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				mine := (len(users) - w + c - 1) / c
				var local latencies
				bad := 0
				for pctx.Err() == nil {
					k := next[w]
					if k >= mine*perUser {
						budgetOut.Store(true)
						break
					}
					next[w]++
					u := users[w+(k%mine)*c]
					t := time.Now()
					if _, err := loginOnce(pctx, node.base, u, nil); err != nil {
						if pctx.Err() == nil {
							bad++
							if bad <= 3 {
								logf("login error: %v", err)
							}
						}
						continue
					}
					local = append(local, time.Since(t))
				}
				mu.Lock()
				all = append(all, local...)
				errs += bad
				mu.Unlock()
			}(w)
		}
		wg.Wait()
		return all, errs
	}

	logf("warming up: logins for 2 s at concurrency %d", c)
	loginPhase(2 * time.Second)

	before, err := node.scrape(ctx)
	if err != nil {
		return nil, err
	}
	cpu0, err := node.cpuSeconds()
	if err != nil {
		return nil, err
	}
	logf("measuring: logins for %s at concurrency %d", o.duration, c)
	gen0 := selfCPUSeconds()
	start := time.Now()
	var profWG sync.WaitGroup
	if o.pprof && o.profileDir != "" {
		profWG.Add(1)
		go func() {
			defer profWG.Done()
			_ = saveProfile(ctx, node.pprofBase(), fmt.Sprintf("profile?seconds=%d", max(int(o.duration.Seconds())-1, 1)), o.profileDir, "login-cpu.pprof")
		}()
	}
	lat, errs := loginPhase(o.duration)
	elapsed := time.Since(start)
	genPerLogin := (selfCPUSeconds() - gen0) / float64(max(len(lat), 1)) * 1000
	cpu1, err := node.cpuSeconds()
	if err != nil {
		return nil, err
	}
	profWG.Wait()
	after, err := node.scrape(ctx)
	if err != nil {
		return nil, err
	}
	if len(lat) == 0 {
		return nil, fmt.Errorf("no login succeeded (%d errors)", errs)
	}
	okServer := after.sum("sessiond_logins_total", `result="ok"`) - before.sum("sessiond_logins_total", `result="ok"`)
	cpuPerLogin := (cpu1 - cpu0) / float64(len(lat)) * 1000
	promCPU := after.sum("process_cpu_seconds_total") - before.sum("process_cpu_seconds_total")
	stoppedBy := "duration"
	if budgetOut.Load() {
		stoppedBy = "login budget (8 per user; raise -sessions)"
	}
	return map[string]any{
		"node":                          "sessiond child process, embedded store (SQLite), in-process hub",
		"client_ksf":                    "KSFCheap (Argon2id t=1, 64 KiB): key stretching runs on the client only, so the server's work per login is identical to the interoperable parameters; a 64 MiB Argon2id per login would only load the generator that shares this machine",
		"each_login":                    "new WebSocket, login.start/login.challenge/login.finish/login.ok (+ notice.sessions_changed), close",
		"users":                         len(users),
		"concurrency":                   c,
		"seconds":                       round3(elapsed.Seconds()),
		"stopped_by":                    stoppedBy,
		"logins":                        len(lat),
		"logins_server_counted":         okServer,
		"login_errors":                  errs,
		"logins_per_s":                  round1(float64(len(lat)) / elapsed.Seconds()),
		"login_p50_ms":                  ms(lat.quantile(0.50)),
		"login_p99_ms":                  ms(lat.quantile(0.99)),
		"server_cpu_seconds":            round3(cpu1 - cpu0),
		"server_cpu_seconds_prometheus": round3(promCPU),
		"server_cpu_ms_per_login":       round3(cpuPerLogin),
		"inprocess_cpu_ms_per_login":    round3(inproc.cpuMs),
		"inprocess_wall_ms_per_login":   round3(inproc.wallMs),
		"inprocess_logins":              inproc.n,
		"inprocess_measure":             "CPU time (getrusage, all threads) of this process during Manager.LoginStart and Manager.LoginFinish, each run for all logins at once on one goroutine; client steps untimed",
		"ratio_server_cpu_vs_inprocess": round3(cpuPerLogin / inproc.cpuMs),
		"crypto_limit_logins_per_s":     round1(float64(runtime.NumCPU()) * 1000 / inproc.cpuMs),
		"ratio_logins_vs_crypto_limit":  round3(float64(len(lat)) / elapsed.Seconds() / (float64(runtime.NumCPU()) * 1000 / inproc.cpuMs)),
		// The load generator runs the client's OPAQUE steps on the same two cores: what this
		// machine can do at most is its cores over the node's and the generator's CPU per login.
		"generator_cpu_ms_per_login":    round3(genPerLogin),
		"machine_limit_logins_per_s":    round1(float64(runtime.NumCPU()) * 1000 / (cpuPerLogin + genPerLogin)),
		"ratio_logins_vs_machine_limit": round3(float64(len(lat)) / elapsed.Seconds() / (float64(runtime.NumCPU()) * 1000 / (cpuPerLogin + genPerLogin))),
		"targets":                       "server CPU per login / in-process OPAQUE steps <= 1.4; logins/s / (cores / in-process steps) >= 0.6",
		"target_ratio_met":              cpuPerLogin/inproc.cpuMs <= 1.4,
		"target_throughput_met":         float64(len(lat))/elapsed.Seconds() >= 0.6*float64(runtime.NumCPU())*1000/inproc.cpuMs,
	}, nil
}

type inprocResult struct {
	n      int
	wallMs float64 // mean wall time of LoginStart+LoginFinish
	cpuMs  float64 // mean CPU time of this process in them
}

// inProcessLogins times Manager.LoginStart + Manager.LoginFinish (the server's OPAQUE steps
// and the session's creation in the embedded store) for n logins on one goroutine; the
// client's steps are not timed. The manager is configured as a node's (default policy, a JSON
// logger writing nowhere) minus the hub.
func inProcessLogins(ctx context.Context, n int) (inprocResult, error) {
	dir, err := os.MkdirTemp("", "sessionbench-inproc")
	if err != nil {
		return inprocResult{}, err
	}
	defer os.RemoveAll(dir)
	st, err := store.OpenSQLite(ctx, filepath.Join(dir, "sessiond.db"))
	if err != nil {
		return inprocResult{}, err
	}
	defer st.Close()
	// Every start is answered before the first finish: the pending state must outlive the batch.
	m, err := session.NewManager(session.Config{Store: st, Keys: session.GenerateKeys(), Logger: zerolog.New(io.Discard).With().Timestamp().Logger(),
		Policy: session.Policy{PendingTimeout: time.Hour}})
	if err != nil {
		return inprocResult{}, err
	}
	ksf := &opaque.ClientOptions{KSFSalt: make([]byte, 16), KSFLength: 64, KSFParameters: []uint64{1, 64, 1}}
	users := make([]string, (n+7)/8)
	for i := range users {
		users[i] = fmt.Sprintf("inproc-%d", i)
		c, _ := opaque.DefaultConfiguration().Client()
		req, _ := c.RegistrationInit([]byte(benchPassword))
		resp, reg, err := m.RegisterStart(ctx, users[i], req.Serialize())
		if err != nil {
			return inprocResult{}, err
		}
		r, err := c.Deserialize.RegistrationResponse(resp)
		if err != nil {
			return inprocResult{}, err
		}
		rec, _, err := c.RegistrationFinalize(r, nil, nil, ksf)
		if err != nil {
			return inprocResult{}, err
		}
		if _, err := m.RegisterFinish(ctx, reg, rec.Serialize()); err != nil {
			return inprocResult{}, err
		}
	}
	// Client steps first (untimed), then each server step for all n logins at once, timed as
	// this process's CPU time (getrusage: every thread, the collector's included) and as wall
	// time. A collection between the phases (untimed) leaves each phase its own garbage.
	type attempt struct {
		user   string
		client *opaque.Client
		ke1    []byte
		ke2    []byte
		ke3    []byte
		login  *session.Login
	}
	as := make([]attempt, n)
	for i := range as {
		c, _ := opaque.DefaultConfiguration().Client()
		ke1, _ := c.GenerateKE1([]byte(benchPassword))
		as[i] = attempt{user: users[i%len(users)], client: c, ke1: ke1.Serialize()}
	}
	var cpu, wall time.Duration
	timed := func(f func() error) error {
		runtime.GC()
		c0, w0 := processCPU(), time.Now()
		err := f()
		cpu += processCPU() - c0
		wall += time.Since(w0)
		return err
	}
	err = timed(func() error {
		for i := range as {
			ke2, l, err := m.LoginStart(ctx, as[i].user, as[i].ke1)
			if err != nil {
				return err
			}
			as[i].ke2, as[i].login = ke2, l
		}
		return nil
	})
	if err != nil {
		return inprocResult{}, err
	}
	for i := range as {
		ke2, err := as[i].client.Deserialize.KE2(as[i].ke2)
		if err != nil {
			return inprocResult{}, err
		}
		ke3, _, _, err := as[i].client.GenerateKE3(ke2, nil, nil, ksf)
		if err != nil {
			return inprocResult{}, err
		}
		as[i].ke3 = ke3.Serialize()
	}
	err = timed(func() error {
		for i := range as {
			if _, _, err := m.LoginFinish(ctx, as[i].login, as[i].ke3, session.DeviceInfo{Label: "sessionbench", IP: "127.0.0.1", UserAgent: "Go-http-client/1.1"}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return inprocResult{}, err
	}
	return inprocResult{n: n, cpuMs: float64(cpu) / float64(n) / 1e6, wallMs: float64(wall) / float64(n) / 1e6}, nil
}

// processCPU is this process's user+system CPU time, all threads.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
