package main

import (
	"bufio"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sseEvent is one event of a Server-Sent Events stream.
type sseEvent struct {
	ID, Event string
	Data      map[string]any
}

// openStream connects to /api/v1/events of base with a service secret (and Last-Event-ID when
// last is set) and returns its events as they come.
func openStream(t *testing.T, base, secret, last string) <-chan sseEvent {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"/api/v1/events", nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	if last != "" {
		req.Header.Set("Last-Event-ID", last)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("GET /api/v1/events: %d %v", resp.StatusCode, resp.Header)
	}
	out := make(chan sseEvent, 100)
	go func() {
		defer resp.Body.Close()
		defer close(out)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.Event != "" {
					out <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "id: "):
				ev.ID = line[4:]
			case strings.HasPrefix(line, "event: "):
				ev.Event = line[7:]
			case strings.HasPrefix(line, "data: "):
				_ = json.Unmarshal([]byte(line[6:]), &ev.Data)
			}
		}
	}()
	return out
}

// nextEvent waits for the stream's next event of kind for session sid, skipping others.
func nextEvent(t *testing.T, events <-chan sseEvent, kind, sid string) sseEvent {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("the stream ended before %s of %s", kind, sid)
			}
			if ev.Event == kind && (sid == "" || ev.Data["session_id"] == sid) {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %s of %s within 10 s", kind, sid)
		}
	}
}

// TestEventStream: a service's stream on node 1 sees what happens on node 2 (both on one
// PostgreSQL): a login, a refresh, a revocation with its reason. After node 1 restarts, the
// stream resumes with Last-Event-ID without losing what happened meanwhile.
func TestEventStream(t *testing.T) {
	dbURL := postgresURL(t)
	keyFile := filepath.Join(t.TempDir(), "keys.json")
	if _, err := cli(t, "keygen", "-o", keyFile); err != nil {
		t.Fatal(err)
	}
	adminAddr := freeAddr(t)
	env := func(admin string) map[string]string {
		e := map[string]string{"SESSIOND_DATABASE_URL": dbURL, "SESSIOND_KEY_FILE": keyFile}
		if admin != "" {
			e["SESSIOND_ADMIN_ADDR"] = admin
		}
		return e
	}
	n1 := startNode(t, env(adminAddr))
	n2 := startNode(t, env(""))
	ctx := ctxT(t)
	out, err := cli(t, "admin", "-url", "http://"+adminAddr, "-key-file", keyFile, "service", "create", "streamer")
	var svc struct{ Secret string }
	if err != nil || json.Unmarshal([]byte(out), &svc) != nil {
		t.Fatalf("service create: %v %s", err, out)
	}
	events := openStream(t, n1.Base, svc.Secret, "")

	name, uid := account(t, n2, "streamed", "pw")
	owner, own := loginOn(t, n2, name, "pw", "owner")
	created := nextEvent(t, events, "session.created", own.ID)
	if created.Data["user_id"] != uid || created.ID == "" {
		t.Fatalf("session.created: %+v", created)
	}
	other, oth := loginOn(t, n2, name, "pw", "other")
	nextEvent(t, events, "session.created", oth.ID)
	if _, err := other.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	nextEvent(t, events, "session.refreshed", oth.ID)
	if _, err := owner.Revoke(ctx, oth.ID); err != nil {
		t.Fatal(err)
	}
	ended := nextEvent(t, events, "session.ended", oth.ID)
	if ended.Data["reason"] != "revoked_by_user" {
		t.Fatalf("session.ended: %+v", ended)
	}

	// Node 1 goes away; meanwhile the owner logs out on node 2. The restarted node 1 resumes
	// the stream after the last event seen.
	n1.stop()
	if err := owner.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	n1b := startNode(t, env(""))
	resumed := openStream(t, n1b.Base, svc.Secret, ended.ID)
	if ev := nextEvent(t, resumed, "session.ended", own.ID); ev.Data["reason"] != "logout" {
		t.Fatalf("after the restart: %+v", ev)
	}
	// Without a service secret: 401.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n2.Base+"/api/v1/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a stream without a service secret: %v %v", err, resp)
	}
	resp.Body.Close()
}
