package session_test

// Timing of the two places where an attacker could learn something from how long the server
// takes: login.start for a known versus an unknown username (account enumeration) and token
// validation for tokens that are more or less right (guessing a token piece by piece).
//
//	go test -run '^$' -bench 'LoginStart|ValidateWrong' -benchtime 2000x -count 5 ./session/
//	SESSIOND_TIMING=1 go test -v -run TestTimingDistributions ./session/
//
// The Paired and Mixed benchmarks and the distributions interleave the kinds they compare, so
// their figures hold up on a busy machine; the separate benchmarks do not (each kind runs at
// another moment). Nothing here asserts a timing: machines differ. The figures go to docs/SECURITY.md and
// BENCHMARKS.md.

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/bytemare/opaque"
	"github.com/rs/zerolog"

	"github.com/sessiond/sessiond/session"
	"github.com/sessiond/sessiond/store"
)

const (
	timingUsers    = 16  // known usernames the probes cycle through (and as many unknown ones)
	timingFiller   = 100 // other accounts, so lookups run against more than a handful of rows
	timingPoolSize = 64  // pre-made KE1s and wrong tokens the loops cycle through
	timingPassword = "timing password"
)

var timingKSF = &opaque.ClientOptions{KSFSalt: make([]byte, 16), KSFLength: 64, KSFParameters: []uint64{1, 64, 1}}

// timingRig is a manager on a real SQLite store (in a temp dir) with registered users, a live
// session, and inputs made ahead of time so that only the server's work is measured.
type timingRig struct {
	m       *session.Manager
	known   []string
	unknown []string
	ke1s    [][]byte

	token      string   // a valid token (of the first known user)
	prefix     []string // the token's first half right, the rest random
	allButLast []string // every character right but the last
	random     []string // well-formed random tokens: only the public prefix is right
}

func newTimingRig(tb testing.TB) *timingRig {
	tb.Helper()
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(tb.TempDir(), "timing.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	m, err := session.NewManager(session.Config{Store: st, Keys: session.GenerateKeys(), Logger: zerolog.Nop()})
	if err != nil {
		tb.Fatal(err)
	}
	r := &timingRig{m: m}
	for i := 0; i < timingFiller; i++ {
		timingRegister(tb, m, fmt.Sprintf("filler-%03d", i))
	}
	for i := 0; i < timingUsers; i++ {
		r.known = append(r.known, fmt.Sprintf("known-user-%02d", i))
		r.unknown = append(r.unknown, fmt.Sprintf("ghost-user-%02d", i)) // same length as the known ones
		timingRegister(tb, m, r.known[i])
	}
	for i := 0; i < timingPoolSize; i++ {
		c, _ := opaque.DefaultConfiguration().Client()
		ke1, err := c.GenerateKE1([]byte(timingPassword))
		if err != nil {
			tb.Fatal(err)
		}
		r.ke1s = append(r.ke1s, ke1.Serialize())
	}
	r.token = timingLogin(tb, m, r.known[0])
	r.makeWrongTokens(tb)
	return r
}

func timingRegister(tb testing.TB, m *session.Manager, name string) {
	tb.Helper()
	ctx := context.Background()
	c, _ := opaque.DefaultConfiguration().Client()
	req, _ := c.RegistrationInit([]byte(timingPassword))
	resp, reg, err := m.RegisterStart(ctx, name, req.Serialize())
	if err != nil {
		tb.Fatal(err)
	}
	rr, _ := c.Deserialize.RegistrationResponse(resp)
	rec, _, err := c.RegistrationFinalize(rr, nil, nil, timingKSF)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := m.RegisterFinish(ctx, reg, rec.Serialize()); err != nil {
		tb.Fatal(err)
	}
}

func timingLogin(tb testing.TB, m *session.Manager, name string) string {
	tb.Helper()
	ctx := context.Background()
	c, _ := opaque.DefaultConfiguration().Client()
	ke1, _ := c.GenerateKE1([]byte(timingPassword))
	ke2b, l, err := m.LoginStart(ctx, name, ke1.Serialize())
	if err != nil {
		tb.Fatal(err)
	}
	ke2, _ := c.Deserialize.KE2(ke2b)
	ke3, _, _, err := c.GenerateKE3(ke2, nil, nil, timingKSF)
	if err != nil {
		tb.Fatal(err)
	}
	_, token, err := m.LoginFinish(ctx, l, ke3.Serialize(), session.DeviceInfo{Label: "timing"})
	if err != nil {
		tb.Fatal(err)
	}
	return token
}

// makeWrongTokens builds the three families of wrong tokens from the valid one. All are well
// formed (prefix, length, canonical base64url), so each reaches the keyed hash and the store.
func (r *timingRig) makeWrongTokens(tb testing.TB) {
	tb.Helper()
	raw, err := session.DecodeB64(r.token[len(session.TokenPrefix):])
	if err != nil || len(raw) != 32 {
		tb.Fatalf("token body: %v", err)
	}
	enc := func(b []byte) string { return session.TokenPrefix + session.EncodeB64(b) }
	for i := 0; i < timingPoolSize; i++ {
		half := slices.Clone(raw)
		_, _ = rand.Read(half[16:])
		r.prefix = append(r.prefix, enc(half))

		// The last character carries the low 4 bits of the last byte: flipping one of them
		// changes that character alone.
		last := slices.Clone(raw)
		last[31] ^= byte(1 + i%15)
		tok := enc(last)
		if tok[:len(tok)-1] != r.token[:len(r.token)-1] || tok == r.token {
			tb.Fatalf("all-but-last token differs elsewhere: %s vs %s", tok, r.token)
		}
		r.allButLast = append(r.allButLast, tok)

		rnd, _ := session.NewToken()
		r.random = append(r.random, rnd)
	}
	for _, set := range [][]string{r.prefix, r.allButLast, r.random} {
		for _, tok := range set {
			if _, err := session.ParseToken(tok); err != nil {
				tb.Fatalf("wrong token %q is not well formed: %v", tok, err)
			}
		}
	}
}

func (r *timingRig) loginStart(tb testing.TB, name string, i int) {
	if _, _, err := r.m.LoginStart(context.Background(), name, r.ke1s[i%len(r.ke1s)]); err != nil {
		tb.Fatal(err)
	}
}

func (r *timingRig) validateWrong(tb testing.TB, tok string) {
	if _, err := r.m.Validate(context.Background(), tok); !errors.Is(err, session.ErrInvalid) {
		tb.Fatalf("a wrong token validated: %v", err)
	}
}

func BenchmarkLoginStartKnown(b *testing.B) {
	r := newTimingRig(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.loginStart(b, r.known[i%len(r.known)], i)
	}
}

func BenchmarkLoginStartUnknown(b *testing.B) {
	r := newTimingRig(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.loginStart(b, r.unknown[i%len(r.unknown)], i)
	}
}

func benchmarkValidateWrong(b *testing.B, pick func(r *timingRig) []string) {
	r := newTimingRig(b)
	set := pick(r)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.validateWrong(b, set[i%len(set)])
	}
}

func BenchmarkValidateWrongTokenPrefix(b *testing.B) {
	benchmarkValidateWrong(b, func(r *timingRig) []string { return r.prefix })
}

func BenchmarkValidateWrongTokenAllButLast(b *testing.B) {
	benchmarkValidateWrong(b, func(r *timingRig) []string { return r.allButLast })
}

func BenchmarkValidateWrongTokenRandom(b *testing.B) {
	benchmarkValidateWrong(b, func(r *timingRig) []string { return r.random })
}

// BenchmarkLoginStartPaired alternates known and unknown usernames (which goes first alternates
// too) and times every call, so that both kinds see the same background load; it reports the
// mean and the median of each kind and the ratio of the medians (the medians shrug off the
// stalls a busy machine adds to a few calls). Separate benchmarks run at different moments.
func BenchmarkLoginStartPaired(b *testing.B) {
	r := newTimingRig(b)
	known, unknown := make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k, u := r.known[i%len(r.known)], r.unknown[i%len(r.unknown)]
		if i%2 == 0 {
			known = append(known, timeCall(func() { r.loginStart(b, k, i) }))
			unknown = append(unknown, timeCall(func() { r.loginStart(b, u, i) }))
		} else {
			unknown = append(unknown, timeCall(func() { r.loginStart(b, u, i) }))
			known = append(known, timeCall(func() { r.loginStart(b, k, i) }))
		}
	}
	b.StopTimer()
	reportKinds(b, []string{"known", "unknown"}, [][]time.Duration{known, unknown})
	b.ReportMetric(float64(median(known))/float64(median(unknown)), "p50-known/unknown")
}

// BenchmarkValidateWrongTokenMixed validates the three kinds of wrong token in turn (rotating
// which goes first) and reports the mean and the median of each.
func BenchmarkValidateWrongTokenMixed(b *testing.B) {
	r := newTimingRig(b)
	sets := [][]string{r.prefix, r.allButLast, r.random}
	d := make([][]time.Duration, len(sets))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range sets {
			k := (i + j) % len(sets)
			tok := sets[k][i%len(sets[k])]
			d[k] = append(d[k], timeCall(func() { r.validateWrong(b, tok) }))
		}
	}
	b.StopTimer()
	reportKinds(b, []string{"prefix", "allButLast", "random"}, d)
}

func reportKinds(b *testing.B, names []string, d [][]time.Duration) {
	for k, name := range names {
		var sum time.Duration
		for _, x := range d[k] {
			sum += x
		}
		b.ReportMetric(float64(sum.Nanoseconds())/float64(len(d[k])), name+"-ns/op")
		b.ReportMetric(float64(median(d[k]).Nanoseconds()), name+"-p50-ns")
	}
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func timeCall(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

// TestTimingDistributions prints percentiles of interleaved measurements (SESSIOND_TIMING=1):
// login.start for known and unknown usernames, and validation of the three kinds of wrong
// token. Interleaving exposes every kind to the same background noise (GC, CPU frequency).
func TestTimingDistributions(t *testing.T) {
	if os.Getenv("SESSIOND_TIMING") == "" {
		t.Skip("set SESSIOND_TIMING=1 to measure timing distributions")
	}
	const n = 2000
	r := newTimingRig(t)
	rng := mrand.New(mrand.NewPCG(1, 2))

	measure := func(kinds []string, run func(kind string, i int)) map[string][]time.Duration {
		// Warm up every path (SQLite page cache, allocator) before measuring.
		for i := 0; i < 100; i++ {
			for _, k := range kinds {
				run(k, i)
			}
		}
		out := map[string][]time.Duration{}
		order := slices.Clone(kinds)
		for i := 0; i < n; i++ {
			rng.Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
			for _, k := range order {
				start := time.Now()
				run(k, i)
				out[k] = append(out[k], time.Since(start))
			}
		}
		return out
	}
	report := func(title string, kinds []string, d map[string][]time.Duration) {
		t.Logf("%s (%d calls each, interleaved)", title, n)
		t.Logf("  %-12s %10s %10s %10s %10s %10s", "kind", "mean", "p10", "p50", "p90", "p99")
		for _, k := range kinds {
			s := slices.Clone(d[k])
			slices.Sort(s)
			var sum time.Duration
			for _, x := range s {
				sum += x
			}
			p := func(q float64) time.Duration { return s[int(q*float64(len(s)-1))] }
			t.Logf("  %-12s %10s %10s %10s %10s %10s", k, (sum / time.Duration(len(s))).Round(100*time.Nanosecond),
				p(.10).Round(100*time.Nanosecond), p(.50).Round(100*time.Nanosecond), p(.90).Round(100*time.Nanosecond), p(.99).Round(100*time.Nanosecond))
		}
	}

	logins := []string{"known", "unknown"}
	d := measure(logins, func(kind string, i int) {
		name := r.known[i%len(r.known)]
		if kind == "unknown" {
			name = r.unknown[i%len(r.unknown)]
		}
		r.loginStart(t, name, i)
	})
	report("LoginStart", logins, d)
	med := func(s []time.Duration) time.Duration {
		c := slices.Clone(s)
		slices.Sort(c)
		return c[len(c)/2]
	}
	t.Logf("  median ratio known/unknown: %.3f", float64(med(d["known"]))/float64(med(d["unknown"])))

	tokens := []string{"prefix", "allButLast", "random"}
	sets := map[string][]string{"prefix": r.prefix, "allButLast": r.allButLast, "random": r.random}
	d = measure(tokens, func(kind string, i int) {
		set := sets[kind]
		r.validateWrong(t, set[i%len(set)])
	})
	report("Validate (wrong tokens)", tokens, d)
}
