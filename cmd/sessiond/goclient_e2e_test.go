package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sessiond/sessiond/client"
	"github.com/sessiond/sessiond/internal/clientx"
	"github.com/sessiond/sessiond/protocol"
	"github.com/sessiond/sessiond/session"
)

// nextEventOf reads c's events until one of type typ, failing on a timeout or the end.
func nextEventOf(t *testing.T, c *client.Client, typ string, within time.Duration) client.Event {
	t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				t.Fatalf("events closed before %s", typ)
			}
			if ev.Type == typ {
				return ev
			}
		case <-timer.C:
			t.Fatalf("no %s within %v", typ, within)
		}
	}
}

// TestGoClientReconnectAcrossRestart: the Go Client's node stops and starts again on the same
// address; the Client reconnects with back-off, resumes the same session, and is then told of a
// revocation (4403: it does not reconnect after that).
func TestGoClientReconnectAcrossRestart(t *testing.T) {
	addr := freeAddr(t)
	n := startNode(t, map[string]string{"SESSIOND_ADDR": addr})
	name, _ := account(t, n, "reconnect", "pw")
	c := client.NewClient(n.Base, clientx.Cheap(client.Options{ReconnectMin: 50 * time.Millisecond, ReconnectMax: 400 * time.Millisecond}))
	t.Cleanup(func() { c.Close() })
	s, _, err := c.Login(ctxT(t), name, "pw", "go app")
	if err != nil {
		t.Fatal(err)
	}
	if s.ExpiresAt.Before(s.CreatedAt) || s.IdleExpiresAt.IsZero() {
		t.Fatalf("times: %+v", s)
	}

	n.stop()
	lost := nextEventOf(t, c, client.EventDisconnected, 30*time.Second)
	if !protocol.DisconnectFor(lost.CloseCode).Reconnect {
		t.Fatalf("disconnected with %d, which is not a code to reconnect after", lost.CloseCode)
	}
	n2 := startNode(t, map[string]string{"SESSIOND_ADDR": addr, "SESSIOND_DATA_DIR": n.DataDir})
	nextEventOf(t, c, client.EventResumed, 30*time.Second)
	if got, ok := c.Session(); !ok || got.ID != s.ID {
		t.Fatalf("after the restart the session is %+v (%v), want %s", got, ok, s.ID)
	}
	if devices, err := c.Devices(ctxT(t)); err != nil || len(devices) != 1 || !devices[0].Current {
		t.Fatalf("devices after the resume: %v %+v", err, devices)
	}
	if code := apiDo(t, n2, c.Token(), "GET", "/api/v1/session", nil, nil).Status; code != 200 {
		t.Fatalf("the token after the restart: %d", code)
	}

	other, _ := loginOn(t, n2, name, "pw", "other")
	if _, err := other.Revoke(ctxT(t), s.ID); err != nil {
		t.Fatal(err)
	}
	ended := nextEventOf(t, c, client.EventEnded, 10*time.Second)
	if ended.Reason != "revoked_by_user" || ended.CloseCode != protocol.CloseRevoked {
		t.Fatalf("ended: %+v", ended)
	}
	if _, err := c.Devices(ctxT(t)); err != client.ErrNotSignedIn {
		t.Fatalf("a call after the end: %v", err)
	}
}

// TestGoClientNoticesFullBuffer: a Client whose reader is away while 80 device-list changes
// arrive (beyond any buffer) still gets the revocation that follows; the lists are coalesced.
func TestGoClientNoticesFullBuffer(t *testing.T) {
	n := startNode(t, nil)
	name, _ := account(t, n, "fullbuf", "pw")
	c := client.NewClient(n.Base, cheap)
	t.Cleanup(func() { c.Close() })
	s, _, err := c.Login(ctxT(t), name, "pw", "victim")
	if err != nil {
		t.Fatal(err)
	}
	owner, _ := loginOn(t, n, name, "pw", "owner")
	const cycles = 40
	for i := range cycles { // each login and each revocation is a notice.sessions_changed
		conn, extra := loginOn(t, n, name, "pw", "extra")
		if _, err := owner.Revoke(ctxT(t), extra.ID); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		conn.Close()
	}
	if _, err := owner.Revoke(ctxT(t), s.ID); err != nil {
		t.Fatal(err)
	}
	// The reader stays away until the Client has seen its connection end (every notice of it
	// has been handed to the Client by then).
	if !waitFor(ctxT(t), func() bool { _, ok := c.Session(); return !ok }) {
		t.Fatal("the Client never saw its session end")
	}
	var changed int
	var last []string
	ctx, cancel := context.WithTimeout(ctxT(t), 20*time.Second)
	defer cancel()
	for {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				if len(last) < 2 || last[len(last)-2] != protocol.NoticeRevoked || last[len(last)-1] != client.EventEnded {
					t.Fatalf("the events end with %v, want notice.revoked then ended", last[max(0, len(last)-3):])
				}
				if changed > 2*cycles || changed == 0 {
					t.Fatalf("%d device-list notices", changed)
				}
				t.Logf("%d device-list notices delivered for %d changes", changed, 2*cycles+1)
				return
			}
			if ev.Type == protocol.NoticeSessionsChanged {
				changed++
			}
			last = append(last, ev.Type)
		case <-ctx.Done():
			t.Fatalf("events did not end; last %v", last)
		}
	}
}

// TestResumeOfAnEndedSessionSaysWhy: a device that was away when its session ended learns why
// on its next resume: session_invalid carries the reason notice.revoked would have given (the
// Go Client then ends with that reason: TestLoadBalancerRollingRestart's revoked devices).
func TestResumeOfAnEndedSessionSaysWhy(t *testing.T) {
	n := startNode(t, nil)
	name, _ := account(t, n, "endedwhy", "pw")
	a, _ := loginOn(t, n, name, "pw", "a")
	_, sb := loginOn(t, n, name, "pw", "b")
	if _, err := a.Revoke(ctxT(t), sb.ID); err != nil {
		t.Fatal(err)
	}
	_, err := dial(t, n, cheap).Resume(ctxT(t), sb.Token)
	var e *client.Error
	if !errors.As(err, &e) || e.Code != "session_invalid" || e.Reason != "revoked_by_user" {
		t.Fatalf("resume of a revoked session: %v (%+v)", err, e)
	}
	// An unknown token says nothing more.
	_, err = dial(t, n, cheap).Resume(ctxT(t), session.TokenPrefix+strings.Repeat("A", 43))
	if !errors.As(err, &e) || e.Code != "session_invalid" || e.Reason != "" {
		t.Fatalf("resume of an unknown token: %v (%+v)", err, e)
	}
}
