package main

import (
	"context"
	"fmt"
	"net/http"
	"syscall"
	"time"
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

// validateScenario measures token validation over HTTP (GET /api/v1/session) against the
// same HTTP stack serving a trivial endpoint (GET /healthz), on one node with the embedded
// store, and how often validations reach the store.
func validateScenario(ctx context.Context, o options) (map[string]any, error) {
	n := o.intOr("sessions", 1000)
	node, stop, err := startBenchNode(ctx, o, "validate", nil)
	if err != nil {
		return nil, err
	}
	defer stop()

	// N sessions by real logins, at most 8 per user (the default limit is 10 per user).
	users := userNames("v", (n+7)/8)
	if err := registerUsers(ctx, node.base, users, 8, nil); err != nil {
		return nil, err
	}
	who := make([]string, n)
	for i := range who {
		who[i] = users[i%len(users)]
	}
	logins, err := loginAll(ctx, node.base, who, 8, nil)
	if err != nil {
		return nil, err
	}

	c := o.concurrency
	hc := loadClient(c)
	validateReqs := spread(c, n, func(i int) *http.Request {
		r, _ := http.NewRequest(http.MethodGet, node.base+"/api/v1/session", nil)
		r.Header.Set("Authorization", "Bearer "+logins[i].token)
		return r
	})
	trivialReqs := spread(c, 1, func(int) *http.Request {
		r, _ := http.NewRequest(http.MethodGet, node.base+"/healthz", nil)
		return r
	})

	logf("warming up (1 s each)")
	if w := httpLoad(ctx, hc, validateReqs, time.Second); w.errors > 0 {
		return nil, fmt.Errorf("warm-up: %d of %d validations failed", w.errors, len(w.lat))
	}
	httpLoad(ctx, hc, trivialReqs, time.Second)

	// Alternate the two loads (V T T V) so that drift on a shared machine falls on both.
	half := o.duration / 2
	var val, triv loadResult
	var queries, validations, hits, misses float64
	var nodeCPU, selfCPU [2]float64 // seconds: [0] validate, [1] trivial
	for round, phase := range []string{"validate", "trivial", "trivial", "validate"} {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		logf("round %d: %s for %s at concurrency %d", round+1, phase, half, c)
		k := 0
		if phase == "trivial" {
			k = 1
		}
		before, err := node.scrape(ctx)
		if err != nil {
			return nil, err
		}
		n0, _ := node.cpuSeconds()
		s0 := selfCPUSeconds()
		if phase == "trivial" {
			triv.add(httpLoad(ctx, hc, trivialReqs, half))
		} else {
			val.add(httpLoad(ctx, hc, validateReqs, half))
		}
		n1, _ := node.cpuSeconds()
		nodeCPU[k] += n1 - n0
		selfCPU[k] += selfCPUSeconds() - s0
		if phase == "trivial" {
			continue
		}
		after, err := node.scrape(ctx)
		if err != nil {
			return nil, err
		}
		queries += after.storeQueries() - before.storeQueries()
		validations += after.sum("sessiond_validation_seconds_count") - before.sum("sessiond_validation_seconds_count")
		hits += after.sum("sessiond_validation_cache_total", `result="hit"`) - before.sum("sessiond_validation_cache_total", `result="hit"`)
		misses += after.sum("sessiond_validation_cache_total", `result="miss"`) - before.sum("sessiond_validation_cache_total", `result="miss"`)
	}
	if o.pprof && o.profileDir != "" {
		// A CPU profile of the node under validation load, for the record.
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = saveProfile(ctx, node.pprofBase(), "profile?seconds=5", o.profileDir, "validate-cpu.pprof")
		}()
		httpLoad(ctx, hc, validateReqs, 6*time.Second)
		<-done
	}

	ratio := val.rps() / triv.rps()
	perValidation := queries / max(validations, 1)
	return map[string]any{
		"node":                         "sessiond child process, embedded store (SQLite), in-process hub",
		"sessions":                     n,
		"users":                        len(users),
		"concurrency":                  c,
		"seconds_each":                 o.duration.Seconds(),
		"validate_rps":                 round1(val.rps()),
		"validate_p50_ms":              ms(val.lat.quantile(0.50)),
		"validate_p99_ms":              ms(val.lat.quantile(0.99)),
		"validate_requests":            len(val.lat),
		"validate_errors":              val.errors,
		"trivial_rps":                  round1(triv.rps()),
		"trivial_p50_ms":               ms(triv.lat.quantile(0.50)),
		"trivial_p99_ms":               ms(triv.lat.quantile(0.99)),
		"trivial_requests":             len(triv.lat),
		"trivial_errors":               triv.errors,
		"ratio_validate_vs_trivial":    round3(ratio),
		"node_cpu_us_per_validate":     round1(nodeCPU[0] / float64(max(len(val.lat), 1)) * 1e6),
		"node_cpu_us_per_trivial":      round1(nodeCPU[1] / float64(max(len(triv.lat), 1)) * 1e6),
		"loadgen_cpu_us_per_validate":  round1(selfCPU[0] / float64(max(len(val.lat), 1)) * 1e6),
		"loadgen_cpu_us_per_trivial":   round1(selfCPU[1] / float64(max(len(triv.lat), 1)) * 1e6),
		"validations_server":           validations,
		"store_queries":                queries,
		"store_queries_per_validation": round5(perValidation),
		// Each cached validation is re-read once per cache TTL (the default 5 s: the node runs
		// with the default policy), whatever the load: N/TTL reads per second.
		"cache_ttl_s":                  5,
		"store_queries_floor_from_ttl": round5(float64(n) / 5 / val.rps()),
		"cache_hits":                   hits,
		"cache_misses":                 misses,
		"target_ratio_met":             ratio >= 0.85,
		"target_store_queries_met":     perValidation <= 0.01,
	}, nil
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
