package session_test

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/sessiond/sessiond/internal/testclock"
	"github.com/sessiond/sessiond/session"
	"github.com/sessiond/sessiond/store"
)

func reparse(t *testing.T, k *session.Keys) *session.Keys {
	t.Helper()
	data, err := k.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	k2, err := session.ParseKeys(data)
	if err != nil {
		t.Fatal(err)
	}
	return k2
}

func TestKeysRotateStageRetire(t *testing.T) {
	a := session.GenerateKeys()
	b := reparse(t, a.Successor())
	if b.CurrentTokenKey != "t2" || b.CurrentSealKey != "s2" {
		t.Fatalf("rotated current keys %s %s, want t2 s2", b.CurrentTokenKey, b.CurrentSealKey)
	}
	if !slices.Equal(slices.Sorted(maps.Keys(b.TokenKeys)), []string{"t1", "t2"}) ||
		!slices.Equal(slices.Sorted(maps.Keys(b.SealKeys)), []string{"s1", "s2"}) {
		t.Fatalf("rotated keys %v %v", slices.Collect(maps.Keys(b.TokenKeys)), slices.Collect(maps.Keys(b.SealKeys)))
	}
	if !bytes.Equal(b.TokenKeys["t1"], a.TokenKeys["t1"]) || !bytes.Equal(b.SealKeys["s1"], a.SealKeys["s1"]) ||
		bytes.Equal(b.TokenKeys["t2"], a.TokenKeys["t1"]) || bytes.Equal(b.SealKeys["s2"], a.SealKeys["s1"]) {
		t.Fatal("rotation did not keep the old keys or made no fresh ones")
	}
	for name, pair := range map[string][2][]byte{
		"oprf seed": {a.OPRFSeed, b.OPRFSeed}, "AKE private key": {a.AKEPrivateKey, b.AKEPrivateKey},
		"AKE public key": {a.AKEPublicKey, b.AKEPublicKey}, "fake key": {a.FakeKey, b.FakeKey}, "log key": {a.LogKey, b.LogKey},
	} {
		if !bytes.Equal(pair[0], pair[1]) {
			t.Fatalf("rotation changed the %s", name)
		}
	}
	if a.Fingerprint() == b.Fingerprint() {
		t.Fatal("a rotation kept the fingerprint: nodes with old and new keys would not be told apart")
	}
	if a.LogID("s") != b.LogID("s") {
		t.Fatal("rotation changed the log ids")
	}
	// The admin token is the key file's own secret, replaced by every rotation: a copy of an
	// old key file no longer administers the deployment.
	if a.AdminToken() == b.AdminToken() || len(b.AdminKey) != 32 || bytes.Equal(a.AdminKey, b.AdminKey) {
		t.Fatal("rotation kept the admin token")
	}
	legacy := *a
	legacy.AdminKey = nil
	if !legacy.LegacyAdminToken() || legacy.AdminToken() == a.AdminToken() || a.LegacyAdminToken() {
		t.Fatal("the admin token of a key file without an admin key is not the legacy one")
	}
	// The rotation did not touch its input.
	if a.CurrentTokenKey != "t1" || len(a.TokenKeys) != 1 || len(a.SealKeys) != 1 {
		t.Fatal("Rotate changed its receiver")
	}

	// Values sealed under the old key still open; new ones are sealed under the new key.
	old := session.SealWith(a, []byte("label"), "device:x")
	if pt, err := session.OpenWith(b, old, "device:x"); err != nil || string(pt) != "label" {
		t.Fatalf("old value under rotated keys: %q %v", pt, err)
	}
	if id := session.SealKeyID(session.SealWith(b, []byte("label"), "device:x")); id != "s2" {
		t.Fatalf("sealed under %q, want s2", id)
	}

	// Retire: only older keys; the fingerprint stays.
	for _, id := range []string{"t2", "s2", "nope", ""} {
		if _, err := b.Retire(id); err == nil {
			t.Fatalf("Retire(%q) succeeded", id)
		}
	}
	c, err := b.Retire("s1")
	if err != nil {
		t.Fatal(err)
	}
	c = reparse(t, c)
	if _, ok := c.SealKeys["s1"]; ok || len(c.TokenKeys) != 2 || c.Fingerprint() != b.Fingerprint() {
		t.Fatalf("after retiring s1: seal keys %v, fingerprint changed %v", slices.Collect(maps.Keys(c.SealKeys)), c.Fingerprint() != b.Fingerprint())
	}
	if _, err := session.OpenWith(c, old, "device:x"); err == nil {
		t.Fatal("a value sealed under a retired key still opened")
	}
	d, err := c.Retire("t1")
	if err != nil || len(d.TokenKeys) != 1 || d.Fingerprint() != b.Fingerprint() {
		t.Fatalf("retire t1: %v", err)
	}
	// New ids follow the highest one left: t3 and s3 after t2 and s2.
	if e := d.Successor(); e.CurrentTokenKey != "t3" || e.CurrentSealKey != "s3" {
		t.Fatalf("next ids %s %s, want t3 s3", e.CurrentTokenKey, e.CurrentSealKey)
	}

	// Staging adds keys that are not current: same fingerprint; rotating then promotes them.
	s, err := a.Stage()
	if err != nil {
		t.Fatal(err)
	}
	s = reparse(t, s)
	if s.CurrentTokenKey != "t1" || s.NextTokenKey != "t2" || s.CurrentSealKey != "s1" || s.NextSealKey != "s2" {
		t.Fatalf("staged: current %s %s, next %s %s", s.CurrentTokenKey, s.CurrentSealKey, s.NextTokenKey, s.NextSealKey)
	}
	if s.Fingerprint() != a.Fingerprint() {
		t.Fatal("staging changed the fingerprint")
	}
	if _, err := s.Stage(); err == nil {
		t.Fatal("staged twice")
	}
	for _, id := range []string{"t2", "s2"} {
		if _, err := s.Retire(id); err == nil {
			t.Fatalf("retired the staged key %s", id)
		}
	}
	p := reparse(t, s.Successor())
	if p.CurrentTokenKey != "t2" || p.CurrentSealKey != "s2" || p.NextTokenKey != "" || p.NextSealKey != "" ||
		!bytes.Equal(p.TokenKeys["t2"], s.TokenKeys["t2"]) || !bytes.Equal(p.SealKeys["s2"], s.SealKeys["s2"]) || len(p.TokenKeys) != 2 {
		t.Fatal("rotating staged keys did not promote them")
	}
	if p.Fingerprint() == a.Fingerprint() {
		t.Fatal("promoting staged keys kept the fingerprint")
	}

	// A key file naming a missing or current key as next is refused.
	for _, bad := range []func(k *session.Keys){
		func(k *session.Keys) { k.NextTokenKey = "t9" },
		func(k *session.Keys) { k.NextSealKey = k.CurrentSealKey },
	} {
		k := a.Successor()
		bad(k)
		data, _ := k.Marshal()
		if _, err := session.ParseKeys(data); err == nil {
			t.Fatal("a key file with a bad next key was accepted")
		}
	}
}

// world is one store shared by managers with different key files, as nodes are.
type world struct {
	st    *store.SQLite
	clock *testclock.Clock
}

func newWorld(t *testing.T) *world {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &world{st: st, clock: testclock.New(t0)}
}

// node returns a fixture (register/login helpers) on the shared store with keys k.
func (w *world) node(t *testing.T, st session.Backend, k *session.Keys) *fixture {
	t.Helper()
	m, err := session.NewManager(session.Config{Store: st, Keys: k, Clock: w.clock, Logger: zerolog.Nop(),
		Policy: session.Policy{AbsoluteTimeout: 12 * time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{m: m, clock: w.clock, rec: &recorder{revoked: map[string]string{}}, st: w.st}
}

// sealedUnder counts the store's sealed values by seal key id.
func (w *world) sealedUnder(t *testing.T) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, table := range session.SealedTables {
		vals, err := w.st.SealedValues(context.Background(), table, "", 10_000)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range vals {
			out[session.SealKeyID(v.Value)]++
		}
	}
	return out
}

func total(counts map[string]session.RewrapCount) (scanned, resealed, current, changed int) {
	for _, c := range counts {
		scanned += c.Scanned
		resealed += c.Resealed
		current += c.Current
		changed += c.Changed
		if len(c.Unreadable) > 0 {
			panic("unreadable values")
		}
	}
	return
}

// TestRewrapAndLazyRehash is the whole rotation on one store: after it every session still
// validates, every sealed value opens, and the old keys can be retired one by one.
func TestRewrapAndLazyRehash(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	a := session.GenerateKeys()
	na := w.node(t, w.st, a)
	aliceID := na.register(t, "alice", "pw")
	na.register(t, "bob", "pw")
	var tokens []string
	var ids []string
	for _, name := range []string{"alice", "alice", "alice", "bob"} {
		info, tok := na.mustLogin(t, name)
		tokens, ids = append(tokens, tok), append(ids, info.ID)
	}
	// One token rotated before the key rotation: its retired hash is under t1.
	_, refreshed, err := na.m.Refresh(ctx, tokens[0])
	if err != nil {
		t.Fatal(err)
	}
	retiredToken := tokens[0]
	tokens[0] = refreshed
	if got := w.sealedUnder(t); got["s1"] != 2+4+4 || len(got) != 1 {
		t.Fatalf("before rotation: %v", got)
	}

	// Rotate, then re-seal in batches of 2 (pages that end exactly on the batch size too).
	b := a.Successor()
	counts, err := session.RewrapBatched(ctx, w.st, b, zerolog.Nop(), 2)
	if err != nil {
		t.Fatal(err)
	}
	if scanned, resealed, _, _ := total(counts); scanned != 10 || resealed != 10 ||
		counts[session.SealedUserRecords].Resealed != 2 || counts[session.SealedDevices].Resealed != 4 || counts[session.SealedEventDetails].Resealed != 4 {
		t.Fatalf("rewrap counts %+v", counts)
	}
	if got := w.sealedUnder(t); got["s2"] != 10 || len(got) != 1 {
		t.Fatalf("after rewrap: %v", got)
	}
	// Idempotent: a second run finds everything current.
	counts, err = session.Rewrap(ctx, w.st, b, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if scanned, resealed, current, _ := total(counts); scanned != 10 || resealed != 0 || current != 10 {
		t.Fatalf("second rewrap %+v", counts)
	}

	// The old seal key goes; the old token key stays until the tokens were used.
	c, err := b.Retire("s1")
	if err != nil {
		t.Fatal(err)
	}
	nc := w.node(t, w.st, c)
	for i, tok := range tokens[:3] {
		s, err := nc.m.Validate(ctx, tok)
		if err != nil || s.ID != ids[i] {
			t.Fatalf("token %d after rotation: %v", i, err)
		}
		if !bytes.Equal(s.TokenHash, session.TokenHashUnder(c, "t2", tok)) {
			t.Fatalf("token %d was not re-hashed under t2", i)
		}
	}
	// The retired token is still within its grace period: accepted, and not moved.
	if _, err := nc.m.Validate(ctx, retiredToken); err != nil {
		t.Fatalf("retired token within grace: %v", err)
	}
	list, err := nc.m.List(ctx, aliceID)
	if err != nil || len(list) != 3 {
		t.Fatalf("devices: %d %v", len(list), err)
	}
	for _, d := range list {
		if d.Device.Label != "test" {
			t.Fatalf("device label %q after rotation", d.Device.Label)
		}
	}
	acts, err := nc.m.Activity(ctx, aliceID, 20)
	if err != nil {
		t.Fatal(err)
	}
	logins := 0
	for _, a := range acts {
		if a.Kind == session.EventLogin {
			logins++
			if a.Device != "test" {
				t.Fatalf("activity detail %+v did not open", a)
			}
		}
	}
	if logins != 3 {
		t.Fatalf("%d login events, want 3", logins)
	}
	// Registration records open: logins work.
	_, fresh := nc.mustLogin(t, "bob")
	// A re-hashed token refreshes normally.
	_, rotated, err := nc.m.Refresh(ctx, tokens[1])
	if err != nil {
		t.Fatalf("refresh after re-hash: %v", err)
	}
	tokens[1] = rotated

	// Retire the old token key: used tokens still work; bob's first token, never used since the
	// rotation, was never re-hashed and is now unknown.
	d, err := c.Retire("t1")
	if err != nil {
		t.Fatal(err)
	}
	nd := w.node(t, w.st, d)
	for i, tok := range append(tokens[:3:3], fresh) {
		if _, err := nd.m.Validate(ctx, tok); err != nil {
			t.Fatalf("token %d with t1 retired: %v", i, err)
		}
	}
	if _, err := nd.m.Validate(ctx, tokens[3]); !errors.Is(err, session.ErrInvalid) {
		t.Fatalf("unused pre-rotation token with t1 retired: %v", err)
	}
}

// racingStore writes a value sealed by a node that still runs the old keys in the middle of a
// re-seal batch, between Rewrap's read and its update.
type racingStore struct {
	session.Backend
	concurrent func(updates []session.Reseal)
}

func (r *racingStore) ResealValues(ctx context.Context, table string, updates []session.Reseal) (int, error) {
	if r.concurrent != nil && table == session.SealedDevices {
		r.concurrent(updates)
		r.concurrent = nil
	}
	return r.Backend.ResealValues(ctx, table, updates)
}

func TestRewrapLeavesConcurrentWrites(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	a := session.GenerateKeys()
	na := w.node(t, w.st, a)
	na.register(t, "alice", "pw")
	for range 3 {
		na.mustLogin(t, "alice")
	}
	b := a.Successor()
	var victim string
	var written []byte
	rs := &racingStore{Backend: w.st, concurrent: func(updates []session.Reseal) {
		u := updates[0]
		victim, written = u.ID, session.SealWith(a, []byte(`{"label":"written meanwhile"}`), "device:"+u.ID)
		if n, err := w.st.ResealValues(ctx, session.SealedDevices, []session.Reseal{{ID: u.ID, Old: u.Old, New: written}}); n != 1 || err != nil {
			t.Errorf("concurrent write: %d %v", n, err)
		}
	}}
	counts, err := session.Rewrap(ctx, rs, b, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if c := counts[session.SealedDevices]; c.Changed != 1 || c.Resealed != 2 {
		t.Fatalf("devices %+v, want 1 changed and 2 re-sealed", c)
	}
	// The concurrent value won; the next run re-seals it.
	s, err := w.st.SessionByID(ctx, victim)
	if err != nil || !bytes.Equal(s.Device, written) {
		t.Fatalf("the concurrent write was overwritten: %v", err)
	}
	if got := w.sealedUnder(t); got["s1"] != 1 {
		t.Fatalf("after a racing rewrap: %v", got)
	}
	counts, err = session.Rewrap(ctx, w.st, b, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if c := counts[session.SealedDevices]; c.Changed != 0 || c.Resealed != 1 {
		t.Fatalf("second run %+v", c)
	}
	if got := w.sealedUnder(t); got["s1"] != 0 {
		t.Fatalf("after the second run: %v", got)
	}
	nb := w.node(t, w.st, b)
	s, _ = w.st.SessionByID(ctx, victim)
	if nb.m.Device(s).Label != "written meanwhile" {
		t.Fatalf("re-sealed concurrent value: %+v", nb.m.Device(s))
	}

	// A value no key of the file opens is reported, not fatal, and left alone.
	c, _ := b.Retire("s1")
	stray := session.SealWith(session.GenerateKeys(), []byte("x"), "device:"+victim)
	if n, err := w.st.ResealValues(ctx, session.SealedDevices, []session.Reseal{{ID: victim, Old: s.Device, New: stray}}); n != 1 || err != nil {
		t.Fatal(n, err)
	}
	counts, err = session.Rewrap(ctx, w.st, c, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	// The stray value is under "s1" (GenerateKeys names its seal key s1 too), a key c no
	// longer has: unreadable.
	if got := counts[session.SealedDevices].Unreadable; got["s1"] != 1 {
		t.Fatalf("unreadable %v", got)
	}
}

// TestStagedRollingRotation: during a rolling rotation nodes with the staged file (current
// t1, next t2) and nodes with the promoted file (current t2) share the store. Each accepts the
// other's tokens, and the token hashes only ever move forward, to t2.
func TestStagedRollingRotation(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	a := session.GenerateKeys()
	staged, err := a.Stage()
	if err != nil {
		t.Fatal(err)
	}
	promoted := staged.Successor()
	ns, np := w.node(t, w.st, staged), w.node(t, w.st, promoted)
	ns.register(t, "alice", "pw")

	info, tokOld := ns.mustLogin(t, "alice") // issued under t1
	_, tokNew := np.mustLogin(t, "alice")    // issued under t2
	for _, n := range []*fixture{ns, np, ns} {
		w.clock.Advance(time.Minute) // past the validation cache: every round reads the store
		for _, tok := range []string{tokOld, tokNew} {
			if _, err := n.m.Validate(ctx, tok); err != nil {
				t.Fatalf("validate across a rolling rotation: %v", err)
			}
		}
	}
	// tokOld was re-hashed by the promoted node and not moved back by the staged one.
	s, err := w.st.SessionByID(ctx, info.ID)
	if err != nil || !bytes.Equal(s.TokenHash, session.TokenHashUnder(promoted, "t2", tokOld)) {
		t.Fatalf("token hash after use on both nodes is not under t2 (%v)", err)
	}
	// Both read what the other sealed.
	list, _ := ns.m.List(ctx, info.UserID)
	for _, d := range list {
		if d.Device.Label != "test" {
			t.Fatalf("staged node reads device %q", d.Device.Label)
		}
	}
}
