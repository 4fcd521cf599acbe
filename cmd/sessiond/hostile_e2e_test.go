package main

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/sessiond/sessiond/internal/clientx"
)

// hostileJSON are string values as they appear in a JSON frame (escapes unexpanded): NUL, lone
// surrogates, separators, the replacement character, terminal escapes, oversized values, and
// well-formed but unknown ids.
var hostileJSON = []string{
	`\u0000`, `\u0000\ud800`, `\ud800`, `\udfff\ud800`, `a\u0000b`, `\u2028`, `\ufffd`, `\u001b[31m`,
	`..\/..\/etc`, `%00`, strings.Repeat(`\u0000`, 300), strings.Repeat("x", 4000), strings.Repeat("A", 22),
}

// TestHostileStrings sends every string field of the protocol hostile values, on both stores.
// Each is answered with a clear client error, never `internal`, and the connection and the
// session stay usable.
func TestHostileStrings(t *testing.T) {
	hostileFlow(t, startNode(t, nil))
}

func TestHostileStringsPostgres(t *testing.T) {
	hostileFlow(t, startNode(t, map[string]string{"SESSIOND_DATABASE_URL": postgresURL(t)}))
}

func hostileFlow(t *testing.T, n *node) {
	ctx := ctxT(t)
	name, _ := account(t, n, "hostile", "pw")
	authed, s := loginOn(t, n, name, "pw", "")
	anon := dial(t, n, cheap)
	ke1 := secKE1(t, "pw")
	allowed := []string{"bad_request", "not_found", "session_invalid", "auth_failed", "out_of_order", "reauth_required", "username_taken", "rate_limited"}

	check := func(what, frame string, onAuthed bool) {
		t.Helper()
		c := anon
		if onAuthed {
			c = authed
		}
		if err := clientx.SendRaw(ctx, c, websocket.MessageText, []byte(frame)); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		for {
			m := secNext(t, c, what)
			if strings.HasPrefix(m.Type, "notice.") {
				continue
			}
			if m.Type == "error" && !slices.Contains(allowed, m.Code) {
				t.Fatalf("%s: answered %s; frame %.120s: %s", what, m.Code, frame, m.Raw)
			}
			return
		}
	}
	for i, h := range hostileJSON {
		v := `"` + h + `"`
		check("sessions.revoke session_id", `{"type":"sessions.revoke","id":"h","session_id":`+v+`}`, true)
		check("reauth.start ke1", `{"type":"reauth.start","id":"h","ke1":`+v+`}`, true)
		check("login.start username", `{"type":"login.start","id":"h","username":`+v+`,"ke1":"`+ke1+`"}`, false)
		check("login.start device", `{"type":"login.start","id":"h","username":"hostile-`+string(rune('a'+i))+`","device":`+v+`,"ke1":"`+ke1+`"}`, false)
		check("register.start username", `{"type":"register.start","id":"h","username":`+v+`,"request":"AAAA"}`, false)
		check("session.resume token", `{"type":"session.resume","id":"h","token":`+v+`}`, false)
		check("login.finish ke3", `{"type":"login.finish","id":"h","ke3":`+v+`}`, false)
	}
	// Over HTTP: a path id with NUL and broken UTF-8, and a hostile bearer token.
	for _, id := range []string{"%00", "%00%ED%A0%80", "%ff%fe", strings.Repeat("A", 22)} {
		r := apiDo(t, n, s.Token, http.MethodDelete, "/api/v1/sessions/"+id, nil, nil)
		wantStatus(t, "DELETE /api/v1/sessions/"+id, r, http.StatusNotFound, "not_found")
	}
	r := apiDo(t, n, "sdt_\xff\xfe\xed\xa0\x80", http.MethodGet, "/api/v1/session", nil, nil)
	if r.Status != http.StatusUnauthorized {
		t.Fatalf("a hostile bearer token: HTTP %d %s", r.Status, r.Body)
	}
	// Everything still works.
	if _, err := authed.Call(ctx, "ping", nil); err != nil {
		t.Fatalf("ping after the hostile frames: %v", err)
	}
	tokenWorks(t, n, "after the hostile frames", s.Token, s.ID)
}
