package main

import (
	"context"
	"fmt"
	"time"
)

// perSourceAddr is how many connections to one node leave from one source address: below the
// node's default per-address limit (2000) and far below the ephemeral ports of an address.
const perSourceAddr = 1500

// memReading is a node's memory at one moment.
type memReading struct {
	rss, heapInuse, stackInuse, goroutines, conns, authConns float64
	freeRetained                                             float64 // heap pages free but not yet returned to the OS
}

// readMemory settles the node and reads its memory. With a debug listener it forces four
// collections first, so that garbage does not count, nor the unused part of a goroutine stack
// that grew (a collection halves such a stack at most once).
func readMemory(ctx context.Context, node *nodeProc, pprofBase string) (memReading, error) {
	for i := 0; i < 4; i++ {
		forceGC(ctx, pprofBase)
		time.Sleep(500 * time.Millisecond)
	}
	rss, err := node.rssBytes()
	if err != nil {
		return memReading{}, err
	}
	m, err := node.scrape(ctx)
	if err != nil {
		return memReading{}, err
	}
	return memReading{
		rss: float64(rss), heapInuse: m.sum("go_memstats_heap_inuse_bytes"), stackInuse: m.sum("go_memstats_stack_inuse_bytes"),
		freeRetained: m.sum("go_memstats_heap_idle_bytes") - m.sum("go_memstats_heap_released_bytes"),
		goroutines:   m.sum("go_goroutines"), conns: m.sum("sessiond_connections"), authConns: m.sum("sessiond_authenticated_connections"),
	}, nil
}

// connectionsScenario measures what an idle authenticated WebSocket connection costs a node:
// its RSS and Go heap with N connections minus with none, divided by N. The node runs as its
// own process (it needs N file descriptors of its own) with the embedded store.
func connectionsScenario(ctx context.Context, o options) (map[string]any, error) {
	n := o.connections
	limit := raiseFileLimit()
	if uint64(n)+500 > limit {
		return nil, fmt.Errorf("-connections %d needs an open-file limit above %d (this process's is %d)", n, n+500, limit)
	}
	// The debug listener (net/http/pprof) lets the tool force a collection before each reading.
	node, stop, err := startBenchNode(ctx, o, "connections", map[string]string{"SESSIOND_PPROF_ADDR": "127.0.0.1:0"})
	if err != nil {
		return nil, err
	}
	defer stop()
	pprofBase := node.pprofBase()
	if pprofBase == "" {
		logf("this sessiond has no SESSIOND_PPROF_ADDR: memory is read without forcing a collection")
	}

	// A few real logins; the N connections resume those sessions (several connections per
	// session, as a user's tabs would).
	const sessions = 20
	users := userNames("c", 4)
	if err := registerUsers(ctx, node.base, users, 4, nil); err != nil {
		return nil, err
	}
	who := make([]string, sessions)
	for i := range who {
		who[i] = users[i%len(users)]
	}
	logins, err := loginAll(ctx, node.base, who, 4, nil)
	if err != nil {
		return nil, err
	}

	time.Sleep(2 * time.Second)
	base, err := readMemory(ctx, node, pprofBase)
	if err != nil {
		return nil, err
	}
	logf("with 0 connections: RSS %.1f MiB, heap in use %.1f MiB, %v goroutines", base.rss/(1<<20), base.heapInuse/(1<<20), base.goroutines)

	tokens := make([]string, n)
	for i := range tokens {
		tokens[i] = logins[i%len(logins)].token
	}
	src := newSourceClients(perSourceAddr)
	conns, err := openResumed(ctx, node.base, tokens, 32, src)
	if err != nil {
		return nil, err
	}
	defer closeAll(conns)

	// Idle: let timers and the runtime settle, then read.
	time.Sleep(3 * time.Second)
	with, err := readMemory(ctx, node, pprofBase)
	if err != nil {
		return nil, err
	}
	logf("with %d connections: RSS %.1f MiB, heap in use %.1f MiB, stacks %.1f MiB, %v goroutines", n, with.rss/(1<<20), with.heapInuse/(1<<20), with.stackInuse/(1<<20), with.goroutines)
	if o.profileDir != "" {
		_ = saveProfile(ctx, pprofBase, "heap", o.profileDir, "connections-heap.pprof")
		_ = saveProfile(ctx, pprofBase, "goroutine", o.profileDir, "connections-goroutine.pprof")
	}
	closed := 0
	for _, c := range conns {
		select {
		case <-c.done:
			closed++
		default:
		}
	}
	per := func(a, b float64) float64 { return round1((a - b) / float64(n) / 1024) }
	rssPer := (with.rss - base.rss) / float64(n) / 1024
	return map[string]any{
		"node":                        "sessiond child process, embedded store (SQLite), in-process hub",
		"connections":                 n,
		"sessions":                    sessions,
		"source_addresses":            (n + perSourceAddr - 1) / perSourceAddr,
		"forced_gc_before_readings":   pprofBase != "",
		"node_connections_gauge":      with.conns,
		"node_authenticated_gauge":    with.authConns,
		"closed_during_run":           closed,
		"rss_mib_with_0":              round1(base.rss / (1 << 20)),
		"rss_mib_with_n":              round1(with.rss / (1 << 20)),
		"rss_kib_per_conn":            round1(rssPer),
		"heap_inuse_kib_per_conn":     per(with.heapInuse, base.heapInuse),
		"stack_inuse_kib_per_conn":    per(with.stackInuse, base.stackInuse),
		"free_retained_kib_per_conn":  per(with.freeRetained, base.freeRetained),
		"goroutines_per_conn":         round3((with.goroutines - base.goroutines) / float64(n)),
		"targets":                     "RSS per idle authenticated connection <= 12 KiB",
		"target_rss_kib_per_conn_met": rssPer <= 12,
	}, nil
}
