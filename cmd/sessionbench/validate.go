package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sessiond/sessiond/session"
)

// setupLimits raise a bench node's login and registration limits: the load generator makes
// thousands of logins from one machine within seconds, which the defaults (meant to stop
// password guessing) would rightly refuse. Nothing measured depends on them.
var setupLimits = map[string]string{
	"SESSIOND_LOGIN_LIMIT_PER_ADDRESS":    "100000000",
	"SESSIOND_REGISTER_LIMIT_PER_ADDRESS": "100000000",
	"SESSIOND_LOGIN_LIMIT_PER_USER":       "100000000",
	"SESSIOND_LOGIN_CEILING_PER_USER":     "100000000",
	"SESSIOND_BAD_TOKENS_PER_ADDRESS":     "100000000",
	// The figures are the server's work, not its logging (and the tool reads every line).
	"SESSIOND_ACCESS_LOG": "false",
}

func withEnv(base map[string]string, more map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range more {
		out[k] = v
	}
	return out
}

// validateScenario measures token validation over HTTP (GET /api/v1/session), the same check as
// a reverse proxy's forward auth (GET /api/v1/forward-auth) and as a service's introspection
// (POST /api/v1/introspect), each against the same HTTP stack serving a trivial endpoint (GET
// /healthz), on one node with the embedded store, and how often validations reach the store.
func validateScenario(ctx context.Context, o options) (map[string]any, error) {
	n := o.intOr("sessions", 1000)
	adminAddr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	node, stop, err := startBenchNode(ctx, o, "validate", map[string]string{"SESSIOND_ADMIN_ADDR": adminAddr})
	if err != nil {
		return nil, err
	}
	defer stop()
	tokens, users, err := benchSessions(ctx, node.base, n)
	if err != nil {
		return nil, err
	}
	secret, err := benchService(ctx, node, adminAddr)
	if err != nil {
		return nil, err
	}
	c := o.concurrency
	hc := loadClient(c)
	phases := benchPhases(node.base, c, tokens, secret)
	logf("warming up (1 s each)")
	for _, name := range []string{"validate", "forward", "introspect", "trivial"} {
		if w := httpLoad(ctx, hc, phases[name], time.Second); w.errors > 0 {
			return nil, fmt.Errorf("warm-up of %s: %d of %d requests failed", name, w.errors, len(w.lat))
		}
	}
	res, cpu, queries, err := runPhases(ctx, o, node, hc, phases)
	if err != nil {
		return nil, err
	}
	out := validateReport(res, cpu, queries, n, len(users), c, o)
	if o.pprof && o.profileDir != "" {
		// A CPU profile of the node under validation load, for the record.
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = saveProfile(ctx, node.pprofBase(), "profile?seconds=5", o.profileDir, "validate-cpu.pprof")
		}()
		httpLoad(ctx, hc, phases["validate"], 6*time.Second)
		<-done
	}
	return out, nil
}

// benchSessions makes n sessions by real logins, at most 8 per user (the default limit is 10).
func benchSessions(ctx context.Context, base string, n int) ([]string, []string, error) {
	users := userNames("v", (n+7)/8)
	if err := registerUsers(ctx, base, users, 8, nil); err != nil {
		return nil, nil, err
	}
	who := make([]string, n)
	for i := range who {
		who[i] = users[i%len(users)]
	}
	logins, err := loginAll(ctx, base, who, 8, nil)
	if err != nil {
		return nil, nil, err
	}
	tokens := make([]string, len(logins))
	for i, l := range logins {
		tokens[i] = l.token
	}
	return tokens, users, nil
}

// benchService creates a service client through the node's admin API and returns its secret.
func benchService(ctx context.Context, node *nodeProc, adminAddr string) (string, error) {
	keys, err := session.LoadKeys(filepath.Join(node.dataDir, "keys.json"))
	if err != nil {
		return "", err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+adminAddr+"/admin/v1/services", strings.NewReader(`{"name":"sessionbench"}`))
	req.Header.Set("Authorization", "Bearer "+keys.AdminToken())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct{ Secret string }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Secret == "" {
		return "", fmt.Errorf("creating a service client: HTTP %d %v", resp.StatusCode, err)
	}
	return out.Secret, nil
}

// benchPhases builds the requests of each load: the three token checks and the trivial one.
func benchPhases(base string, c int, tokens []string, secret string) map[string][][]*http.Request {
	bearer := func(path string) func(i int) *http.Request {
		return func(i int) *http.Request {
			r, _ := http.NewRequest(http.MethodGet, base+path, nil)
			r.Header.Set("Authorization", "Bearer "+tokens[i])
			return r
		}
	}
	return map[string][][]*http.Request{
		"validate": spread(c, len(tokens), bearer("/api/v1/session")),
		"forward":  spread(c, len(tokens), bearer("/api/v1/forward-auth")),
		"introspect": spread(c, len(tokens), func(i int) *http.Request {
			r, _ := http.NewRequest(http.MethodPost, base+"/api/v1/introspect", strings.NewReader("token="+tokens[i]))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.Header.Set("Authorization", "Bearer "+secret)
			return r
		}),
		"trivial": spread(c, 1, func(int) *http.Request {
			r, _ := http.NewRequest(http.MethodGet, base+"/healthz", nil)
			return r
		}),
	}
}

// runPhases alternates the loads (so that drift on a shared machine falls on all of them alike)
// and returns each one's results, the node's CPU seconds under it, and the store reads of the
// validate load.
func runPhases(ctx context.Context, o options, node *nodeProc, hc *http.Client, phases map[string][][]*http.Request) (map[string]*loadResult, map[string]float64, [4]float64, error) {
	res, cpu := map[string]*loadResult{}, map[string]float64{}
	var q [4]float64 // store queries, validations, cache hits, cache misses (validate only)
	order := []string{"validate", "trivial", "forward", "introspect", "introspect", "forward", "trivial", "validate"}
	slice := o.duration / 2
	for round, name := range order {
		if ctx.Err() != nil {
			return nil, nil, q, ctx.Err()
		}
		logf("round %d: %s for %s", round+1, name, slice)
		before, err := node.scrape(ctx)
		if err != nil {
			return nil, nil, q, err
		}
		n0, _ := node.cpuSeconds()
		if res[name] == nil {
			res[name] = &loadResult{}
		}
		res[name].add(httpLoad(ctx, hc, phases[name], slice))
		n1, _ := node.cpuSeconds()
		cpu[name] += n1 - n0
		if name != "validate" {
			continue
		}
		after, err := node.scrape(ctx)
		if err != nil {
			return nil, nil, q, err
		}
		q[0] += after.storeQueries() - before.storeQueries()
		q[1] += after.sum("sessiond_validation_seconds_count") - before.sum("sessiond_validation_seconds_count")
		q[2] += after.sum("sessiond_validation_cache_total", `result="hit"`) - before.sum("sessiond_validation_cache_total", `result="hit"`)
		q[3] += after.sum("sessiond_validation_cache_total", `result="miss"`) - before.sum("sessiond_validation_cache_total", `result="miss"`)
	}
	return res, cpu, q, nil
}

func validateReport(res map[string]*loadResult, cpu map[string]float64, q [4]float64, n, users, c int, o options) map[string]any {
	triv := res["trivial"]
	out := map[string]any{
		"node":         "sessiond child process, embedded store (SQLite), in-process hub",
		"sessions":     n,
		"users":        users,
		"concurrency":  c,
		"seconds_each": o.duration.Seconds(),
	}
	for _, name := range []string{"validate", "forward", "introspect", "trivial"} {
		r := res[name]
		out[name+"_rps"] = round1(r.rps())
		out[name+"_p50_ms"] = ms(r.lat.quantile(0.50))
		out[name+"_p99_ms"] = ms(r.lat.quantile(0.99))
		out[name+"_requests"] = len(r.lat)
		out[name+"_errors"] = r.errors
		out["node_cpu_us_per_"+name] = round1(cpu[name] / float64(max(len(r.lat), 1)) * 1e6)
		if name != "trivial" {
			out["ratio_"+name+"_vs_trivial"] = round3(r.rps() / triv.rps())
		}
	}
	val := res["validate"]
	perValidation := q[0] / max(q[1], 1)
	ratio := val.rps() / triv.rps()
	out["validations_server"] = q[1]
	out["store_queries"] = q[0]
	out["store_queries_per_validation"] = round5(perValidation)
	// Each cached validation is re-read at most once per cache TTL, whatever the load.
	ttl := session.Policy{}.Defaults().CacheTTL.Seconds()
	out["cache_ttl_s"] = ttl
	out["store_queries_floor_from_ttl"] = round5(float64(n) / ttl / val.rps())
	out["cache_hits"], out["cache_misses"] = q[2], q[3]
	out["targets"] = "validate/healthz >= 0.90; store queries per validation <= 0.001; forward/healthz and introspect/healthz >= 0.85"
	out["target_ratio_met"] = ratio >= 0.90
	out["target_store_queries_met"] = perValidation <= 0.001
	out["target_forward_met"] = res["forward"].rps()/triv.rps() >= 0.85
	out["target_introspect_met"] = res["introspect"].rps()/triv.rps() >= 0.85
	return out
}

// freeLoopbackAddr returns a loopback address with a port free at the moment.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// selfCPUSeconds is this process's user+system CPU time.
func selfCPUSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }
func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }
func round5(f float64) float64 { return float64(int64(f*100000+0.5)) / 100000 }
