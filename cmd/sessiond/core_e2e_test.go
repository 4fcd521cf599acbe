package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bytemare/opaque"
	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/sessiond/sessiond/client"
	"github.com/sessiond/sessiond/internal/clientx"
)

var cheap = clientx.Cheap(client.Options{})

func dial(t *testing.T, n *node, opts client.Options) *client.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, n.Base, opts)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestCoreSQLite and TestCorePostgres run the same end-to-end flow on both stores.
// Proof of possession is on, so that the proof key (derived from the OPAQUE session key and
// kept in the sealed device record) is among the secrets searched for.
func TestCoreSQLite(t *testing.T) {
	n := startNode(t, map[string]string{"SESSIOND_PROOF_OF_POSSESSION": "true"})
	coreFlow(t, n)
	assertNoSecretsInFiles(t, n)
}

func TestCorePostgres(t *testing.T) {
	dbURL := postgresURL(t)
	n := startNode(t, map[string]string{"SESSIOND_DATABASE_URL": dbURL, "SESSIOND_PROOF_OF_POSSESSION": "true"})
	coreFlow(t, n)
	assertNoSecretsInPostgres(t, n, dbURL)
}

// secrets collects what must never rest in clear or reach a log.
type secrets struct {
	tokens   []string
	raw      [][]byte // token bytes, OPAQUE messages
	keys     [][]byte // proof-of-possession, session and export keys
	metadata []string // device label, user agent
	password string
}

var lastSecrets secrets

const deviceLabel = "Aurelia's secret laptop"
const userAgent = "SecretAgent/7.1 (TestOS)"

func coreFlow(t *testing.T, n *node) {
	ctx := ctxT(t)
	lastSecrets = secrets{password: "correct horse battery staple", metadata: []string{deviceLabel, userAgent}}
	name := uniqueName("Ünïcode-User")

	// Register with a hand-driven OPAQUE client, so the test holds the record it sent.
	c := dial(t, n, clientx.Cheap(client.Options{Header: http.Header{"User-Agent": {userAgent}}}))
	userID, msgs := registerRaw(t, ctx, c, name, lastSecrets.password)
	lastSecrets.raw = append(lastSecrets.raw, msgs[2]) // the record: it is what rests on the server
	if userID == "" {
		t.Fatal("register.ok without user_id")
	}

	// Same connection may log in after registering; the username compares case-folded.
	res, err := c.Login(ctx, strings.ToUpper(name), lastSecrets.password, deviceLabel)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	s := res.Session
	lastSecrets.tokens = append(lastSecrets.tokens, s.Token)
	lastSecrets.keys = append(lastSecrets.keys, res.PoPKey, res.SessionKey, res.ExportKey)
	if !s.PoP || len(res.PoPKey) != 32 {
		t.Fatalf("the session does not require proofs: %+v", s)
	}
	if !strings.HasPrefix(s.Token, "sdt_") || len(s.Token) < 4+43 {
		t.Fatalf("token %q lacks the prefix or 256 bits", s.Token[:6])
	}
	if s.UserID != userID || s.ID == "" || s.VaultID == "" || s.Device != deviceLabel {
		t.Fatalf("session object wrong: %+v", s)
	}
	for _, ts := range []string{s.CreatedAt, s.IdleExpiresAt, s.ExpiresAt} {
		if _, err := time.Parse(time.RFC3339, ts); err != nil || !strings.HasSuffix(ts, "Z") {
			t.Fatalf("time %q is not RFC 3339 UTC", ts)
		}
	}

	// The token works over HTTP.
	api := client.NewAPI(n.Base, s.Token).WithProof(res.PoPKey)
	api.Header = http.Header{"User-Agent": {userAgent}} // the signed-in device's
	got, err := api.Session(ctx)
	if err != nil {
		t.Fatalf("GET /api/v1/session: %v", err)
	}
	if got.ID != s.ID || got.Token != "" {
		t.Fatalf("GET /api/v1/session = %+v", got)
	}

	// A second login makes a new session with a new id and token (no fixation).
	c2 := dial(t, n, cheap)
	res2, err := c2.Login(ctx, name, lastSecrets.password, "")
	if err != nil {
		t.Fatalf("second login: %v", err)
	}
	lastSecrets.tokens = append(lastSecrets.tokens, res2.Session.Token)
	lastSecrets.keys = append(lastSecrets.keys, res2.PoPKey, res2.SessionKey, res2.ExportKey)
	if res2.Session.ID == s.ID || res2.Session.Token == s.Token {
		t.Fatal("a new login reused a session id or token")
	}
	if res2.Session.Device == "" {
		t.Fatal("no device label derived")
	}

	// Resume on a new connection with the token (from the same device: its User-Agent).
	c3 := dial(t, n, clientx.Cheap(client.Options{Header: http.Header{"User-Agent": {userAgent}}}))
	rs, err := c3.ResumeWithProof(ctx, s.Token, res.PoPKey)
	if err != nil || rs.ID != s.ID || rs.Token != "" {
		t.Fatalf("resume: %+v %v", rs, err)
	}

	// Wrong password and unknown user: the very same auth_failed.
	c4 := dial(t, n, cheap)
	_, errWrong := c4.Login(ctx, name, "wrong password", "")
	_, errUnknown := c4.Login(ctx, uniqueName("nobody"), "whatever", "")
	var e1, e2 *client.Error
	if !errors.As(errWrong, &e1) || !errors.As(errUnknown, &e2) || e1.Code != "auth_failed" || *e1 != *e2 {
		t.Fatalf("wrong password gave %v, unknown user gave %v", errWrong, errUnknown)
	}
	// The connection stays usable after a failed login.
	if _, err := c4.Login(ctx, name, lastSecrets.password, ""); err != nil {
		t.Fatalf("login after failures: %v", err)
	}

	// Registering a taken name (in another case) is refused.
	c5 := dial(t, n, cheap)
	if _, _, err := c5.Register(ctx, strings.ToLower(name), "x"); !client.IsCode(err, "username_taken") {
		t.Fatalf("duplicate registration: %v", err)
	}

	// Invalid and missing tokens over HTTP.
	bad := client.NewAPI(n.Base, "sdt_"+strings.Repeat("A", 43))
	r, _ := bad.Do(ctx, "GET", "/api/v1/session", nil, nil)
	if r.Status != 401 || !client.IsCode(r.Err(), "session_invalid") || !strings.Contains(r.Header.Get("WWW-Authenticate"), "invalid_token") {
		t.Fatalf("invalid token: %d %s %q", r.Status, r.Body, r.Header.Get("WWW-Authenticate"))
	}
	r, _ = client.NewAPI(n.Base, "").Do(ctx, "GET", "/api/v1/session", nil, nil)
	if r.Status != 401 || !client.IsCode(r.Err(), "unauthenticated") || r.Header.Get("WWW-Authenticate") != "Bearer" {
		t.Fatalf("missing token: %d %s", r.Status, r.Body)
	}
	if n.logs == nil {
		return
	}
	assertNoSecretsIn(t, "logs", []byte(n.logs.String()), true)
}

// registerRaw registers with bytemare directly and returns the user id and the OPAQUE messages
// of the exchange (request, response, record), so tests can look for them where they must not be.
func registerRaw(t *testing.T, ctx context.Context, c *client.Conn, name, password string) (string, [][]byte) {
	t.Helper()
	m, msgs := rawRegistration(t, ctx, c, "register", map[string]any{"username": name}, password)
	var ok struct {
		UserID string `json:"user_id"`
	}
	_ = m.Decode(&ok)
	return ok.UserID, msgs
}

// rawRegistration runs prefix+".start" / prefix+".finish" (register or password.change) with
// bytemare directly, returning the finish reply and the messages (request, response, record).
func rawRegistration(t *testing.T, ctx context.Context, c *client.Conn, prefix string, fields map[string]any, password string) (client.Message, [][]byte) {
	t.Helper()
	oc, _ := opaque.DefaultConfiguration().Client()
	req, err := oc.RegistrationInit([]byte(password))
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding
	start := map[string]any{"request": b64.EncodeToString(req.Serialize())}
	for k, v := range fields {
		start[k] = v
	}
	m, err := c.Call(ctx, prefix+".start", start)
	if err != nil {
		t.Fatalf("%s.start: %v", prefix, err)
	}
	var ch struct{ Response string }
	_ = m.Decode(&ch)
	resp, _ := b64.DecodeString(ch.Response)
	rr, err := oc.Deserialize.RegistrationResponse(resp)
	if err != nil {
		t.Fatal(err)
	}
	rec, _, err := oc.RegistrationFinalize(rr, nil, nil, &opaque.ClientOptions{KSFSalt: make([]byte, 16), KSFLength: 64, KSFParameters: []uint64{1, 64, 1}})
	if err != nil {
		t.Fatal(err)
	}
	m, err = c.Call(ctx, prefix+".finish", map[string]any{"record": b64.EncodeToString(rec.Serialize())})
	if err != nil {
		t.Fatalf("%s.finish: %v", prefix, err)
	}
	return m, [][]byte{req.Serialize(), resp, rec.Serialize()}
}

// assertNoSecretsIn fails when data contains a token (as text or bytes), an OPAQUE message,
// the password, or (for stored data) device metadata in clear.
func assertNoSecretsIn(t *testing.T, where string, data []byte, metadataAllowed bool) {
	t.Helper()
	for _, tok := range lastSecrets.tokens {
		if bytes.Contains(data, []byte(tok)) || bytes.Contains(data, []byte(tok[4:])) {
			t.Errorf("%s contains a session token", where)
		}
		raw, _ := base64.RawURLEncoding.DecodeString(tok[4:])
		if len(raw) > 0 && bytes.Contains(data, raw) {
			t.Errorf("%s contains a session token's raw bytes", where)
		}
	}
	for _, r := range lastSecrets.raw {
		if bytes.Contains(data, r) || bytes.Contains(data, []byte(base64.RawURLEncoding.EncodeToString(r))) {
			t.Errorf("%s contains an OPAQUE message", where)
		}
	}
	for _, k := range lastSecrets.keys {
		if len(k) == 0 {
			continue
		}
		for _, enc := range [][]byte{k, []byte(base64.RawURLEncoding.EncodeToString(k)), []byte(base64.StdEncoding.EncodeToString(k)), []byte(hex.EncodeToString(k))} {
			if bytes.Contains(data, enc) {
				t.Errorf("%s contains a proof-of-possession, session or export key", where)
			}
		}
	}
	if bytes.Contains(data, []byte(lastSecrets.password)) {
		t.Errorf("%s contains the password", where)
	}
	if !metadataAllowed {
		for _, m := range lastSecrets.metadata {
			if bytes.Contains(data, []byte(m)) {
				t.Errorf("%s contains device metadata %q in clear", where, m)
			}
		}
		if bytes.Contains(data, []byte("127.0.0.1")) {
			t.Errorf("%s contains the client IP in clear", where)
		}
	}
}

func assertNoSecretsInFiles(t *testing.T, n *node) {
	t.Helper()
	n.stop() // checkpoint and close the database first
	var all []byte
	_ = filepath.WalkDir(n.DataDir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, "keys.json") {
			return nil
		}
		b, _ := os.ReadFile(p)
		all = append(all, b...)
		return nil
	})
	if len(all) == 0 {
		t.Fatal("no store files found")
	}
	assertNoSecretsIn(t, "the embedded store", all, false)
}

func assertNoSecretsInPostgres(t *testing.T, n *node, dbURL string) {
	t.Helper()
	ctx := ctxT(t)
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// Every table the store made, whatever its name: a new table cannot escape the check.
	rows, err := conn.Query(ctx, `SELECT table_name FROM information_schema.tables
		WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"users", "sessions", "events"} {
		if !slices.Contains(tables, want) {
			t.Fatalf("table %s not among the store's tables %v", want, tables)
		}
	}
	var dump bytes.Buffer
	for _, table := range tables {
		rows, err := conn.Query(ctx, "SELECT * FROM "+pgx.Identifier{table}.Sanitize())
		if err != nil {
			t.Fatalf("dump %s: %v", table, err)
		}
		for rows.Next() {
			vals, _ := rows.Values()
			for _, v := range vals {
				switch x := v.(type) {
				case []byte:
					dump.Write(x)
				case string:
					dump.WriteString(x)
				}
				dump.WriteByte(0)
			}
		}
		rows.Close()
	}
	if dump.Len() == 0 {
		t.Fatal("empty dump")
	}
	assertNoSecretsIn(t, "PostgreSQL", dump.Bytes(), false)
}

// TestRefusalsAndErrors covers each documented refusal; the server keeps serving after each.
// It runs on both stores: malformed input must not reach either as a server failure.
func TestRefusalsAndErrors(t *testing.T) {
	refusalsFlow(t, startNode(t, nil)) // the handshake deadline has its own test
}

func TestRefusalsAndErrorsPostgres(t *testing.T) {
	refusalsFlow(t, startNode(t, map[string]string{"SESSIOND_DATABASE_URL": postgresURL(t)}))
}

func refusalsFlow(t *testing.T, n *node) {
	ctx := ctxT(t)

	// Bad Origin: 403 before the upgrade; the own origin passes.
	_, err := client.Dial(ctx, n.Base, client.Options{Origin: "https://evil.example"})
	var de *client.DialError
	if !errors.As(err, &de) || de.Status != 403 {
		t.Fatalf("bad origin: %v", err)
	}
	own := dial(t, n, client.Options{Origin: n.Base})
	_ = own
	// Missing subprotocol: 400.
	_, err = client.Dial(ctx, n.Base, clientx.NoSubprotocol(client.Options{}))
	if !errors.As(err, &de) || de.Status != 400 {
		t.Fatalf("no subprotocol: %v", err)
	}

	c := dial(t, n, cheap)
	call := func(raw string) client.Message {
		t.Helper()
		if err := clientx.SendRaw(ctx, c, websocket.MessageText, []byte(raw)); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-c.Notices():
			return m
		case <-time.After(5 * time.Second):
			t.Fatalf("no reply to %s", raw)
		}
		return client.Message{}
	}
	// Malformed JSON and non-object frames: bad_request without id.
	for _, raw := range []string{`{not json`, `[]`, `"x"`, `null`, `{"type":5}`, `{"id":7,"type":"ping"}`} {
		m := call(raw)
		if m.Type != "error" || m.Code != "bad_request" || m.ID != "" {
			t.Fatalf("%s -> %+v", raw, m)
		}
	}
	// With a string id the error carries it.
	if _, err := c.Call(ctx, "no.such.type", nil); !client.IsCode(err, "unknown_type") {
		t.Fatalf("unknown type: %v", err)
	}
	if _, err := c.Call(ctx, "login.finish", map[string]any{"ke3": "AAAA"}); !client.IsCode(err, "out_of_order") {
		t.Fatalf("login.finish first: %v", err)
	}
	if _, err := c.Call(ctx, "register.finish", map[string]any{"record": "AAAA"}); !client.IsCode(err, "out_of_order") {
		t.Fatalf("register.finish first: %v", err)
	}
	if _, err := c.Call(ctx, "sessions.list", nil); !client.IsCode(err, "unauthenticated") {
		t.Fatalf("sessions.list unauthenticated: %v", err)
	}
	if _, err := c.Call(ctx, "session.resume", map[string]any{"token": "nonsense"}); !client.IsCode(err, "session_invalid") {
		t.Fatalf("resume with garbage: %v", err)
	}
	// Bad base64 (padding, whitespace, wrong alphabet) and bad usernames: bad_request.
	for _, f := range []map[string]any{
		{"username": "a", "ke1": "AAAA="}, {"username": "a", "ke1": "AA\nAA"}, {"username": "a", "ke1": "AA+/"},
		{"username": "", "ke1": "AAAA"}, {"username": strings.Repeat("x", 65), "ke1": "AAAA"}, {"username": "a\u0007b", "ke1": "AAAA"},
		{"username": "a", "ke1": "AAAA"}, // decodes, but is not a KE1
	} {
		if _, err := c.Call(ctx, "login.start", f); !client.IsCode(err, "bad_request") {
			t.Fatalf("login.start %v: %v", f, err)
		}
	}
	// Still usable: register and log in on the same connection.
	name := uniqueName("refusals")
	if _, _, err := c.Register(ctx, name, "pw"); err != nil {
		t.Fatalf("register after errors: %v", err)
	}
	if _, err := c.Login(ctx, name, "pw", ""); err != nil {
		t.Fatalf("login after errors: %v", err)
	}
	if _, err := c.Call(ctx, "login.start", map[string]any{"username": name, "ke1": "AAAA"}); !client.IsCode(err, "out_of_order") {
		t.Fatalf("login.start when signed in: %v", err)
	}
	if _, err := c.Call(ctx, "ping", nil); err != nil {
		t.Fatalf("ping: %v", err)
	}

	// Binary frame: 1003.
	b := dial(t, n, cheap)
	_ = clientx.SendRaw(ctx, b, websocket.MessageBinary, []byte{1, 2, 3})
	waitClosed(t, b, 1003)
	// Too big: 1009.
	big := dial(t, n, cheap)
	_ = clientx.SendRaw(ctx, big, websocket.MessageText, []byte(`{"type":"ping","pad":"`+strings.Repeat("x", 70000)+`"}`))
	waitClosed(t, big, 1009)
	// Exactly at the limit is allowed.
	edge := dial(t, n, cheap)
	prefix := `{"type":"ping","id":"e","pad":"`
	msg := prefix + strings.Repeat("x", 65536-len(prefix)-2) + `"}`
	if len(msg) != 65536 {
		t.Fatalf("edge message is %d bytes", len(msg))
	}
	_ = clientx.SendRaw(ctx, edge, websocket.MessageText, []byte(msg))
	if m := secNext(t, edge, "64 KiB message"); m.Type != "pong" {
		t.Fatalf("64 KiB message: %+v", m)
	}
	// Invalid UTF-8: 1007.
	u := dial(t, n, cheap)
	_ = clientx.SendRaw(ctx, u, websocket.MessageText, []byte("{\"type\":\"\xff\"}"))
	waitClosed(t, u, 1007)
	// A peer that keeps sending garbage is closed with 4400.
	g := dial(t, n, cheap)
	for i := 0; i < 10; i++ {
		_ = clientx.SendRaw(ctx, g, websocket.MessageText, []byte("garbage"))
	}
	waitClosed(t, g, 4400)
	// And the server still serves.
	if _, err := client.NewAPI(n.Base, "").Do(ctx, "GET", "/healthz", nil, nil); err != nil {
		t.Fatal(err)
	}
}

// TestHandshakeDeadline: a connection that neither logs in nor resumes within the deadline is
// closed with 4408, whether it stays silent or keeps sending; one that signed in in time
// outlives the deadline.
func TestHandshakeDeadline(t *testing.T) {
	n := startNode(t, map[string]string{"SESSIOND_HANDSHAKE_TIMEOUT": "2s"})
	ctx := ctxT(t)
	name, _ := account(t, n, "handshake", "pw")
	// Opened in this order, so the server started their deadlines in this order too.
	signed := dial(t, n, cheap)
	if _, err := signed.Login(ctx, name, "pw", ""); err != nil {
		t.Fatal(err)
	}
	busy := dial(t, n, cheap)
	idle := dial(t, n, cheap)

	waitClosed(t, idle, 4408)
	// Idle's deadline has passed, so the earlier ones have too. Busy keeps sending, well
	// under the message rate limit.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-busy.Done():
			done = true
		case <-ctx.Done():
			t.Fatal("a signed-out connection that keeps sending outlived the deadline")
		case <-tick.C:
			_, _ = busy.Call(ctx, "ping", nil)
		}
	}
	if got := busy.CloseCode(); got != 4408 {
		t.Fatalf("busy signed-out connection closed with %d, want 4408", got)
	}
	if _, err := signed.Sessions(ctx); err != nil {
		t.Fatalf("the signed-in connection after the deadline: %v", err)
	}
}

func waitClosed(t *testing.T, c *client.Conn, code int) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("connection not closed (want %d)", code)
	}
	if got := c.CloseCode(); got != code {
		t.Fatalf("closed with %d, want %d", got, code)
	}
}
