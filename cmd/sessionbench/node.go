package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The scenarios other than sweep run sessiond as child processes built from this module's
// ./cmd/sessiond: the figures (RSS, CPU time, /metrics) are then the node's alone, not mixed
// with the load generator's, and a node gets its own open-file limit. Every node listens on
// 127.0.0.1:0 and reports its address in its "sessiond listening" log line.

// buildSessiond returns the sessiond binary to run: -sessiond when given, else a fresh
// `go build` of github.com/sessiond/sessiond/cmd/sessiond into a temporary directory (which
// needs the go tool and the working directory inside this module, as with `go run`).
func buildSessiond(ctx context.Context, o options) (string, func(), error) {
	if o.sessiondBin != "" {
		return o.sessiondBin, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "sessionbench-bin")
	if err != nil {
		return "", nil, err
	}
	bin := filepath.Join(dir, "sessiond")
	logf("building sessiond into %s", dir)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/sessiond/sessiond/cmd/sessiond")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("go build ./cmd/sessiond (run sessionbench from inside the module, or pass -sessiond): %v\n%s", err, out)
	}
	return bin, func() { os.RemoveAll(dir) }, nil
}

// nodeProc is one sessiond child process.
type nodeProc struct {
	name    string
	base    string // http://127.0.0.1:port
	cmd     *exec.Cmd
	dataDir string
	tail    *tailBuffer
	done    chan struct{}

	pprofMu   sync.Mutex
	pprofAddr string // from the "pprof listening" line when SESSIOND_PPROF_ADDR is set
	metrics   string // http://127.0.0.1:port of the metrics listener, known before base
}

// tailBuffer keeps the last bytes a node logged, to show when it fails.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 64<<10 {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-32<<10:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// startNode runs bin with env on top of this process's environment (plus a fresh data
// directory, JSON logs and SESSIOND_ADDR=127.0.0.1:0) and waits for it to listen.
func startNode(ctx context.Context, bin, name string, env map[string]string) (*nodeProc, error) {
	dataDir, err := os.MkdirTemp("", "sessionbench-"+name)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "SESSIOND_ADDR=127.0.0.1:0", "SESSIOND_LOG_FORMAT=json", "SESSIOND_DATA_DIR="+dataDir,
		"SESSIOND_METRICS_ADDR=127.0.0.1:0")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the tool
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dataDir)
		return nil, err
	}
	n := &nodeProc{name: name, cmd: cmd, dataDir: dataDir, tail: &tailBuffer{}, done: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		// Read every line: a node blocked on a full stderr pipe would stall.
		sc := bufio.NewScanner(io.TeeReader(stderr, n.tail))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			text := sc.Text()
			listening, pprof := strings.Contains(text, "sessiond listening"), strings.Contains(text, "pprof listening")
			metrics := strings.Contains(text, "metrics listening")
			if !listening && !pprof && !metrics {
				continue
			}
			var line struct {
				Addr string `json:"addr"`
			}
			if json.Unmarshal(sc.Bytes(), &line) != nil || line.Addr == "" {
				continue
			}
			if pprof {
				n.pprofMu.Lock()
				n.pprofAddr = line.Addr
				n.pprofMu.Unlock()
				continue
			}
			if metrics {
				// Logged before "sessiond listening", so set before base is.
				n.metrics = "http://" + line.Addr
				continue
			}
			select {
			case addr <- line.Addr:
			default:
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	go func() {
		_ = cmd.Wait()
		close(n.done)
	}()
	select {
	case a := <-addr:
		n.base = "http://" + a
	case <-n.done:
		os.RemoveAll(dataDir)
		return nil, fmt.Errorf("sessiond %s exited at start:\n%s", name, n.tail.String())
	case <-time.After(60 * time.Second):
		n.kill()
		return nil, fmt.Errorf("sessiond %s did not listen within 60s:\n%s", name, n.tail.String())
	case <-ctx.Done():
		n.kill()
		return nil, ctx.Err()
	}
	logf("node %s (pid %d) listening at %s", name, cmd.Process.Pid, n.base)
	return n, nil
}

func (n *nodeProc) pid() int { return n.cmd.Process.Pid }

// pprofBase is the node's debug listener ("http://addr"), "" when it has none. It waits a
// little for the log line, which follows the listening one.
func (n *nodeProc) pprofBase() string {
	for i := 0; i < 50; i++ {
		n.pprofMu.Lock()
		a := n.pprofAddr
		n.pprofMu.Unlock()
		if a != "" {
			return "http://" + a
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ""
}

func (n *nodeProc) kill() {
	_ = n.cmd.Process.Kill()
	<-n.done
	os.RemoveAll(n.dataDir)
}

// stop asks the node to shut down (SIGINT) and kills it after 20 s.
func (n *nodeProc) stop() {
	_ = n.cmd.Process.Signal(os.Interrupt)
	select {
	case <-n.done:
	case <-time.After(20 * time.Second):
		logf("node %s did not stop within 20s; killing it", n.name)
		_ = n.cmd.Process.Kill()
		<-n.done
	}
	os.RemoveAll(n.dataDir)
}

// alive reports whether the process still runs.
func (n *nodeProc) alive() bool {
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// rssBytes is the node's resident set size (VmRSS).
func (n *nodeProc) rssBytes() (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", n.pid()))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, errors.New("no VmRSS in /proc/PID/status")
}

// cpuSeconds is the node's user+system CPU time from /proc/PID/stat (clock ticks of 1/100 s,
// the value of USER_HZ on Linux, as Prometheus's process collector assumes too).
func (n *nodeProc) cpuSeconds() (float64, error) { return procCPUSeconds(n.pid()) }

func procCPUSeconds(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may contain spaces; fields after its closing parenthesis are fixed.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc/PID/stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, errors.New("malformed /proc/PID/stat")
	}
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("malformed /proc/PID/stat")
	}
	return (utime + stime) / 100, nil
}

// metrics is one scrape of a node's /metrics: series ("name{labels}") to value.
type metrics map[string]float64

var scrapeClient = &http.Client{Timeout: 30 * time.Second}

func (n *nodeProc) scrape(ctx context.Context) (metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.metrics+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := scrapeClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: HTTP %d", resp.StatusCode)
	}
	m := metrics{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	return m, sc.Err()
}

// sum adds the series of metric name whose labels contain every one of labels
// (each written as `key="value"`).
func (m metrics) sum(name string, labels ...string) float64 {
	total := 0.0
	for k, v := range m {
		series, rest, _ := strings.Cut(k, "{")
		if series != name {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				ok = false
				break
			}
		}
		if ok {
			total += v
		}
	}
	return total
}

// quantileLE estimates quantile q of histogram name (series whose labels contain labels)
// from the growth of its buckets between before and after, summed over nodes: the upper
// bound of the first bucket holding q of the observations, in milliseconds (-1 when nothing
// was observed).
func quantileLE(before, after []metrics, name string, q float64, labels ...string) float64 {
	counts := map[float64]float64{}
	for i := range after {
		for k, v := range after[i] {
			series, rest, _ := strings.Cut(k, "{")
			if series != name+"_bucket" {
				continue
			}
			ok := true
			for _, l := range labels {
				ok = ok && strings.Contains(rest, l)
			}
			_, le, found := strings.Cut(rest, `le="`)
			if !ok || !found {
				continue
			}
			le, _, _ = strings.Cut(le, `"`)
			bound, err := strconv.ParseFloat(le, 64)
			if err != nil {
				continue
			}
			counts[bound] += v - before[i][k]
		}
	}
	bounds := make([]float64, 0, len(counts))
	for b := range counts {
		bounds = append(bounds, b)
	}
	sort.Float64s(bounds)
	if len(bounds) == 0 || counts[bounds[len(bounds)-1]] == 0 {
		return -1
	}
	total := counts[bounds[len(bounds)-1]] // +Inf holds every observation
	for _, b := range bounds {
		if counts[b] >= q*total {
			return b * 1000
		}
	}
	return -1
}

// storeQueries counts the store reads a validation can cause.
func (m metrics) storeQueries() float64 {
	return m.sum("sessiond_store_ops_total", `op="SessionByToken"`) + m.sum("sessiond_store_ops_total", `op="SessionByID"`)
}

// forceGC asks a node started with SESSIOND_PPROF_ADDR to collect garbage (the heap profile
// endpoint with gc=1 runs runtime.GC first). Without it, it does nothing and says so.
func forceGC(ctx context.Context, pprofBase string) bool {
	if pprofBase == "" {
		return false
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pprofBase+"/debug/pprof/heap?gc=1", nil)
	if err != nil {
		return false
	}
	resp, err := scrapeClient.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// saveProfile writes a pprof profile of a node (kind: heap, goroutine, profile?seconds=N) to dir.
func saveProfile(ctx context.Context, pprofBase, kind, dir, file string) error {
	if pprofBase == "" || dir == "" {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pprofBase+"/debug/pprof/"+kind, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, file))
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(f, resp.Body)
	if err == nil {
		logf("wrote %s", filepath.Join(dir, file))
	}
	return err
}

// raiseFileLimit raises this process's open-file soft limit to the hard limit; child nodes
// inherit it.
func raiseFileLimit() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			logf("cannot raise the open-file limit: %v", err)
		}
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	return rl.Cur
}

// startBenchNode builds sessiond and starts one node with the bench's limits plus extra
// (pprof on its own listener when -pprof is set). stop ends the node and removes the build.
func startBenchNode(ctx context.Context, o options, name string, extra map[string]string) (*nodeProc, func(), error) {
	bin, cleanup, err := buildSessiond(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	env := withEnv(setupLimits, extra)
	if o.pprof {
		env["SESSIOND_PPROF_ADDR"] = "127.0.0.1:0"
	}
	node, err := startNode(ctx, bin, name, env)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	return node, func() { node.stop(); cleanup() }, nil
}
