package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sessiond/sessiond/client"
	"github.com/sessiond/sessiond/session"
	"github.com/sessiond/sessiond/store"
)

// TestKeyRotationSQLite and TestKeyRotationPostgres rotate the token and seal keys of a store
// with users, sessions, vaults and events in it, and retire the old keys afterwards: every
// session stays valid and every sealed value readable throughout.
func TestKeyRotationSQLite(t *testing.T) {
	dir := t.TempDir()
	keyRotationFlow(t, map[string]string{"SESSIOND_DATA_DIR": dir}, []string{"-data-dir", dir},
		func(t *testing.T) session.Backend { return openSQLiteAt(t, dir) })
}

func TestKeyRotationPostgres(t *testing.T) {
	dbURL := postgresURL(t)
	keyRotationFlow(t, map[string]string{"SESSIOND_DATABASE_URL": dbURL}, []string{"-database-url", dbURL},
		func(t *testing.T) session.Backend {
			pool, err := pgxpool.New(t.Context(), dbURL)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(pool.Close)
			st, err := store.NewPostgres(t.Context(), pool)
			if err != nil {
				t.Fatal(err)
			}
			return st
		})
}

// cli runs one sessiond subcommand in-process and returns its output.
func cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(ctxT(t), args, func(string) string { return "" }, &out, &out, nil)
	return out.String(), err
}

func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, err := cli(t, args...)
	if err != nil {
		t.Fatalf("sessiond %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// device is one logged-in device of the flow.
type device struct {
	user, label, id, token string
}

func keyRotationFlow(t *testing.T, storeEnv map[string]string, storeArgs []string, openStore func(t *testing.T) session.Backend) {
	keysDir := t.TempDir()
	keyA, keyB, keyC, keyD := filepath.Join(keysDir, "a.json"), filepath.Join(keysDir, "b.json"),
		filepath.Join(keysDir, "c.json"), filepath.Join(keysDir, "d.json")
	mustCLI(t, "keygen", "-o", keyA)
	nodeEnv := func(keyFile string) map[string]string {
		env := map[string]string{"SESSIOND_KEY_FILE": keyFile}
		for k, v := range storeEnv {
			env[k] = v
		}
		return env
	}

	// ---- before: a node with key file A and something in every sealed column ----
	n := startNode(t, nodeEnv(keyA))
	alice, _ := account(t, n, "rot-alice", "pw")
	bob, _ := account(t, n, "rot-bob", "pw")
	var devices []device
	for _, d := range []struct{ user, label string }{
		{alice, "Alice laptop"}, {alice, "Alice phone"}, {bob, "Bob tablet"}, {alice, "Alice drawer"},
	} {
		c, s := loginOn(t, n, d.user, "pw", d.label)
		c.Close()
		devices = append(devices, device{user: d.user, label: d.label, id: s.ID, token: s.Token})
	}
	laptop, phone, tablet, drawer := &devices[0], &devices[1], &devices[2], &devices[3]
	// A refresh leaves a retired token hashed under the old token key.
	var refreshed client.Refreshed
	r := apiDo(t, n, phone.token, http.MethodPost, "/api/v1/session/refresh", nil, nil)
	wantStatus(t, "refresh", r, http.StatusOK, "")
	if err := json.Unmarshal(r.Body, &refreshed); err != nil || refreshed.Token == "" {
		t.Fatalf("refresh: %s", r.Body)
	}
	phone.token = refreshed.Token
	for _, d := range []*device{laptop, tablet} {
		wantStatus(t, "PUT vault", apiDo(t, n, d.token, http.MethodPut, "/api/v1/vault", []byte("vault of "+d.user), http.Header{"If-None-Match": {"*"}}), http.StatusNoContent, "")
	}
	n.stop()
	before := sealedByKey(t, openStore(t))
	if before["s1"] < 2+4+4 || len(before) != 1 {
		t.Fatalf("sealed values before the rotation: %v", before)
	}

	// ---- rotate: B keeps t1/s1 and makes t2/s2 current ----
	out := mustCLI(t, "keygen", "-rotate", "-i", keyA, "-o", keyB)
	if !strings.Contains(out, "token key t2 and seal key s2 are current") || !strings.Contains(out, "rotate-keys") {
		t.Fatalf("keygen -rotate said:\n%s", out)
	}
	if _, err := cli(t, "keygen", "-rotate", "-i", keyA, "-o", keyB); err == nil {
		t.Fatal("keygen -rotate replaced an existing file")
	}
	a, _ := session.LoadKeys(keyA)
	b, _ := session.LoadKeys(keyB)
	if a.Fingerprint() == b.Fingerprint() || !bytes.Equal(a.OPRFSeed, b.OPRFSeed) || !bytes.Equal(a.TokenKeys["t1"], b.TokenKeys["t1"]) {
		t.Fatal("rotated key file: fingerprint kept, OPAQUE material changed or old key lost")
	}
	// The store still records A's fingerprint: a node with B is refused until rotate-keys.
	if err := startFails(t, nodeEnv(keyB)); err == nil || !strings.Contains(err.Error(), keyMismatch) {
		t.Fatalf("node with B before rotate-keys: %v, want %q", err, keyMismatch)
	}

	out = mustCLI(t, append([]string{"admin", "rotate-keys", "-key-file", keyB}, storeArgs...)...)
	t.Logf("rotate-keys:\n%s", out)
	for _, want := range []string{"sessions.device", "users.record", "events.detail", "recorded key fingerprint " + b.Fingerprint(),
		"seal key s1: no value is sealed under it any more", "token key t1:"} {
		if !strings.Contains(out, want) {
			t.Fatalf("rotate-keys output lacks %q:\n%s", want, out)
		}
	}
	after := sealedByKey(t, openStore(t))
	if after["s2"] != before["s1"] || len(after) != 1 {
		t.Fatalf("sealed values after rotate-keys: %v (before %v)", after, before)
	}
	// Idempotent.
	if out := mustCLI(t, append([]string{"admin", "rotate-keys", "-key-file", keyB}, storeArgs...)...); resealed(t, out, session.SealedDevices) != 0 {
		t.Fatalf("second rotate-keys:\n%s", out)
	}
	// An unrelated key file opens nothing: rotate-keys refuses to record its fingerprint.
	keyX := filepath.Join(keysDir, "unrelated.json")
	mustCLI(t, "keygen", "-o", keyX)
	if out, err := cli(t, append([]string{"admin", "rotate-keys", "-key-file", keyX}, storeArgs...)...); err == nil || !strings.Contains(err.Error(), "not changed") {
		t.Fatalf("rotate-keys with an unrelated key file: %v\n%s", err, out)
	}
	// A node with the old file A is now refused, for that reason and no other.
	if err := startFails(t, nodeEnv(keyA)); err == nil || !strings.Contains(err.Error(), keyMismatch) {
		t.Fatalf("node with A after rotate-keys: %v, want %q", err, keyMismatch)
	}

	// ---- a node with B: everything works; used tokens move to t2 ----
	n = startNode(t, nodeEnv(keyB))
	for _, d := range []*device{laptop, phone, tablet} {
		tokenWorks(t, n, d.label+" after rotation", d.token, d.id)
	}
	assertReadable(t, n, laptop, []string{"Alice laptop", "Alice phone", "Alice drawer"})
	assertReadable(t, n, tablet, []string{"Bob tablet"})
	c, fresh := loginOn(t, n, alice, "pw", "Alice new") // the registration record opens
	c.Close()
	n.stop()

	// ---- retire the old seal key: C ----
	mustCLI(t, "keygen", "-retire", "s1", "-i", keyB, "-o", keyC)
	if _, err := cli(t, "keygen", "-retire", "s2", "-i", keyB, "-o", filepath.Join(keysDir, "x.json")); err == nil {
		t.Fatal("retired the current seal key")
	}
	n = startNode(t, nodeEnv(keyC)) // same current keys: same fingerprint, no rotate-keys needed
	for _, d := range []*device{laptop, phone, tablet, {label: "Alice new", id: fresh.ID, token: fresh.Token}} {
		tokenWorks(t, n, d.label+" with s1 retired", d.token, d.id)
	}
	assertReadable(t, n, laptop, []string{"Alice laptop", "Alice phone", "Alice drawer", "Alice new"})
	n.stop()

	// ---- retire the old token key: D. Tokens used since the rotation were re-hashed. ----
	mustCLI(t, "keygen", "-retire", "t1", "-i", keyC, "-o", keyD)
	n = startNode(t, nodeEnv(keyD))
	for _, d := range []*device{laptop, phone, tablet} {
		tokenWorks(t, n, d.label+" with t1 retired", d.token, d.id)
	}
	assertReadable(t, n, tablet, []string{"Bob tablet"})
	// The drawer's token was not used between the rotation and the retirement: it is still
	// hashed under t1 and no longer accepted. This is why t1 is retired only after the
	// absolute timeout that rotate-keys prints.
	tokenRefused(t, n, "unused pre-rotation token with t1 retired", drawer.token)
}

// keyMismatch is what a node says when its key file is not the store's.
const keyMismatch = "this node's keys differ from the ones this store was set up with"

// startFails runs a node that must refuse to start and returns its error.
func startFails(t *testing.T, env map[string]string) error {
	t.Helper()
	env = maps.Clone(env)
	env["SESSIOND_ADDR"] = "127.0.0.1:0"
	if env["SESSIOND_DATA_DIR"] == "" {
		env["SESSIOND_DATA_DIR"] = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	started := false
	err := run(ctx, nil, func(k string) string { return env[k] }, io.Discard, io.Discard, func(string) { started = true; cancel() })
	if started {
		return nil
	}
	if err == nil {
		t.Fatal("node neither started nor failed")
	}
	return err
}

// sealedByKey counts the store's sealed values by the id of the key that sealed them.
func sealedByKey(t *testing.T, st session.Backend) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, table := range session.SealedTables {
		after := ""
		for {
			vals, err := st.SealedValues(t.Context(), table, after, 100)
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range vals {
				out[session.SealKeyID(v.Value)]++
			}
			if len(vals) < 100 {
				break
			}
			after = vals[len(vals)-1].ID
		}
	}
	return out
}

// assertReadable checks, through d's token, what opens sealed values: the device list shows
// every label in labels, the activity list shows the device of every login, and the vault
// reads back.
func assertReadable(t *testing.T, n *node, d *device, labels []string) {
	t.Helper()
	r := apiDo(t, n, d.token, http.MethodGet, "/api/v1/sessions", nil, nil)
	wantStatus(t, "GET /api/v1/sessions", r, http.StatusOK, "")
	var list struct {
		Sessions []client.Device `json:"sessions"`
	}
	if err := json.Unmarshal(r.Body, &list); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range list.Sessions {
		got = append(got, s.Device)
	}
	slices.Sort(got)
	want := slices.Sorted(slices.Values(labels))
	if !slices.Equal(got, want) {
		t.Fatalf("device labels %q, want %q", got, want)
	}

	r = apiDo(t, n, d.token, http.MethodGet, "/api/v1/activity", nil, nil)
	wantStatus(t, "GET /api/v1/activity", r, http.StatusOK, "")
	var acts struct {
		Events []struct {
			Kind   string `json:"kind"`
			Device string `json:"device"`
		} `json:"events"`
	}
	if err := json.Unmarshal(r.Body, &acts); err != nil {
		t.Fatal(err)
	}
	var logins []string
	for _, e := range acts.Events {
		if e.Kind == session.EventLogin {
			logins = append(logins, e.Device)
		}
	}
	slices.Sort(logins)
	if !slices.Equal(logins, want) {
		t.Fatalf("login events show devices %q, want %q", logins, want)
	}

	r = apiDo(t, n, d.token, http.MethodGet, "/api/v1/vault", nil, nil)
	wantStatus(t, "GET /api/v1/vault", r, http.StatusOK, "")
	if string(r.Body) != "vault of "+d.user {
		t.Fatalf("vault %q", r.Body)
	}
}

// TestKeyRotationRolling is the rolling procedure, without downtime, on nodes sharing one store:
// stage the new keys on every node, make them current with rotate-keys while those nodes run,
// then restart the nodes with the promoted file one by one. At no moment does a node fail to
// read what another wrote or to accept another's tokens.
func TestKeyRotationRolling(t *testing.T) {
	dir, keysDir := t.TempDir(), t.TempDir()
	keyA, keyS, keyP := filepath.Join(keysDir, "a.json"), filepath.Join(keysDir, "staged.json"), filepath.Join(keysDir, "promoted.json")
	env := func(keyFile string) map[string]string {
		return map[string]string{"SESSIOND_DATA_DIR": dir, "SESSIOND_KEY_FILE": keyFile}
	}
	rotateKeys := func() string {
		return mustCLI(t, "admin", "rotate-keys", "-key-file", keyP, "-data-dir", dir)
	}
	mustCLI(t, "keygen", "-o", keyA)
	na := startNode(t, env(keyA))
	alice, _ := account(t, na, "roll-alice", "pw")
	c, first := loginOn(t, na, alice, "pw", "first")
	c.Close()
	na.stop()

	// 1. Stage: the fingerprint is unchanged, so the restarted node needs no rotate-keys.
	out := mustCLI(t, "keygen", "-rotate", "-stage", "-i", keyA, "-o", keyS)
	if !strings.Contains(out, "staged token key t2 and seal key s2") {
		t.Fatalf("keygen -rotate -stage said:\n%s", out)
	}
	ns := startNode(t, env(keyS))
	tokenWorks(t, ns, "first on the staged node", first.Token, first.ID)

	// 2. Promote and re-seal while the staged node serves: it can open s2 already.
	mustCLI(t, "keygen", "-rotate", "-i", keyS, "-o", keyP)
	if _, err := cli(t, "admin", "rotate-keys", "-key-file", keyS, "-data-dir", dir); err == nil {
		t.Fatal("rotate-keys accepted a key file with staged keys")
	}
	rotateKeys()
	c, second := loginOn(t, ns, alice, "pw", "second") // opens the re-sealed record; seals under s1
	c.Close()
	labels := func(n *node, token string) []string {
		r := apiDo(t, n, token, http.MethodGet, "/api/v1/sessions", nil, nil)
		wantStatus(t, "GET /api/v1/sessions", r, http.StatusOK, "")
		var list struct {
			Sessions []client.Device `json:"sessions"`
		}
		_ = json.Unmarshal(r.Body, &list)
		var got []string
		for _, s := range list.Sessions {
			got = append(got, s.Device)
		}
		slices.Sort(got)
		return got
	}

	// 3. A promoted node joins while the staged one still serves.
	np := startNode(t, env(keyP))
	c, third := loginOn(t, np, alice, "pw", "third") // issued under t2, sealed under s2
	c.Close()
	for _, n := range []*node{ns, np, ns} {
		for _, s := range []client.Session{first, second, third} {
			tokenWorks(t, n, "during the roll", s.Token, s.ID)
		}
		if got := labels(n, third.Token); !slices.Equal(got, []string{"first", "second", "third"}) {
			t.Fatalf("device labels during the roll: %q", got)
		}
	}
	ns.stop()

	// 4. Every node runs the promoted file: a last run re-seals what the staged node wrote.
	out = rotateKeys()
	if !strings.Contains(out, "seal key s1: no value is sealed under it any more") ||
		resealed(t, out, session.SealedDevices) != 1 || resealed(t, out, session.SealedEventDetails) != 1 {
		t.Fatalf("last rotate-keys:\n%s", out)
	}
	if got := sealedByKey(t, openSQLiteAt(t, dir)); got["s1"] != 0 {
		t.Fatalf("values left under s1: %v", got)
	}
	if got := labels(np, first.Token); !slices.Equal(got, []string{"first", "second", "third"}) {
		t.Fatalf("device labels after the roll: %q", got)
	}
}

// resealed reads how many values of table rotate-keys said it re-sealed.
func resealed(t *testing.T, out, table string) int {
	t.Helper()
	m := regexp.MustCompile(regexp.QuoteMeta(table) + `\s+\d+ values:\s+(\d+) re-sealed`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("rotate-keys output has no line for %s:\n%s", table, out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func openSQLiteAt(t *testing.T, dir string) session.Backend {
	t.Helper()
	st, err := store.OpenSQLite(t.Context(), filepath.Join(dir, "sessiond.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
