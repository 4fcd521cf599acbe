package main

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sessiond/sessiond/client"
)

// TestHTTPServerTimeouts: a request whose body trickles in is cut off by the read timeout; a
// WebSocket, exempt after its upgrade, outlives it.
func TestHTTPServerTimeouts(t *testing.T) {
	n := startNode(t, map[string]string{"SESSIOND_HTTP_TIMEOUT": "1s"})
	ctx := ctxT(t)
	name, _ := account(t, n, "slow", "pw")
	ws, s := loginOn(t, n, name, "pw", "")

	conn, err := net.Dial("tcp", strings.TrimPrefix(n.Base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The signed-in device's User-Agent: without one the fingerprint check would end the session.
	_, err = io.WriteString(conn, "PUT /api/v1/vault HTTP/1.1\r\nHost: x\r\nUser-Agent: Go-http-client/1.1\r\nAuthorization: Bearer "+s.Token+
		"\r\nIf-None-Match: *\r\nContent-Length: 1000\r\n\r\nfirst bytes")
	if err != nil {
		t.Fatal(err)
	}
	// Trickle on (a byte every 200 ms) until the server gives up; it must, well before 15 s.
	closed := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, conn)
		closed <- err
	}()
	give := time.NewTicker(200 * time.Millisecond)
	defer give.Stop()
	limit := time.After(15 * time.Second)
	for done := false; !done; {
		select {
		case <-closed:
			done = true
		case <-give.C:
			_, _ = conn.Write([]byte("x"))
		case <-limit:
			t.Fatal("a request body trickling in for 15 s was not cut off (SESSIOND_HTTP_TIMEOUT=1s)")
		}
	}
	// The WebSocket signed in before is still served, past the timeout.
	time.Sleep(1500 * time.Millisecond)
	if _, err := ws.Sessions(ctx); err != nil {
		t.Fatalf("the WebSocket after the HTTP timeout: %v (closed with %d)\n%s", err, ws.CloseCode(), n.logs.String())
	}
	// And a plain request still works.
	tokenWorks(t, n, "after the timeout", s.Token, s.ID)
}

// TestBadTokensPerAddress: refused tokens cost store reads, so one address gets a bounded
// number a minute; then 429 before any lookup, over HTTP and on session.resume. Another address
// keeps its own budget.
func TestBadTokensPerAddress(t *testing.T) {
	n := startNode(t, map[string]string{"SESSIOND_BAD_TOKENS_PER_ADDRESS": "5"})
	ctx := ctxT(t)
	bad := client.NewAPI(n.Base, "sdt_"+strings.Repeat("A", 43))
	for i := 0; i < 5; i++ {
		r, _ := bad.Do(ctx, http.MethodGet, "/api/v1/session", nil, nil)
		wantStatus(t, "bad token", r, http.StatusUnauthorized, "session_invalid")
	}
	r, _ := bad.Do(ctx, http.MethodGet, "/api/v1/session", nil, nil)
	wantStatus(t, "a sixth bad token", r, http.StatusTooManyRequests, "rate_limited")
	if _, err := dial(t, n, cheap).Resume(ctx, "sdt_"+strings.Repeat("B", 43)); !client.IsCode(err, "rate_limited") {
		t.Fatalf("resume with a bad token from the limited address: %v", err)
	}
	other := client.NewAPI(n.Base, "sdt_"+strings.Repeat("A", 43))
	other.HTTP = httpFrom("127.0.0.2")
	r, _ = other.Do(ctx, http.MethodGet, "/api/v1/session", nil, nil)
	wantStatus(t, "a bad token from another address", r, http.StatusUnauthorized, "session_invalid")
}
