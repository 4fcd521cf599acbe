package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// scaleScenario takes the revocation measurement past one pair of nodes: three nodes share
// PostgreSQL, Redis and a key file, and hold -connections (45,000 by default) idle
// authenticated WebSocket connections, a third each. A process may open 20,000 files here, so
// the connections are held by worker processes (this program again, -scenario scale-worker),
// each with its own source addresses; this process holds only the revoking and the revoked
// connections. Each single revocation is sent from a device on node i for a device on node
// i+1 (mod 3), so every pair of nodes is measured, while every other device of the user (on
// all three nodes) is told its device list changed.
func scaleScenario(ctx context.Context, o options) (map[string]any, error) {
	if o.databaseURL == "" || o.redisURL == "" {
		return nil, errors.New("scale needs -database-url and -redis-url (or TEST_POSTGRES_URL and TEST_REDIS_URL)")
	}
	total := o.connections
	if !o.set["connections"] {
		total = 45_000
	}
	const nodesN, perWorker = 3, 15_000
	samples := o.samples
	nUsers := samples
	bulk := total - 2*nUsers
	if bulk < nUsers {
		return nil, fmt.Errorf("-connections %d is too few for %d samples", total, samples)
	}
	raiseFileLimit()
	nodes, stopNodes, err := startSharedNodes(ctx, o, nodesN, map[string]string{
		// The workers' source addresses are spread, but a worker's share of a node is larger
		// than the default per-address limit is meant for.
		"SESSIOND_CONNECTIONS_PER_ADDRESS": "100000",
	})
	if err != nil {
		return nil, err
	}
	defer stopNodes()

	// Per user: session A (logged in on node u%3; its connection there revokes), session B (on
	// node (u+1)%3; the revoked device) and session C (on node u%3), whose token the user's
	// bulk connections resume, spread over all three nodes.
	users := userNames("s", nUsers)
	if err := registerUsers(ctx, nodes[0].base, users, 16, nil); err != nil {
		return nil, err
	}
	on := func(k int) []string { // users whose A and C live on node k
		var out []string
		for u := k; u < nUsers; u += nodesN {
			out = append(out, users[u])
		}
		return out
	}
	loginsA, loginsB, loginsC := make([]login, nUsers), make([]login, nUsers), make([]login, nUsers)
	for k := 0; k < nodesN; k++ {
		a, err := loginAll(ctx, nodes[k].base, on(k), 16, nil)
		if err != nil {
			return nil, err
		}
		b, err := loginAll(ctx, nodes[(k+1)%nodesN].base, on(k), 16, nil)
		if err != nil {
			return nil, err
		}
		c, err := loginAll(ctx, nodes[k].base, on(k), 16, nil)
		if err != nil {
			return nil, err
		}
		for i, u := 0, k; u < nUsers; i, u = i+1, u+nodesN {
			loginsA[u], loginsB[u], loginsC[u] = a[i], b[i], c[i]
		}
	}

	// The bulk connections, handed to workers of at most perWorker connections each, node by
	// node in turn.
	var plans []workerPlan
	for i := 0; i < bulk; i++ {
		w := i / perWorker
		if w == len(plans) {
			plans = append(plans, workerPlan{SourceOffset: 20 + 40*w, Tokens: map[string][]string{}})
		}
		base := nodes[i%nodesN].base
		plans[w].Tokens[base] = append(plans[w].Tokens[base], loginsC[i%nUsers].token)
	}
	logf("opening %d connections in %d worker processes", bulk, len(plans))
	workers, err := startWorkers(ctx, plans)
	defer func() {
		for _, w := range workers {
			w.stop()
		}
	}()
	if err != nil {
		return nil, err
	}

	// This process: the revoking and the revoked connections.
	src := newSourceClients(perSourceAddr)
	revokers := make([]*lightConn, nUsers)
	targets := make([]*lightConn, nUsers)
	for u := 0; u < nUsers; u++ {
		if revokers[u], err = openOne(ctx, nodes[u%nodesN].base, loginsA[u].token, src, 2*u); err != nil {
			return nil, err
		}
		if targets[u], err = openOne(ctx, nodes[(u+1)%nodesN].base, loginsB[u].token, src, 2*u+1); err != nil {
			return nil, err
		}
	}
	defer closeAll(revokers)
	defer closeAll(targets)
	time.Sleep(2 * time.Second) // let the setup's notices pass

	perNode := make([]float64, nodesN)
	rss := make([]float64, nodesN)
	for k, nd := range nodes {
		m, _ := nd.scrape(ctx)
		perNode[k] = m.sum("sessiond_authenticated_connections")
		r, _ := nd.rssBytes()
		rss[k] = round1(float64(r) / (1 << 20))
	}
	logf("authenticated connections per node: %v; timing %d revocations across nodes", perNode, samples)
	scrapeAll := func() []metrics {
		out := make([]metrics, nodesN)
		for k, nd := range nodes {
			out[k], _ = nd.scrape(ctx)
		}
		return out
	}
	mBefore := scrapeAll()
	var lat latencies
	lost := 0
	pairs := map[string]latencies{}
	for u := 0; u < samples && ctx.Err() == nil; u++ {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		t0 := time.Now()
		_, err := revokers[u].call(cctx, "sessions.revoke", map[string]any{"session_id": loginsB[u].sessionID})
		if err != nil {
			cancel()
			return nil, fmt.Errorf("revoke %d: %w", u, err)
		}
		select {
		case <-targets[u].revoked:
			d := time.Unix(0, targets[u].revokedAt.Load()).Sub(t0)
			lat = append(lat, d)
			pair := fmt.Sprintf("node%d_to_node%d", u%nodesN+1, (u+1)%nodesN+1)
			pairs[pair] = append(pairs[pair], d)
		case <-cctx.Done():
			lost++
		}
		cancel()
	}
	mAfter := scrapeAll()
	bulkOpen, bulkClosed := 0, 0
	for _, w := range workers {
		r, err := w.report()
		if err != nil {
			return nil, err
		}
		bulkOpen += r.Opened
		bulkClosed += r.Closed
	}
	p99 := lat.quantile(0.99)
	out := map[string]any{
		"nodes":                          "3 sessiond child processes, PostgreSQL (fresh schema) + Redis pub/sub (fresh prefix), one key file",
		"connections":                    bulkOpen + 2*nUsers,
		"authenticated_per_node":         perNode,
		"node_rss_mib":                   rss,
		"worker_processes":               len(workers),
		"users":                          nUsers,
		"samples":                        len(lat),
		"samples_lost":                   lost,
		"bulk_connections_closed_in_run": bulkClosed,
		"revoke_notice_p50_ms":           ms(lat.quantile(0.50)),
		"revoke_notice_p99_ms":           ms(p99),
		"revoke_notice_max_ms":           ms(lat.quantile(1)),
		"targets":                        "45,000 authenticated connections over 3 nodes: revocation p99 across nodes <= 5 ms, 0 lost",
		"target_p99_met":                 lost == 0 && len(lat) > 0 && p99 <= 5*time.Millisecond,
		"target_none_lost_met":           lost == 0 && bulkClosed == 0,
		"target_connections_met":         bulkOpen+2*nUsers >= 45_000,
		"load_average":                   loadAverage(),
	}
	// Where the tail is, from the nodes' own histograms (bucket upper bounds): the durable
	// write, the publish, and the delivering node's stamp → socket.
	out["stage_store_RevokeSessions_p99_le_ms"] = quantileLE(mBefore, mAfter, "sessiond_store_operation_seconds", 0.99, `op="RevokeSessions"`)
	out["stage_publish_p99_le_ms"] = quantileLE(mBefore, mAfter, "sessiond_hub_publish_seconds", 0.99)
	out["stage_stamp_to_socket_p99_le_ms"] = quantileLE(mBefore, mAfter, "sessiond_revocation_notice_seconds", 0.99)
	out["stage_stamp_to_socket_p50_le_ms"] = quantileLE(mBefore, mAfter, "sessiond_revocation_notice_seconds", 0.50)
	for pair, l := range pairs {
		out["revoke_notice_p99_ms_"+pair] = ms(l.quantile(0.99))
	}
	return out, nil
}

// openOne opens one resumed connection from the i-th source slot of src.
func openOne(ctx context.Context, base, token string, src *sourceClients, i int) (*lightConn, error) {
	c, err := dialLight(ctx, base, src.forConn(i))
	if err != nil {
		return nil, err
	}
	if _, err := c.call(ctx, "session.resume", map[string]any{"token": token}); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// workerPlan is what a worker process is to open: per node base URL, the tokens to resume,
// from source addresses 127.0.0.(2+SourceOffset) on.
type workerPlan struct {
	SourceOffset int                 `json:"source_offset"`
	Tokens       map[string][]string `json:"tokens"`
}

type workerReport struct {
	Opened int    `json:"opened"`
	Closed int    `json:"closed"`
	Error  string `json:"error,omitempty"`
}

type workerProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
}

// startWorkers starts one worker per plan and waits until each has opened its connections.
func startWorkers(ctx context.Context, plans []workerPlan) ([]*workerProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var workers []*workerProc
	for _, p := range plans {
		cmd := exec.CommandContext(ctx, self, "-scenario", "scale-worker")
		cmd.Stderr = os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return workers, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return workers, err
		}
		if err := cmd.Start(); err != nil {
			return workers, err
		}
		w := &workerProc{cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout)}
		workers = append(workers, w)
		if err := json.NewEncoder(stdin).Encode(p); err != nil {
			return workers, err
		}
	}
	for _, w := range workers {
		var r workerReport
		if !w.out.Scan() || json.Unmarshal(w.out.Bytes(), &r) != nil {
			return workers, errors.New("a worker ended before opening its connections")
		}
		if r.Error != "" {
			return workers, fmt.Errorf("worker: %s", r.Error)
		}
	}
	return workers, nil
}

// report asks the worker how many of its connections are open and closed, then lets it end.
func (w *workerProc) report() (workerReport, error) {
	var r workerReport
	if _, err := io.WriteString(w.stdin, "report\n"); err != nil {
		return r, err
	}
	if !w.out.Scan() {
		return r, errors.New("a worker ended without its report")
	}
	return r, json.Unmarshal(w.out.Bytes(), &r)
}

func (w *workerProc) stop() {
	w.stdin.Close()
	done := make(chan struct{})
	go func() { _ = w.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = w.cmd.Process.Kill()
		<-done
	}
}

// scaleWorker is the worker side: it reads its plan from stdin, opens the connections, says
// so on stdout, then answers "report" with how many are still open and how many closed, and
// ends (closing them) when stdin closes.
func scaleWorker(ctx context.Context, _ options) (map[string]any, error) {
	raiseFileLimit()
	in := bufio.NewReader(os.Stdin)
	var p workerPlan
	line, err := in.ReadBytes('\n')
	if err == nil {
		err = json.Unmarshal(line, &p)
	}
	enc := json.NewEncoder(os.Stdout)
	if err != nil {
		return nil, err
	}
	var all []*lightConn
	var mu sync.Mutex
	var wg sync.WaitGroup
	var firstErr error
	slot := 0
	for base, tokens := range p.Tokens {
		wg.Add(1)
		sub := newSourceClients(perSourceAddr)
		sub.offset = p.SourceOffset + slot
		slot += (len(tokens) + perSourceAddr - 1) / perSourceAddr
		go func() {
			defer wg.Done()
			conns, err := openResumed(ctx, base, tokens, 32, sub)
			mu.Lock()
			defer mu.Unlock()
			all = append(all, conns...)
			if err != nil && firstErr == nil {
				firstErr = err
			}
		}()
	}
	wg.Wait()
	defer closeAll(all)
	if firstErr != nil {
		_ = enc.Encode(workerReport{Error: firstErr.Error()})
		return nil, firstErr
	}
	_ = enc.Encode(workerReport{Opened: len(all)})
	for {
		line, err := in.ReadString('\n')
		if err != nil {
			return nil, errWorkerDone
		}
		if line == "report\n" {
			closed := 0
			for _, c := range all {
				select {
				case <-c.done:
					closed++
				default:
				}
			}
			_ = enc.Encode(workerReport{Opened: len(all) - closed, Closed: closed})
		}
	}
}

// errWorkerDone ends a worker without a JSON line of its own.
var errWorkerDone = errors.New("worker done")
