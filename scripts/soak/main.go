// Command soak holds many signed-in devices on a set of sessiond nodes for a long time while
// refreshes, revocations, logouts, logins and API calls keep running, and samples every node's
// memory and goroutines from /metrics into a CSV. scripts/soak.sh starts the nodes and runs it;
// see docs/OPERATIONS.md.
//
//	soak prepare -database-url URL     create a fresh schema, print its URL (search_path set)
//	soak cleanup -database-url URL     drop the schema named by the URL's search_path
//	soak run -nodes http://a,http://b -connections 10000 -duration 30m -csv out.csv
//
// It talks only to the addresses it is given. It exits 1 when any request failed with a code
// other than rate_limited, or a device was closed in a way nobody asked for.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sessiond/sessiond/client"
	"github.com/sessiond/sessiond/internal/clientx"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: soak prepare|cleanup|run [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "prepare", "cleanup":
		fs := flag.NewFlagSet("soak "+os.Args[1], flag.ExitOnError)
		dbURL := fs.String("database-url", "", "PostgreSQL URL")
		_ = fs.Parse(os.Args[2:])
		if os.Args[1] == "prepare" {
			err = prepare(ctx, *dbURL)
		} else {
			err = cleanup(ctx, *dbURL)
		}
	case "run":
		err = runSoak(ctx, os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

// prepare creates a fresh schema and prints the URL that selects it.
func prepare(ctx context.Context, dbURL string) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	schema := "soak_" + hex.EncodeToString(b)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		return err
	}
	u, err := url.Parse(dbURL)
	if err != nil {
		return err
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	fmt.Println(u.String())
	return nil
}

// cleanup drops the soak schema the URL selects.
func cleanup(ctx context.Context, dbURL string) error {
	u, err := url.Parse(dbURL)
	if err != nil {
		return err
	}
	schema := u.Query().Get("search_path")
	if !strings.HasPrefix(schema, "soak_") {
		return fmt.Errorf("refusing to drop schema %q: not made by soak prepare", schema)
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
	return err
}

type options struct {
	nodes       []string
	metrics     []string // the nodes' metrics listeners, in the same order
	connections int
	perUser     int
	duration    time.Duration
	sample      time.Duration
	rate        float64
	sources     []net.IP
	csvPath     string
	setupConc   int
}

// user is one account with its devices.
type user struct {
	name    string
	devices []*device
}

// device is one signed-in device: a WebSocket to a node, its session and token.
type device struct {
	u    *user
	node int
	src  int

	busy   atomic.Bool  // an action or a reconnect owns the device
	expect atomic.Int32 // the close code an action asked for (1000 logout, 4403 revoked)

	mu    sync.Mutex
	conn  *client.Conn
	token string
	id    string
}

func (d *device) state() (*client.Conn, string, string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.conn, d.token, d.id
}

// lock takes the device for an action; false when something else owns it or it is closing.
func (d *device) lock() bool {
	if d.expect.Load() != 0 || !d.busy.CompareAndSwap(false, true) {
		return false
	}
	if d.expect.Load() != 0 {
		d.busy.Store(false)
		return false
	}
	return true
}

func (d *device) unlock() { d.busy.Store(false) }

// tally counts outcomes by name.
type tally struct {
	mu sync.Mutex
	m  map[string]int64
}

func (t *tally) add(k string, n int64) {
	t.mu.Lock()
	if t.m == nil {
		t.m = map[string]int64{}
	}
	t.m[k] += n
	t.mu.Unlock()
}

func (t *tally) snapshot() map[string]int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]int64, len(t.m))
	for k, v := range t.m {
		out[k] = v
	}
	return out
}

type runner struct {
	o       options
	ctx     context.Context
	users   []*user
	devices []*device
	wsHTTP  []*http.Client // per source address, for WebSocket handshakes
	apiHTTP []*http.Client // per source address, for API calls

	ops      tally // op → count of successes
	errs     tally // "op:code" → count
	closes   tally // close code → count (expected ones included)
	stopping atomic.Bool
	steady   time.Duration // length of the steady state, once over
}

func (r *runner) fail(op string, err error) {
	if r.stopping.Load() || r.ctx.Err() != nil {
		return
	}
	r.errs.add(op+":"+codeOf(err), 1)
}

func codeOf(err error) string {
	var e *client.Error
	var de *client.DialError
	switch {
	case errors.As(err, &e):
		return e.Code
	case errors.As(err, &de):
		return "http_" + strconv.Itoa(de.Status)
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	default:
		return "transport"
	}
}

func parseOptions(args []string) (options, error) {
	fs := flag.NewFlagSet("soak run", flag.ExitOnError)
	nodes := fs.String("nodes", "", "comma-separated base URLs of the nodes")
	metrics := fs.String("metrics", "", "comma-separated base URLs of the nodes' metrics listeners (SESSIOND_METRICS_ADDR), in the order of -nodes")
	o := options{}
	fs.IntVar(&o.connections, "connections", 10000, "signed-in devices to hold")
	fs.IntVar(&o.perUser, "devices-per-user", 5, "devices per account")
	fs.DurationVar(&o.duration, "duration", 30*time.Minute, "how long to run after the ramp-up")
	fs.DurationVar(&o.sample, "sample", 30*time.Second, "sampling interval of the nodes' /metrics")
	fs.Float64Var(&o.rate, "rate", 50, "actions per second (API calls, lists, refreshes, revocations, logouts and logins)")
	sources := fs.Int("sources", 8, "source addresses 127.0.0.1 … 127.0.0.N to spread the connections over")
	fs.StringVar(&o.csvPath, "csv", "soak.csv", "CSV file of the samples")
	fs.IntVar(&o.setupConc, "setup-concurrency", 32, "concurrent registrations and logins during the ramp-up")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	for _, n := range strings.Split(*nodes, ",") {
		if n = strings.TrimRight(strings.TrimSpace(n), "/"); n != "" {
			o.nodes = append(o.nodes, n)
		}
	}
	if len(o.nodes) == 0 {
		return o, errors.New("-nodes is required")
	}
	for _, m := range strings.Split(*metrics, ",") {
		if m = strings.TrimRight(strings.TrimSpace(m), "/"); m != "" {
			o.metrics = append(o.metrics, m)
		}
	}
	if len(o.metrics) != len(o.nodes) {
		return o, errors.New("-metrics must name one metrics listener per node")
	}
	if *sources < 1 || *sources > 254 || o.connections < 2 || o.perUser < 2 || o.rate <= 0 {
		return o, errors.New("need 1 ≤ -sources ≤ 254, -connections ≥ 2, -devices-per-user ≥ 2, -rate > 0")
	}
	for i := 1; i <= *sources; i++ {
		o.sources = append(o.sources, net.IPv4(127, 0, 0, byte(i)))
	}
	return o, nil
}

func runSoak(ctx context.Context, args []string) error {
	o, err := parseOptions(args)
	if err != nil {
		return err
	}
	r := &runner{o: o, ctx: ctx}
	for _, ip := range o.sources {
		dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 10 * time.Second}
		r.wsHTTP = append(r.wsHTTP, &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}})
		r.apiHTTP = append(r.apiHTTP, &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			DialContext: dialer.DialContext, MaxIdleConns: 256, MaxIdleConnsPerHost: 64}})
	}
	nUsers := (o.connections + o.perUser - 1) / o.perUser
	run := make([]byte, 3)
	_, _ = rand.Read(run)
	for i := range nUsers {
		u := &user{name: fmt.Sprintf("soak-%x-%d", run, i)}
		for j := 0; j < o.perUser && len(r.devices) < o.connections; j++ {
			k := len(r.devices)
			d := &device{u: u, node: k % len(o.nodes), src: (k / len(o.nodes)) % len(o.sources)}
			u.devices = append(u.devices, d)
			r.devices = append(r.devices, d)
		}
		r.users = append(r.users, u)
	}

	f, err := os.Create(o.csvPath)
	if err != nil {
		return err
	}
	defer f.Close()
	w := csv.NewWriter(f)
	_ = w.Write([]string{"time", "elapsed_s", "phase", "node", "rss_bytes", "heap_inuse_bytes", "goroutines",
		"connections", "authenticated", "open_fds", "client_ops", "client_errors"})
	start := time.Now()
	var samples []sample
	takeSample := func(phase string) {
		ops, errs := sum(r.ops.snapshot()), sum(r.errs.snapshot())
		for i, base := range o.metrics {
			s, err := scrape(ctx, base)
			if err != nil {
				logf("scrape %s: %v", base, err)
				continue
			}
			s.phase, s.node, s.at = phase, i+1, time.Now()
			samples = append(samples, s)
			_ = w.Write([]string{s.at.UTC().Format(time.RFC3339), strconv.Itoa(int(s.at.Sub(start).Seconds())), phase,
				strconv.Itoa(i + 1), ff(s.rss), ff(s.heap), ff(s.goroutines), ff(s.conns), ff(s.authed), ff(s.fds),
				strconv.FormatInt(ops, 10), strconv.FormatInt(errs, 10)})
		}
		w.Flush()
	}
	takeSample("before")

	// Ramp-up: accounts, then every device signs in.
	logf("registering %d accounts, then signing in %d devices on %d nodes from %d source addresses",
		len(r.users), len(r.devices), len(o.nodes), len(o.sources))
	if err := r.parallel(len(r.users), func(i int) error { return r.register(r.users[i]) }); err != nil {
		return err
	}
	rampStart := time.Now()
	if err := r.parallel(len(r.devices), func(i int) error { return r.connect(r.devices[i], true) }); err != nil {
		return err
	}
	logf("ramp-up done: %d devices signed in in %s", len(r.devices), time.Since(rampStart).Round(time.Second))
	takeSample("start")

	// Steady state: actions at the given rate, samples every interval.
	actx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	var wg sync.WaitGroup
	actions := make(chan struct{}, 64)
	for range 32 {
		wg.Go(func() {
			for range actions {
				r.act()
			}
		})
	}
	// Samples on their own goroutine, so that a slow scrape never holds the actions back.
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		sampleTick := time.NewTicker(o.sample)
		defer sampleTick.Stop()
		lastLog := time.Now()
		for {
			select {
			case <-actx.Done():
				return
			case <-sampleTick.C:
				takeSample("run")
				if time.Since(lastLog) >= time.Minute {
					lastLog = time.Now()
					logf("%s: ops %v errors %v", time.Since(rampStart).Round(time.Second), r.ops.snapshot(), r.errs.snapshot())
				}
			}
		}
	}()
	// Actions follow a schedule (rate × elapsed), so a busy moment delays them instead of
	// dropping them; those the workers cannot take at all are counted as behind.
	steady := time.Now()
	pace := time.NewTicker(10 * time.Millisecond)
	issued := 0
loop:
	for {
		select {
		case <-actx.Done():
			break loop
		case <-pace.C:
			for due := int(time.Since(steady).Seconds() * o.rate); issued < due; issued++ {
				select {
				case actions <- struct{}{}:
				default:
					r.ops.add("behind", 1) // the load generator cannot keep the rate
				}
			}
		}
	}
	pace.Stop()
	close(actions)
	wg.Wait()
	<-sampled
	r.steady = time.Since(steady)
	takeSample("end")
	r.stopping.Store(true)
	for _, d := range r.devices {
		if c, _, _ := d.state(); c != nil {
			d.expect.Store(1000)
			_ = c.Close()
		}
	}

	res := r.summary(samples, time.Since(rampStart))
	out, _ := json.MarshalIndent(res, "", "  ")
	fmt.Println(string(out))
	if bad := res["unexpected_errors"].(int64); bad > 0 {
		return fmt.Errorf("%d unexpected errors", bad)
	}
	return nil
}

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

func ff(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// parallel runs fn(0..n-1) with the setup concurrency and returns the first error.
func (r *runner) parallel(n int, fn func(int) error) error {
	var next atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for range r.o.setupConc {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || r.ctx.Err() != nil {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		})
	}
	wg.Wait()
	if first == nil {
		first = r.ctx.Err()
	}
	return first
}

func (r *runner) dialOpts(d *device) client.Options {
	return clientx.Cheap(client.Options{HTTPClient: r.wsHTTP[d.src], Header: http.Header{"User-Agent": {"sessiond-soak/1"}}})
}

func (r *runner) register(u *user) error {
	d := u.devices[0]
	ctx, cancel := context.WithTimeout(r.ctx, time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, r.o.nodes[d.node], r.dialOpts(d))
	if err != nil {
		return fmt.Errorf("register %s: %w", u.name, err)
	}
	defer c.Close()
	if _, _, err := c.Register(ctx, u.name, "soak password"); err != nil {
		return fmt.Errorf("register %s: %w", u.name, err)
	}
	return nil
}

// connect opens the device's connection: a new login when fresh (or when its session has
// ended), else a resume with its token. It starts the watcher of the new connection.
func (r *runner) connect(d *device, fresh bool) error {
	ctx, cancel := context.WithTimeout(r.ctx, time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, r.o.nodes[d.node], r.dialOpts(d))
	if err != nil {
		r.fail("dial", err)
		return err
	}
	_, token, _ := d.state()
	if !fresh && token != "" {
		if _, err := c.Resume(ctx, token); err == nil {
			r.ops.add("resume", 1)
			d.mu.Lock()
			d.conn = c
			d.mu.Unlock()
			go r.watch(d, c)
			return nil
		} else if !client.IsCode(err, "session_invalid") {
			r.fail("resume", err)
			c.Close()
			return err
		}
	}
	res, err := c.Login(ctx, d.u.name, "soak password", "")
	if err != nil {
		r.fail("login", err)
		c.Close()
		return err
	}
	r.ops.add("login", 1)
	d.mu.Lock()
	d.conn, d.token, d.id = c, res.Session.Token, res.Session.ID
	d.mu.Unlock()
	go r.watch(d, c)
	return nil
}

// watch reads the connection's notices (answering refresh prompts as a device would) and, when
// it ends, reconnects: a new login after a logout or revocation, a resume otherwise.
func (r *runner) watch(d *device, c *client.Conn) {
	for m := range c.Notices() {
		switch m.Type {
		case "notice.refresh_due":
			if d.lock() {
				r.refresh(d)
				d.unlock()
			}
		case "error":
			r.fail("notice", &client.Error{Code: m.Code, Message: m.Msg})
		}
	}
	<-c.Done() // the notices end just before the close code is known
	code := c.CloseCode()
	want := d.expect.Load()
	if r.stopping.Load() || r.ctx.Err() != nil {
		return
	}
	r.closes.add(strconv.Itoa(code), 1)
	if int32(code) != want {
		r.errs.add("close:"+strconv.Itoa(code), 1)
	}
	// Take the device back from whatever action may still hold it.
	for !d.busy.CompareAndSwap(false, true) {
		time.Sleep(5 * time.Millisecond)
	}
	defer d.unlock()
	fresh := want == 1000 || want == 4403 || code == 4401 || code == 4403
	for attempt := 0; r.ctx.Err() == nil && !r.stopping.Load(); attempt++ {
		if err := r.connect(d, fresh); err == nil {
			break
		}
		time.Sleep(min(time.Duration(attempt+1)*100*time.Millisecond, 2*time.Second))
	}
	d.expect.Store(0)
}

// act runs one randomly chosen action on a random device.
func (r *runner) act() {
	d := r.devices[mrand.IntN(len(r.devices))]
	if !d.lock() {
		r.ops.add("skipped_busy", 1)
		return
	}
	defer d.unlock()
	c, token, _ := d.state()
	ctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
	defer cancel()
	switch p := mrand.IntN(100); {
	case p < 40: // an API call with the token
		api := client.NewAPI(r.o.nodes[d.node], token)
		api.HTTP = r.apiHTTP[d.src]
		if _, err := api.Session(ctx); err != nil {
			r.fail("api", err)
			return
		}
		r.ops.add("api", 1)
	case p < 55:
		if _, err := c.Sessions(ctx); err != nil {
			r.fail("list", err)
			return
		}
		r.ops.add("list", 1)
	case p < 80:
		r.refresh(d)
	case p < 90: // revoke a sibling device of the same account
		sib := d.u.devices[mrand.IntN(len(d.u.devices))]
		if sib == d || !sib.lock() {
			r.ops.add("skipped_busy", 1)
			return
		}
		_, _, sid := sib.state()
		sib.expect.Store(4403)
		_, err := c.Revoke(ctx, sid)
		sib.unlock()
		if err != nil {
			sib.expect.Store(0)
			r.fail("revoke", err)
			return
		}
		r.ops.add("revoke", 1)
	default: // sign out; the watcher signs in again on a new connection
		d.expect.Store(1000)
		if err := c.Logout(ctx); err != nil {
			d.expect.Store(0)
			r.fail("logout", err)
			return
		}
		r.ops.add("logout", 1)
	}
}

func (r *runner) refresh(d *device) {
	c, _, _ := d.state()
	ctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
	defer cancel()
	res, err := c.Refresh(ctx)
	if err != nil {
		r.fail("refresh", err)
		return
	}
	d.mu.Lock()
	d.token = res.Token
	d.mu.Unlock()
	r.ops.add("refresh", 1)
}

// sample is one node's figures at one time.
type sample struct {
	at                                        time.Time
	phase                                     string
	node                                      int
	rss, heap, goroutines, conns, authed, fds float64
}

var scrapeClient = &http.Client{Timeout: 10 * time.Second}

func scrape(ctx context.Context, base string) (sample, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	resp, err := scrapeClient.Do(req)
	if err != nil {
		return sample{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return sample{}, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	want := map[string]*float64{}
	var s sample
	want["process_resident_memory_bytes"] = &s.rss
	want["go_memstats_heap_inuse_bytes"] = &s.heap
	want["go_goroutines"] = &s.goroutines
	want["sessiond_connections"] = &s.conns
	want["sessiond_authenticated_connections"] = &s.authed
	want["process_open_fds"] = &s.fds
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if p, hit := want[name]; ok && hit {
			if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
				*p = v
			}
		}
	}
	return s, sc.Err()
}

// summary compares each node's first steady sample with its last, and lists the outcomes.
func (r *runner) summary(samples []sample, ran time.Duration) map[string]any {
	nodes := []map[string]any{}
	for i := range r.o.nodes {
		var first, last *sample
		for j := range samples {
			s := &samples[j]
			if s.node != i+1 || s.phase == "before" {
				continue
			}
			if first == nil {
				first = s
			}
			last = s
		}
		if first == nil {
			continue
		}
		nodes = append(nodes, map[string]any{
			"node":          i + 1,
			"rss_mib_start": mib(first.rss), "rss_mib_end": mib(last.rss),
			"heap_inuse_mib_start": mib(first.heap), "heap_inuse_mib_end": mib(last.heap),
			"goroutines_start": first.goroutines, "goroutines_end": last.goroutines,
			"connections_start": first.conns, "connections_end": last.conns,
		})
	}
	errs := r.errs.snapshot()
	var unexpected int64
	keys := make([]string, 0, len(errs))
	for k, v := range errs {
		keys = append(keys, k)
		if !strings.HasSuffix(k, ":rate_limited") {
			unexpected += v
		}
	}
	sort.Strings(keys)
	return map[string]any{
		"nodes": len(r.o.nodes), "connections": r.o.connections, "accounts": len(r.users),
		"ran_s": int(ran.Seconds()), "rate_per_s": r.o.rate, "actions_per_s": r.actionRate(),
		"per_node": nodes, "ops": r.ops.snapshot(), "errors": errs, "closes": r.closes.snapshot(),
		"unexpected_errors": unexpected,
	}
}

// actionRate is the rate of actions achieved in the steady state.
func (r *runner) actionRate() float64 {
	ops := r.ops.snapshot()
	n := ops["api"] + ops["list"] + ops["refresh"] + ops["revoke"] + ops["logout"] + ops["skipped_busy"]
	for k, v := range r.errs.snapshot() {
		if op, _, _ := strings.Cut(k, ":"); op == "api" || op == "list" || op == "refresh" || op == "revoke" || op == "logout" {
			n += v
		}
	}
	if r.steady <= 0 {
		return 0
	}
	return float64(int(float64(n)/r.steady.Seconds()*10)) / 10
}

func mib(b float64) float64 { return float64(int(b/(1<<20)*10)) / 10 }

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format(time.TimeOnly)}, args...)...)
}
