// Command sessionbench measures sessiond: each scenario prints one JSON line of figures on
// stdout; progress goes to stderr.
//
//	sessionbench -scenario validate -duration 10s
//	sessionbench -scenario login -duration 10s
//	sessionbench -scenario connections -connections 10000
//	sessionbench -scenario revoke -database-url postgres://… -redis-url redis://…
//	sessionbench -scenario sweep -sessions 100000 -database-url postgres://…
//	sessionbench -scenario cache -sessions 100000
//	sessionbench -scenario scale -database-url postgres://… -redis-url redis://…
//	sessionbench -scenario rolling -database-url postgres://… -redis-url redis://…   (needs HAProxy)
//
// cache and sweep measure a session.Manager in this process; scale also starts worker
// processes (this program with -scenario scale-worker) that hold its connections.
// validate, login, connections, revoke and scale start the nodes they measure as child processes,
// built with `go build` from this module's ./cmd/sessiond (or -sessiond BINARY), each on
// 127.0.0.1:0 with a fresh data directory; see BENCHMARKS.md. Every request loop is bounded
// in count and time and talks only to loopback addresses.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"time"
)

type options struct {
	scenario    string
	duration    time.Duration
	concurrency int
	sessions    int
	databaseURL string
	redisURL    string
	connections int
	samples     int
	burstUsers  int
	sessiondBin string
	pprof       bool
	profileDir  string

	set map[string]bool // flags given on the command line
}

// intOr returns the flag's value when it was given, else the scenario's default.
func (o options) intOr(name string, def int) int {
	if !o.set[name] {
		return def
	}
	switch name {
	case "sessions":
		return o.sessions
	case "concurrency":
		return o.concurrency
	}
	panic("intOr: " + name)
}

var scenarios = map[string]func(context.Context, options) (map[string]any, error){
	"sweep":   sweepScenario,
	"cache":   cacheScenario,
	"scale":   scaleScenario,
	"rolling": rollingScenario,
	// scale-worker is started by scale itself: it holds a share of the connections.
	"scale-worker": scaleWorker,
	"validate":     validateScenario,
	"login":        loginScenario,
	"connections":  connectionsScenario,
	"revoke":       revokeScenario,
}

func main() {
	var o options
	flag.StringVar(&o.scenario, "scenario", "", "scenario to run: validate, login, connections, revoke, sweep, cache, scale, rolling")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measuring time per phase")
	flag.IntVar(&o.concurrency, "concurrency", 8, "concurrent requests (login: concurrent clients, default 16)")
	flag.IntVar(&o.sessions, "sessions", 100_000, "sessions to create (sweep: expired ones; validate: default 1000; login: users, default 2000; cache: cached sessions, default 100000)")
	flag.StringVar(&o.databaseURL, "database-url", os.Getenv("TEST_POSTGRES_URL"), "PostgreSQL URL (default $TEST_POSTGRES_URL)")
	flag.StringVar(&o.redisURL, "redis-url", os.Getenv("TEST_REDIS_URL"), "Redis URL for revoke (default $TEST_REDIS_URL)")
	flag.IntVar(&o.connections, "connections", 10_000, "idle authenticated WebSocket connections (connections, revoke; scale: default 45000; rolling: devices, default 300)")
	flag.IntVar(&o.samples, "samples", 500, "revoke, scale: single revocations to time")
	flag.IntVar(&o.burstUsers, "burst-users", 1000, "revoke: users whose sessions are all revoked at once")
	flag.StringVar(&o.sessiondBin, "sessiond", "", "sessiond binary to run (default: go build ./cmd/sessiond into a temporary directory)")
	flag.BoolVar(&o.pprof, "pprof", false, "start nodes with SESSIOND_PPROF_ADDR (net/http/pprof on loopback) to force GC before memory readings and take profiles")
	flag.StringVar(&o.profileDir, "profile-dir", "", "with -pprof: write the nodes' heap, goroutine and CPU profiles here")
	flag.Parse()
	o.set = map[string]bool{}
	flag.Visit(func(f *flag.Flag) { o.set[f.Name] = true })
	run, ok := scenarios[o.scenario]
	if !ok {
		fmt.Fprintf(os.Stderr, "sessionbench: unknown -scenario %q\n", o.scenario)
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := run(ctx, o)
	if errors.Is(err, errWorkerDone) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sessionbench:", err)
		os.Exit(1)
	}
	res["scenario"] = o.scenario
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
}

// latencies collects request durations and summarises them.
type latencies []time.Duration

func (l latencies) quantile(q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := append(latencies(nil), l...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(int(q*float64(len(s))), len(s)-1)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format(time.TimeOnly)}, args...)...)
}
