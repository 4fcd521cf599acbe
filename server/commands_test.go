package server_test

import (
	"context"
	"maps"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/sessiond/sessiond/client"
	"github.com/sessiond/sessiond/hub"
	"github.com/sessiond/sessiond/internal/clientx"
	"github.com/sessiond/sessiond/protocol"
	"github.com/sessiond/sessiond/server"
	"github.com/sessiond/sessiond/session"
	"github.com/sessiond/sessiond/store"
)

// testServer serves a real Manager on a temporary SQLite store, with the notifier wired as in
// production, over a real listener.
func testServer(t *testing.T) string {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h := hub.New(hub.NewLoopback())
	notifier := server.NewNotifier(h, zerolog.Nop())
	m, err := session.NewManager(session.Config{Store: st, Keys: session.GenerateKeys(), Logger: zerolog.Nop(), Notifier: notifier})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Manager: m, Hub: h, Logger: zerolog.Nop(), AllowInsecure: true})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return ts.URL
}

// signUp registers name and logs in on a new connection.
func signUp(t *testing.T, base, name string) (*client.Conn, client.LoginResult) {
	t.Helper()
	c := dialT(t, base)
	if _, _, err := c.Register(context.Background(), name, "pw"); err != nil {
		t.Fatal(err)
	}
	res, err := c.Login(context.Background(), name, "pw", "")
	if err != nil {
		t.Fatal(err)
	}
	return c, res
}

func dialT(t *testing.T, base string) *client.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, base, clientx.Cheap(client.Options{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dispatchCase is one message in one connection state and the answer it must get: a reply
// type, or an error code.
type dispatchCase struct {
	typ    string
	fields map[string]any
	reply  string // expected reply type, or "" when an error is expected
	code   string // expected error code
}

// TestDispatchSignedOut: on a signed-out connection, the signed-in commands are refused as
// unauthenticated and every second step without its first is out of order.
func TestDispatchSignedOut(t *testing.T) {
	base := testServer(t)
	c := dialT(t, base)
	runCases(t, c, []dispatchCase{
		{protocol.TypePing, nil, protocol.TypePong, ""},
		{"no.such.type", nil, "", protocol.CodeUnknownType},
		{protocol.TypeLoginFinish, map[string]any{"ke3": "AAAA"}, "", protocol.CodeOutOfOrder},
		{protocol.TypeRegisterFinish, map[string]any{"record": "AAAA"}, "", protocol.CodeOutOfOrder},
		{protocol.TypeSessionResume, map[string]any{"token": "nonsense"}, "", protocol.CodeSessionInvalid},
		{protocol.TypeLoginStart, map[string]any{"username": "", "ke1": "AAAA"}, "", protocol.CodeBadRequest},
		{protocol.TypeSessionRefresh, nil, "", protocol.CodeUnauthenticated},
		{protocol.TypeSessionLogout, nil, "", protocol.CodeUnauthenticated},
		{protocol.TypeSessionsList, nil, "", protocol.CodeUnauthenticated},
		{protocol.TypeSessionsRevoke, map[string]any{"session_id": "x"}, "", protocol.CodeUnauthenticated},
		{protocol.TypeSessionsRevokeOthers, nil, "", protocol.CodeUnauthenticated},
		{protocol.TypeActivityList, nil, "", protocol.CodeUnauthenticated},
		{protocol.TypeReauthStart, map[string]any{"ke1": "AAAA"}, "", protocol.CodeUnauthenticated},
		{protocol.TypeReauthFinish, map[string]any{"ke3": "AAAA"}, "", protocol.CodeUnauthenticated},
		{protocol.TypePasswordChangeStart, map[string]any{"request": "AAAA"}, "", protocol.CodeUnauthenticated},
		{protocol.TypePasswordChangeFinish, map[string]any{"record": "AAAA"}, "", protocol.CodeUnauthenticated},
	})
}

// TestDispatchSignedIn: on a signed-in connection the signed-out commands are out of order, the
// session commands answer, and the rules of each flow hold.
func TestDispatchSignedIn(t *testing.T) {
	base := testServer(t)
	c, res := signUp(t, base, "dispatch")
	runCases(t, c, []dispatchCase{
		{protocol.TypePing, nil, protocol.TypePong, ""},
		{protocol.TypeLoginStart, map[string]any{"username": "dispatch", "ke1": "AAAA"}, "", protocol.CodeOutOfOrder},
		{protocol.TypeRegisterStart, map[string]any{"username": "x", "request": "AAAA"}, "", protocol.CodeOutOfOrder},
		{protocol.TypeSessionResume, map[string]any{"token": res.Session.Token}, "", protocol.CodeOutOfOrder},
		{protocol.TypeSessionsList, nil, protocol.TypeSessions, ""},
		{protocol.TypeActivityList, nil, protocol.TypeActivity, ""},
		{protocol.TypeSessionsRevoke, nil, "", protocol.CodeBadRequest},
		{protocol.TypeSessionsRevoke, map[string]any{"session_id": "\u0000"}, "", protocol.CodeNotFound},
		{protocol.TypeSessionsRevoke, map[string]any{"session_id": strings.Repeat("A", 22)}, "", protocol.CodeNotFound},
		{protocol.TypeSessionsRevokeOthers, nil, protocol.TypeSessionsRevoked, ""},
		{protocol.TypeReauthFinish, map[string]any{"ke3": "AAAA"}, "", protocol.CodeOutOfOrder},
		{protocol.TypePasswordChangeFinish, map[string]any{"record": "AAAA"}, "", protocol.CodeOutOfOrder},
		{protocol.TypeSessionRefresh, nil, protocol.TypeSessionRefreshed, ""},
	})
}

// TestDispatchResumedNeedsProof: a connection signed in by resume must prove the password
// before changing it.
func TestDispatchResumedNeedsProof(t *testing.T) {
	base := testServer(t)
	_, res := signUp(t, base, "resumer")
	r := dialT(t, base)
	if _, err := r.Resume(context.Background(), res.Session.Token); err != nil {
		t.Fatal(err)
	}
	runCases(t, r, []dispatchCase{
		{protocol.TypePasswordChangeStart, map[string]any{"request": "AAAA"}, "", protocol.CodeReauthRequired},
		{protocol.TypeSessionsList, nil, protocol.TypeSessions, ""},
	})
}

func runCases(t *testing.T, c *client.Conn, cases []dispatchCase) {
	t.Helper()
	for _, tc := range cases {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		m, err := c.Call(ctx, tc.typ, tc.fields)
		cancel()
		switch {
		case tc.reply != "" && (err != nil || m.Type != tc.reply):
			t.Errorf("%s: %v %s, want %s", tc.typ, err, m.Raw, tc.reply)
		case tc.reply == "" && !client.IsCode(err, tc.code):
			t.Errorf("%s %v: %v, want %s", tc.typ, tc.fields, err, tc.code)
		}
	}
}

// TestEveryClientMessageHasACommand: the dispatch table and the protocol's list of client
// messages are the same set.
func TestEveryClientMessageHasACommand(t *testing.T) {
	want := []string{protocol.TypePing, protocol.TypeRegisterStart, protocol.TypeRegisterFinish, protocol.TypeLoginStart,
		protocol.TypeLoginFinish, protocol.TypeSessionResume, protocol.TypeSessionRefresh, protocol.TypeSessionLogout,
		protocol.TypeSessionsList, protocol.TypeSessionsRevoke, protocol.TypeSessionsRevokeOthers,
		protocol.TypePasswordChangeStart, protocol.TypePasswordChangeFinish, protocol.TypeReauthStart,
		protocol.TypeReauthFinish, protocol.TypeActivityList}
	got := slices.Sorted(maps.Keys(server.CommandTypes()))
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("command table %v, protocol %v", got, want)
	}
}
