package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// node is one sessiond started in-process by run, on 127.0.0.1:0.
type node struct {
	Base    string
	Metrics string // base URL of the metrics listener
	DataDir string
	Env     map[string]string
	logs    *syncBuffer
	stop    func()
}

// syncBuffer collects a node's log output for assertions (e.g. that no secret is logged).
type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startNode boots the real server with env on top of a fresh data dir. It stops at cleanup.
func startNode(t *testing.T, env map[string]string) *node {
	t.Helper()
	n := &node{DataDir: t.TempDir(), Env: map[string]string{}, logs: &syncBuffer{}}
	n.Env["SESSIOND_ADDR"] = "127.0.0.1:0"
	n.Env["SESSIOND_DATA_DIR"] = n.DataDir
	n.Env["SESSIOND_LOG_FORMAT"] = "json"
	n.Env["SESSIOND_METRICS_ADDR"] = "127.0.0.1:0"
	for k, v := range env {
		n.Env[k] = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, nil, func(k string) string { return n.Env[k] }, io.Discard, n.logs, func(a string) { addr <- a })
	}()
	select {
	case a := <-addr:
		n.Base = "http://" + a
		n.Metrics = listenLine(n.logs.String(), "metrics listening")
		watchListeners(n.Base, n.logs.String())
	case err := <-done:
		cancel()
		t.Fatalf("sessiond did not start: %v\n%s", err, n.logs.String())
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatalf("sessiond did not start within 30s\n%s", n.logs.String())
	}
	var once sync.Once
	n.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("sessiond stopped with: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("sessiond did not stop within 30s")
			}
		})
	}
	t.Cleanup(n.stop)
	return n
}

// watchListeners has the answers of a node's listeners (public at base; admin and metrics as
// its start lines say) checked against docs/openapi.yaml (TestMain).
func watchListeners(base, logs string) {
	api.Watch(base, "public")
	for listener, line := range map[string]string{"admin": "admin API listening", "metrics": "metrics listening"} {
		if addr := listenLine(logs, line); addr != "" {
			api.Watch(addr, listener)
		}
	}
}

// postgresURL returns a URL of a fresh schema in TEST_POSTGRES_URL's database, dropped at
// cleanup. Without the variable the test is skipped locally and fails in CI.
func postgresURL(t *testing.T) string {
	t.Helper()
	base := os.Getenv("TEST_POSTGRES_URL")
	if base == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("TEST_POSTGRES_URL is required in CI")
		}
		t.Skip("TEST_POSTGRES_URL not set")
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect to TEST_POSTGRES_URL: %v", err)
	}
	defer conn.Close(ctx)
	schema := "e2e_" + randomHex(6)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), base)
		if err == nil {
			_, _ = c.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
			c.Close(context.Background())
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func uniqueName(prefix string) string { return fmt.Sprintf("%s-%s", prefix, randomHex(4)) }

// listenLine returns "http://ADDR" from the first JSON log line with this message, or "".
func listenLine(logs, message string) string {
	for _, l := range strings.Split(logs, "\n") {
		var line struct {
			Addr    string `json:"addr"`
			Message string `json:"message"`
		}
		if json.Unmarshal([]byte(l), &line) == nil && line.Message == message && line.Addr != "" {
			return "http://" + line.Addr
		}
	}
	return ""
}
