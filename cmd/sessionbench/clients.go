package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/sessiond/sessiond/client"
	"github.com/sessiond/sessiond/internal/clientx"
)

// benchPassword is every load-test account's password. Accounts are registered with the cheap
// client key stretching (internal/clientx.Cheap): Argon2id runs on the client only, so the server's
// work per login is the same as with the interoperable parameters, and the load generator,
// which shares the machine with the node, does not spend its CPU on 64 MiB hashes.
const benchPassword = "sessionbench password"

// sourceClients hands out HTTP clients whose connections leave from 127.0.0.2, 127.0.0.3, …,
// perAddr connections each, so that a node's per-address connection limit
// (SESSIOND_CONNECTIONS_PER_ADDRESS, default 2000) and the ephemeral ports of one source
// address are never the bottleneck. Only loopback addresses are used.
type sourceClients struct {
	perAddr int
	offset  int // the first address is 127.0.0.(2+offset)
	mu      sync.Mutex
	clients map[int]*http.Client
}

func newSourceClients(perAddr int) *sourceClients {
	return &sourceClients{perAddr: perAddr, clients: map[int]*http.Client{}}
}

// forConn returns the client for the i-th connection of a node.
func (s *sourceClients) forConn(i int) *http.Client {
	k := s.offset + i/s.perAddr
	if k > 252 {
		k = 252 // 127.0.0.254 at most; unreachable with the limits used here
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.clients[k]; ok {
		return c
	}
	ip := net.IPv4(127, 0, 0, byte(2+k))
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 10 * time.Second}
	c := &http.Client{Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 4}}
	s.clients[k] = c
	return c
}

// login is one session made by a real OPAQUE login.
type login struct {
	user      string
	token     string
	sessionID string
}

// runParallel runs f(i) for i in [0,n) on conc goroutines, stopping at the first error.
func runParallel(ctx context.Context, n, conc int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(ctx, i); err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return firstErr
}

// registerUsers registers every name (with the cheap client KSF) on base.
func registerUsers(ctx context.Context, base string, names []string, conc int, hc *http.Client) error {
	start := time.Now()
	err := runParallel(ctx, len(names), conc, func(ctx context.Context, i int) error {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		c, err := client.Dial(cctx, base, clientx.Cheap(client.Options{HTTPClient: hc}))
		if err != nil {
			return fmt.Errorf("register %s: %w", names[i], err)
		}
		defer c.Close()
		if _, _, err := c.Register(cctx, names[i], benchPassword); err != nil {
			return fmt.Errorf("register %s: %w", names[i], err)
		}
		return nil
	})
	if err == nil {
		logf("registered %d users in %s", len(names), time.Since(start).Round(time.Millisecond))
	}
	return err
}

// loginOnce logs user in on a fresh connection, which it closes (the session stays).
func loginOnce(ctx context.Context, base, user string, hc *http.Client) (login, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := client.Dial(cctx, base, clientx.Cheap(client.Options{HTTPClient: hc}))
	if err != nil {
		return login{}, err
	}
	defer c.Close()
	res, err := c.Login(cctx, user, benchPassword, "sessionbench")
	if err != nil {
		return login{}, fmt.Errorf("login %s: %w", user, err)
	}
	return login{user: user, token: res.Session.Token, sessionID: res.Session.ID}, nil
}

// loginAll logs in once per entry of users, conc at a time.
func loginAll(ctx context.Context, base string, users []string, conc int, hc *http.Client) ([]login, error) {
	start := time.Now()
	out := make([]login, len(users))
	err := runParallel(ctx, len(users), conc, func(ctx context.Context, i int) error {
		l, err := loginOnce(ctx, base, users[i], hc)
		out[i] = l
		return err
	})
	if err == nil {
		logf("%d logins in %s", len(users), time.Since(start).Round(time.Millisecond))
	}
	return out, err
}

// lightConn is an idle device connection held by the load generator: a bare WebSocket with a
// reader goroutine that notes when notice.revoked arrives. It costs the tool far less than a
// client.Conn, which matters at 10,000 connections.
type lightConn struct {
	ws        *websocket.Conn
	seq       atomic.Uint64
	replies   chan []byte
	revokedAt atomic.Int64 // unix ns when notice.revoked arrived; 0 before
	revoked   chan struct{}
	done      chan struct{}
	closeCode atomic.Int32
}

func dialLight(ctx context.Context, base string, hc *http.Client) (*lightConn, error) {
	url := "ws" + strings.TrimPrefix(base, "http") + "/ws"
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		HTTPClient: hc, Subprotocols: []string{client.Subprotocol}, CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		return nil, err
	}
	ws.SetReadLimit(1 << 20)
	c := &lightConn{ws: ws, replies: make(chan []byte, 4), revoked: make(chan struct{}), done: make(chan struct{})}
	go c.readLoop()
	return c, nil
}

func (c *lightConn) readLoop() {
	defer close(c.done)
	for {
		_, data, err := c.ws.Read(context.Background())
		at := time.Now()
		if err != nil {
			c.closeCode.Store(int32(websocket.CloseStatus(err)))
			return
		}
		var m struct {
			Type string `json:"type"`
			ID   string `json:"id"`
		}
		if json.Unmarshal(data, &m) != nil {
			continue
		}
		switch {
		case m.Type == "notice.revoked":
			if c.revokedAt.CompareAndSwap(0, at.UnixNano()) {
				close(c.revoked)
			}
		case m.ID != "":
			select {
			case c.replies <- data:
			default: // nobody waits for it any more
			}
		}
	}
}

// call sends a request and returns its reply; an error reply is an error.
func (c *lightConn) call(ctx context.Context, typ string, fields map[string]any) ([]byte, error) {
	id := "b" + strconv.FormatUint(c.seq.Add(1), 10)
	msg := map[string]any{"type": typ, "id": id}
	for k, v := range fields {
		msg[k] = v
	}
	data, _ := json.Marshal(msg)
	if err := c.ws.Write(ctx, websocket.MessageText, data); err != nil {
		return nil, err
	}
	for {
		select {
		case r := <-c.replies:
			var m struct {
				Type string `json:"type"`
				ID   string `json:"id"`
				Code string `json:"code"`
			}
			_ = json.Unmarshal(r, &m)
			if m.ID != id {
				continue // a late reply to an earlier call
			}
			if m.Type == "error" {
				return r, fmt.Errorf("%s: %s", typ, m.Code)
			}
			return r, nil
		case <-c.done:
			return nil, fmt.Errorf("%s: connection closed (%d)", typ, c.closeCode.Load())
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (c *lightConn) close() {
	_ = c.ws.CloseNow()
	<-c.done
}

// openResumed opens n connections to base, the i-th authenticated by session.resume with
// tokens[i], conc at a time, leaving from the source addresses of src.
func openResumed(ctx context.Context, base string, tokens []string, conc int, src *sourceClients) ([]*lightConn, error) {
	conns := make([]*lightConn, len(tokens))
	var opened atomic.Int64
	start := time.Now()
	stopProgress := make(chan struct{})
	go func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				logf("  %d/%d connections to %s", opened.Load(), len(tokens), base)
			case <-stopProgress:
				return
			}
		}
	}()
	err := runParallel(ctx, len(tokens), conc, func(ctx context.Context, i int) error {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		c, err := dialLight(cctx, base, src.forConn(i))
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		conns[i] = c
		if _, err := c.call(cctx, "session.resume", map[string]any{"token": tokens[i]}); err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		opened.Add(1)
		return nil
	})
	close(stopProgress)
	if err != nil {
		closeAll(conns)
		return nil, err
	}
	logf("%d connections to %s open and resumed in %s", len(tokens), base, time.Since(start).Round(time.Millisecond))
	return conns, nil
}

// closeAll closes the connections that were opened, concurrently.
func closeAll(conns []*lightConn) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, c := range conns {
		if c == nil {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			c.close()
			<-sem
		}()
	}
	wg.Wait()
}

// userNames returns n distinct user names for this run.
func userNames(prefix string, n int) []string {
	run := strconv.FormatInt(time.Now().UnixNano()%1_000_000_000, 36)
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%s-%d", prefix, run, i)
	}
	return out
}
