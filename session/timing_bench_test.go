package session_test

// Timing of the places where an attacker could learn something from how long the server takes:
// login.start and a failed login.finish for a known versus an unknown username (account
// enumeration), and token validation for tokens that are more or less right (guessing a token
// piece by piece).
//
//	go test -run '^$' -bench 'LoginStart|ValidateWrong' -benchtime 2000x -count 5 ./session/
//	SESSIOND_TIMING=1 go test -v -run TestTimingDistributions ./session/
//
// The Paired and Mixed benchmarks and the distributions interleave the kinds they compare, so
// their figures hold up on a busy machine; the separate benchmarks do not (each kind runs at
// another moment). TestTimingKnownVersusUnknown runs always (CI included) and compares the
// known and unknown distributions statistically, with bounds far from what a leak gives and far
// from what noise gives; it asserts no latency. The figures go to docs/SECURITY.md and
// BENCHMARKS.md.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/bytemare/opaque"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
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
	ke3s    [][]byte // well-formed KE3s that match no login (a wrong password's)

	token      string   // a valid token (of the first known user)
	prefix     []string // the token's first half right, the rest random
	allButLast []string // every character right but the last
	random     []string // well-formed random tokens: only the public prefix is right
}

func newTimingRig(tb testing.TB) *timingRig {
	tb.Helper()
	return newTimingRigOn(tb, timingSQLite(tb))
}

func timingSQLite(tb testing.TB) session.Store {
	tb.Helper()
	st, err := store.OpenSQLite(context.Background(), filepath.Join(tb.TempDir(), "timing.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	return st
}

// timingPostgres is a PostgreSQL store in a fresh schema of TEST_POSTGRES_URL's database, or nil
// without the variable (outside CI, where it is required).
func timingPostgres(tb testing.TB) session.Store {
	tb.Helper()
	url := os.Getenv("TEST_POSTGRES_URL")
	if url == "" {
		if os.Getenv("CI") != "" {
			tb.Fatal("TEST_POSTGRES_URL must be set in CI")
		}
		return nil
	}
	ctx := context.Background()
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	schema := "timing_" + hex.EncodeToString(b)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if c, err := pgx.Connect(context.Background(), url); err == nil {
			_, _ = c.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
			_ = c.Close(context.Background())
		}
	})
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		tb.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	st, err := store.NewPostgres(ctx, pool)
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

func newTimingRigOn(tb testing.TB, st session.Store) *timingRig {
	tb.Helper()
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
		ke3 := make([]byte, 64)
		_, _ = rand.Read(ke3)
		r.ke3s = append(r.ke3s, ke3)
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

// loginFinishFailed runs login.start (not timed: the caller times only the returned finish)
// and returns the failing login.finish to time.
func (r *timingRig) loginFinishFailed(tb testing.TB, name string, i int) func() {
	_, l, err := r.m.LoginStart(context.Background(), name, r.ke1s[i%len(r.ke1s)])
	if err != nil {
		tb.Fatal(err)
	}
	ke3 := r.ke3s[i%len(r.ke3s)]
	return func() {
		if _, _, err := r.m.LoginFinish(context.Background(), l, ke3, session.DeviceInfo{}); !errors.Is(err, session.ErrAuthFailed) {
			tb.Fatalf("a wrong KE3 did not fail: %v", err)
		}
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

// timingStores are the stores the timing of logins is compared on: SQLite, and PostgreSQL when
// TEST_POSTGRES_URL is set (always in CI).
func timingStores(tb testing.TB) map[string]session.Store {
	out := map[string]session.Store{"sqlite": timingSQLite(tb)}
	if pg := timingPostgres(tb); pg != nil {
		out["postgres"] = pg
	}
	return out
}

// interleave measures each kind n times, in a shuffled order every round, after a warm-up, so
// that every kind meets the same background noise. run returns the call to time.
func interleave(n int, kinds []string, run func(kind string, i int) func()) map[string][]time.Duration {
	rng := mrand.New(mrand.NewPCG(1, 2))
	for i := 0; i < 50; i++ {
		for _, k := range kinds {
			run(k, i)()
		}
	}
	out := map[string][]time.Duration{}
	order := slices.Clone(kinds)
	for i := 0; i < n; i++ {
		rng.Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
		for _, k := range order {
			f := run(k, i)
			start := time.Now()
			f()
			out[k] = append(out[k], time.Since(start))
		}
	}
	return out
}

// loginKinds runs login.start ("start") or a failed login.finish ("finish") for a known or an
// unknown user, as interleave wants it.
func (r *timingRig) loginKinds(tb testing.TB, op string) func(kind string, i int) func() {
	return func(kind string, i int) func() {
		name := r.known[i%len(r.known)]
		if kind == "unknown" {
			name = r.unknown[i%len(r.unknown)]
		}
		if op == "finish" {
			return r.loginFinishFailed(tb, name, i)
		}
		return func() { r.loginStart(tb, name, i) }
	}
}

// ksStatistic is the two-sample Kolmogorov–Smirnov statistic D: the largest distance between
// the two empirical distribution functions (0: the same, 1: disjoint).
func ksStatistic(a, b []time.Duration) float64 {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	var i, j int
	d := 0.0
	for i < len(x) && j < len(y) {
		v := min(x[i], y[j])
		for i < len(x) && x[i] == v {
			i++
		}
		for j < len(y) && y[j] == v {
			j++
		}
		d = math.Max(d, math.Abs(float64(i)/float64(len(x))-float64(j)/float64(len(y))))
	}
	return d
}

// ksPValue is the asymptotic p-value of D for samples of sizes n and m.
func ksPValue(d float64, n, m int) float64 {
	en := math.Sqrt(float64(n*m) / float64(n+m))
	lambda := (en + 0.12 + 0.11/en) * d
	p := 0.0
	for k := 1; k <= 100; k++ {
		term := 2 * math.Pow(-1, float64(k-1)) * math.Exp(-2*float64(k*k)*lambda*lambda)
		p += term
		if math.Abs(term) < 1e-10 {
			break
		}
	}
	return math.Min(math.Max(p, 0), 1)
}

// superiority is P(a > b) + P(a = b)/2 over all pairs: 0.5 when neither kind is slower.
func superiority(a, b []time.Duration) float64 {
	y := slices.Clone(b)
	slices.Sort(y)
	var wins float64
	for _, v := range a {
		lo, _ := slices.BinarySearch(y, v)
		hi := lo
		for hi < len(y) && y[hi] == v {
			hi++
		}
		wins += float64(lo) + float64(hi-lo)/2
	}
	return wins / float64(len(a)*len(b))
}

// TestTimingKnownVersusUnknown: login.start and a failed login.finish take as long for an
// unknown username as for a registered one, on both stores. A leak (an extra store write, a
// missing scalar multiplication) separates the distributions almost completely; noise shifts
// both alike, since the kinds are interleaved. The bounds sit between the two: the probability
// that a known user's call is the slower of a pair must stay within 0.2–0.8 (a leak gives
// ~1.0), and the median ratio within 0.5–2. KS D and its p-value are logged for the record.
func TestTimingKnownVersusUnknown(t *testing.T) {
	const n = 200
	for name, st := range timingStores(t) {
		t.Run(name, func(t *testing.T) {
			r := newTimingRigOn(t, st)
			for _, op := range []string{"start", "finish"} {
				d := interleave(n, []string{"known", "unknown"}, r.loginKinds(t, op))
				k, u := d["known"], d["unknown"]
				ratio := float64(median(k)) / float64(median(u))
				ps := superiority(k, u)
				ks := ksStatistic(k, u)
				t.Logf("login.%s on %s: median known %s unknown %s (ratio %.3f), P(known slower) %.3f, KS D %.3f p %.3g",
					op, name, median(k), median(u), ratio, ps, ks, ksPValue(ks, len(k), len(u)))
				if ps < 0.2 || ps > 0.8 || ratio < 0.5 || ratio > 2 {
					t.Errorf("login.%s on %s tells known from unknown users: P(known slower) %.3f, median ratio %.3f", op, name, ps, ratio)
				}
			}
		})
	}
}

// TestTimingDistributions prints percentiles of interleaved measurements (SESSIOND_TIMING=1):
// login.start and a failed login.finish for known and unknown usernames on both stores, and
// validation of the three kinds of wrong token.
func TestTimingDistributions(t *testing.T) {
	if os.Getenv("SESSIOND_TIMING") == "" {
		t.Skip("set SESSIOND_TIMING=1 to measure timing distributions (TestTimingKnownVersusUnknown checks them in every run)")
	}
	const n = 2000
	report := func(title string, kinds []string, d map[string][]time.Duration) {
		t.Logf("%s (%d calls each, interleaved), µs", title, n)
		t.Logf("  | %-12s | %8s | %8s | %8s | %8s | %8s |", "kind", "mean", "p10", "p50", "p90", "p99")
		for _, k := range kinds {
			s := slices.Clone(d[k])
			slices.Sort(s)
			var sum time.Duration
			for _, x := range s {
				sum += x
			}
			us := func(x time.Duration) float64 { return float64(x.Nanoseconds()) / 1000 }
			p := func(q float64) float64 { return us(s[int(q*float64(len(s)-1))]) }
			t.Logf("  | %-12s | %8.1f | %8.1f | %8.1f | %8.1f | %8.1f |", k, us(sum/time.Duration(len(s))), p(.10), p(.50), p(.90), p(.99))
		}
	}
	for name, st := range timingStores(t) {
		r := newTimingRigOn(t, st)
		for _, op := range []string{"start", "finish"} {
			kinds := []string{"known", "unknown"}
			d := interleave(n, kinds, r.loginKinds(t, op))
			report("login."+op+" on "+name, kinds, d)
			ks := ksStatistic(d["known"], d["unknown"])
			t.Logf("  median ratio known/unknown %.3f, P(known slower) %.3f, KS D %.3f (p %.3g)",
				float64(median(d["known"]))/float64(median(d["unknown"])), superiority(d["known"], d["unknown"]), ks, ksPValue(ks, n, n))
		}
		if name != "sqlite" {
			continue
		}
		tokens := []string{"prefix", "allButLast", "random"}
		sets := map[string][]string{"prefix": r.prefix, "allButLast": r.allButLast, "random": r.random}
		d := interleave(n, tokens, func(kind string, i int) func() {
			set := sets[kind]
			return func() { r.validateWrong(t, set[i%len(set)]) }
		})
		report("Validate (wrong tokens)", tokens, d)
	}
}
