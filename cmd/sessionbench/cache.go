package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	rtmetrics "runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/rs/zerolog"

	"github.com/sessiond/sessiond/session"
	"github.com/sessiond/sessiond/store"
)

// cacheScenario measures what a large validation cache costs every validation once the
// garbage collector is counted: a Manager on SQLite holds n sessions, all validated once so
// that each is cached, then validations run over them while another goroutine allocates the
// way request handling does (short-lived, pointer-holding garbage at a fixed rate), so that
// collections happen during the measurement. The same is done with 1,000 and with n (100,000
// by default) cached sessions, in one process, and the p99s are compared.
func cacheScenario(ctx context.Context, o options) (map[string]any, error) {
	big := o.intOr("sessions", 100_000)
	const small = 1_000
	dir, err := os.MkdirTemp("", "sessionbench-cache-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	st, err := store.OpenSQLite(ctx, filepath.Join(dir, "cache.db"))
	if err != nil {
		return nil, err
	}
	defer st.Close()
	keys := session.GenerateKeys()
	m, err := session.NewManager(session.Config{
		Store: st, Keys: keys, Logger: zerolog.Nop(),
		Policy: session.Policy{CacheTTL: time.Hour, MaxSessions: -1},
	})
	if err != nil {
		return nil, err
	}

	logf("writing %d sessions to the store", big)
	start := time.Now()
	tokens, err := writeSessions(ctx, st, keys, big)
	if err != nil {
		return nil, err
	}
	logf("created in %s", time.Since(start).Round(time.Millisecond))

	measure := func(n int) (latencies, gcStats, error) {
		set := tokens.first(n)
		// Every token of the set validated once, so that each is in the cache.
		for i := 0; i < set.n; i++ {
			if _, err := m.Validate(ctx, set.at(i)); err != nil {
				return nil, gcStats{}, err
			}
		}
		runtime.GC()
		before := readGC()
		lat, err := validateUnderGarbage(ctx, m, set, o.concurrency, o.duration)
		return lat, readGC().since(before), err
	}
	// Small, big, small again: the second small run shows the machine did not drift.
	l1, g1, err := measure(small)
	if err != nil {
		return nil, err
	}
	lb, gb, err := measure(big)
	if err != nil {
		return nil, err
	}
	l2, g2, err := measure(small)
	if err != nil {
		return nil, err
	}
	smallAll := append(append(latencies(nil), l1...), l2...)
	ratio := float64(lb.quantile(0.99)) / float64(smallAll.quantile(0.99))

	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return map[string]any{
		"cached_small":         small,
		"cached_big":           big,
		"concurrency":          o.concurrency,
		"small_p50_us":         us(smallAll.quantile(0.50)),
		"small_p99_us":         us(smallAll.quantile(0.99)),
		"small_p99_us_runs":    []float64{us(l1.quantile(0.99)), us(l2.quantile(0.99))},
		"big_p50_us":           us(lb.quantile(0.50)),
		"big_p99_us":           us(lb.quantile(0.99)),
		"small_validations":    len(smallAll),
		"big_validations":      len(lb),
		"small_gc_cycles":      g1.cycles + g2.cycles,
		"big_gc_cycles":        gb.cycles,
		"small_gc_cpu_ms":      round1(g1.cpuMS + g2.cpuMS),
		"big_gc_cpu_ms":        round1(gb.cpuMS),
		"heap_mib":             round1(float64(ms.HeapAlloc) / (1 << 20)),
		"p99_ratio":            round3(ratio),
		"targets":              "validation p99 with 100,000 cached sessions / with 1,000 <= 1.3",
		"target_p99_ratio_met": ratio <= 1.3,
		"load_average":         loadAverage(),
	}, nil
}

// writeSessions writes n live sessions straight to the store, 1,000 per user, each with a
// fresh token and a sealed-looking device record of a usual size (validation does not open
// it), and returns their tokens. Logins would make the same rows at ~1,000 times the cost.
func writeSessions(ctx context.Context, st session.Store, keys *session.Keys, n int) (tokenSet, error) {
	const perUser = 1_000
	now := time.Now()
	var tokens tokenSet
	var user session.User
	for i := 0; i < n; i++ {
		if i%perUser == 0 {
			user = session.User{ID: session.NewID(), Username: "cache-" + session.NewID(), Record: []byte{0},
				VaultID: session.NewID(), CreatedAt: now, CredVersion: 1}
			if err := st.CreateUser(ctx, user); err != nil {
				return tokenSet{}, err
			}
		}
		tok, raw := session.NewToken()
		h := keys.HashToken(raw)
		device := make([]byte, 160)
		_, _ = rand.Read(device)
		s := session.Session{ID: session.NewID(), UserID: user.ID, VaultID: user.VaultID, TokenHash: h[:],
			Device: device, CreatedAt: now, LastSeenAt: now, IdleExpiresAt: now.Add(24 * time.Hour),
			ExpiresAt: now.Add(24 * time.Hour), CredVersion: 1}
		if _, err := st.CreateSession(ctx, s, session.Limit{}); err != nil {
			return tokenSet{}, err
		}
		tokens.add(tok)
	}
	return tokens, nil
}

// tokenSet holds tokens (all of one length) back to back in one byte slice: like a node,
// which holds no tokens, the measuring process then gives the collector nothing to mark for
// them, so that what a collection costs is the node's own data.
type tokenSet struct {
	buf    []byte
	n, len int
}

func (t *tokenSet) add(tok string) {
	t.len = len(tok)
	t.buf = append(t.buf, tok...)
	t.n++
}

func (t tokenSet) first(n int) tokenSet { return tokenSet{buf: t.buf[:n*t.len], n: n, len: t.len} }

// at returns token i without copying it.
func (t tokenSet) at(i int) string { return unsafe.String(&t.buf[i*t.len], t.len) }

// validateUnderGarbage runs validations of the tokens on c goroutines for d, while one more
// goroutine allocates small linked objects at a steady rate and drops them.
func validateUnderGarbage(ctx context.Context, m *session.Manager, tokens tokenSet, c int, d time.Duration) (latencies, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	go churn(ctx)
	var mu sync.Mutex
	var all latencies
	var firstErr error
	var wg sync.WaitGroup
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			local := make(latencies, 0, 1<<16)
			for i := w * 7919; ctx.Err() == nil; i++ {
				t := time.Now()
				_, err := m.Validate(context.Background(), tokens.at(i%tokens.n))
				local = append(local, time.Since(t))
				if err != nil {
					mu.Lock()
					firstErr = fmt.Errorf("validation: %w", err)
					mu.Unlock()
					return
				}
			}
			mu.Lock()
			all = append(all, local...)
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	return all, firstErr
}

type garbageNode struct {
	next *garbageNode
	buf  [48]byte
}

// sink keeps the churn's allocations from being optimised away.
var sink atomic.Pointer[garbageNode]

// churn allocates about 32 MiB/s of short-lived linked objects: the garbage that HTTP and
// WebSocket handling makes, which is what sets the pace of collections on a node.
func churn(ctx context.Context) {
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for ctx.Err() == nil {
		<-t.C
		var head *garbageNode
		for i := 0; i < 512; i++ { // 512 × 64 B per ms
			head = &garbageNode{next: head}
		}
		sink.Store(head)
	}
}

type gcStats struct {
	cycles uint32
	cpuMS  float64
}

// readGC reads the collections so far and the CPU time they took (mark assists, background
// and idle marking, pauses).
func readGC() gcStats {
	s := []rtmetrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}, {Name: "/cpu/classes/gc/total:cpu-seconds"}}
	rtmetrics.Read(s)
	return gcStats{cycles: uint32(s[0].Value.Uint64()), cpuMS: s[1].Value.Float64() * 1000}
}

func (g gcStats) since(before gcStats) gcStats {
	return gcStats{cycles: g.cycles - before.cycles, cpuMS: g.cpuMS - before.cpuMS}
}

// loadAverage is the one-minute load average, or -1 where /proc/loadavg cannot be read.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	var l float64
	if _, err := fmt.Sscan(string(b), &l); err != nil {
		return -1
	}
	return l
}

func us(d time.Duration) float64 { return round1(float64(d.Nanoseconds()) / 1000) }
