// Command sessionbench measures sessiond: each scenario prints one JSON line of figures.
//
//	sessionbench -scenario sweep -sessions 100000 -database-url postgres://…
//
// Scenarios are listed by -h. Every request loop is bounded in count and time and talks only
// to addresses on this machine.
package main

import (
	"context"
	"encoding/json"
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
}

var scenarios = map[string]func(context.Context, options) (map[string]any, error){
	"sweep": sweepScenario,
}

func main() {
	var o options
	flag.StringVar(&o.scenario, "scenario", "", "scenario to run: sweep")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measuring time per phase")
	flag.IntVar(&o.concurrency, "concurrency", 8, "concurrent requests")
	flag.IntVar(&o.sessions, "sessions", 100_000, "sessions to create (sweep: expired ones)")
	flag.StringVar(&o.databaseURL, "database-url", os.Getenv("TEST_POSTGRES_URL"), "PostgreSQL URL (default $TEST_POSTGRES_URL)")
	flag.Parse()
	run, ok := scenarios[o.scenario]
	if !ok {
		fmt.Fprintf(os.Stderr, "sessionbench: unknown -scenario %q\n", o.scenario)
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := run(ctx, o)
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
