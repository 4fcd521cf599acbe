package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
)

// TestVersion: `sessiond version` and `sessiond -version` print the version, revision and Go
// version; a node exports the same as sessiond_build_info on its metrics listener; a version
// set at link time wins.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"-version"}, {"--version"}} {
		var out bytes.Buffer
		if err := run(context.Background(), args, func(string) string { return "" }, &out, io.Discard, nil); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if !strings.HasPrefix(out.String(), "sessiond ") || !strings.Contains(out.String(), runtime.Version()) {
			t.Fatalf("%v printed %q", args, out.String())
		}
	}
	version, revision = "9.8.7", "abc123"
	defer func() { version, revision = "", "" }()
	if b := currentBuild(); b.Version != "9.8.7" || b.Revision != "abc123" || b.Go != runtime.Version() {
		t.Fatalf("link-time version: %+v", b)
	}
	n := startNode(t, nil)
	resp, err := http.Get(n.Metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := fmt.Sprintf(`sessiond_build_info{go=%q,revision="abc123",version="9.8.7"} 1`, runtime.Version())
	if !strings.Contains(string(body), want) {
		t.Fatalf("/metrics has no %s", want)
	}
}

// TestLogLevel: SESSIOND_LOG_LEVEL=warn keeps the info lines (the start, the requests) out of
// the log; an unknown level is refused with what the setting takes.
func TestLogLevel(t *testing.T) {
	n := startNode(t, map[string]string{"SESSIOND_LOG_LEVEL": "warn"})
	if _, err := http.Get(n.Base + "/healthz"); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(n.logs.String(), `"level":"info"`) {
		t.Fatalf("info lines at level warn:\n%s", n.logs.String())
	}
	err := run(context.Background(), nil, func(k string) string {
		if k == "SESSIOND_LOG_LEVEL" {
			return "loud"
		}
		return ""
	}, io.Discard, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "debug, info, warn or error") {
		t.Fatalf("an unknown log level: %v", err)
	}
}

// TestRequestIDAndAccessLog: every HTTP answer carries X-Request-Id, and the access log has a
// line per request with that id, the path without its query and the status, never the token
// (neither the bearer header's nor one put in the query). A WebSocket's upgrade is logged with
// 101. An X-Request-Id from a client that is not a trusted proxy is not taken.
func TestRequestIDAndAccessLog(t *testing.T) {
	n := startNode(t, nil)
	name, _ := account(t, n, "reqid", "pw")
	_, s := loginOn(t, n, name, "pw", "a")
	req, _ := http.NewRequest(http.MethodGet, n.Base+"/api/v1/session?token="+s.Token, nil)
	req.Header.Set("Authorization", "Bearer "+s.Token)
	req.Header.Set("X-Request-Id", "chosen-by-the-client")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	id := resp.Header.Get("X-Request-Id")
	if len(id) != 16 || id == "chosen-by-the-client" {
		t.Fatalf("X-Request-Id %q: want a fresh id (the client is not a trusted proxy)", id)
	}
	logs := n.logs.String()
	if strings.Contains(logs, s.Token) || strings.Contains(logs, strings.TrimPrefix(s.Token, "sdt_")) {
		t.Fatal("a token is in the log")
	}
	var line map[string]any
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, `"request_id":"`+id+`"`) && strings.Contains(l, `"message":"request"`) {
			_ = json.Unmarshal([]byte(l), &line)
		}
	}
	if line == nil || line["path"] != "/api/v1/session" || line["status"] != float64(200) || line["method"] != "GET" {
		t.Fatalf("no access line for request %s (path without query, status 200):\n%s", id, logs)
	}
	if !strings.Contains(logs, `"path":"/ws","status":101`) {
		t.Fatalf("no access line for the WebSocket upgrades:\n%s", logs)
	}
}
