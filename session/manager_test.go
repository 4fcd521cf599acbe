package session_test

import (
	"context"
	"crypto/rand"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/bytemare/opaque"
	"github.com/rs/zerolog"

	"github.com/sessiond/sessiond/internal/testclock"
	"github.com/sessiond/sessiond/session"
	"github.com/sessiond/sessiond/store"
)

// recorder is a Notifier that remembers what it was told.
type recorder struct {
	mu      sync.Mutex
	revoked map[string]string // session id -> reason
	changed int
}

func (r *recorder) Revoked(_ context.Context, _ string, ids []string, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		r.revoked[id] = reason
	}
}
func (r *recorder) Changed(context.Context, string, []session.Info) {
	r.mu.Lock()
	r.changed++
	r.mu.Unlock()
}
func (r *recorder) Rotated(context.Context, string, string) {}
func (r *recorder) reason(id string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.revoked[id]
}

type fixture struct {
	m     *session.Manager
	clock *testclock.Clock
	rec   *recorder
	st    *store.SQLite
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newFixture(t *testing.T, p session.Policy) *fixture {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{clock: testclock.New(t0), rec: &recorder{revoked: map[string]string{}}, st: st}
	f.m, err = session.NewManager(session.Config{Store: st, Keys: session.GenerateKeys(), Policy: p, Clock: f.clock, Notifier: f.rec, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

var cheapKSF = &opaque.ClientOptions{KSFSalt: make([]byte, 16), KSFLength: 64, KSFParameters: []uint64{1, 64, 1}}

func (f *fixture) register(t *testing.T, name, pw string) string {
	t.Helper()
	ctx := context.Background()
	c, _ := opaque.DefaultConfiguration().Client()
	req, _ := c.RegistrationInit([]byte(pw))
	resp, reg, err := f.m.RegisterStart(ctx, name, req.Serialize())
	if err != nil {
		t.Fatal(err)
	}
	r, _ := c.Deserialize.RegistrationResponse(resp)
	rec, _, err := c.RegistrationFinalize(r, nil, nil, cheapKSF)
	if err != nil {
		t.Fatal(err)
	}
	id, err := f.m.RegisterFinish(ctx, reg, rec.Serialize())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func (f *fixture) login(t *testing.T, name, pw string) (session.Info, string, error) {
	t.Helper()
	ctx := context.Background()
	c, _ := opaque.DefaultConfiguration().Client()
	ke1, _ := c.GenerateKE1([]byte(pw))
	ke2b, l, err := f.m.LoginStart(ctx, name, ke1.Serialize())
	if err != nil {
		return session.Info{}, "", err
	}
	ke2, _ := c.Deserialize.KE2(ke2b)
	ke3, _, _, err := c.GenerateKE3(ke2, nil, nil, cheapKSF)
	ke3b := make([]byte, 64)
	_, _ = rand.Read(ke3b) // a wrong password still sends a well-formed KE3, as the Go client does
	if err == nil {
		ke3b = ke3.Serialize()
	}
	return f.m.LoginFinish(ctx, l, ke3b, session.DeviceInfo{Label: "test"})
}

func (f *fixture) mustLogin(t *testing.T, name string) (session.Info, string) {
	t.Helper()
	i, tok, err := f.login(t, name, "pw")
	if err != nil {
		t.Fatal(err)
	}
	return i, tok
}

func TestLoginAndValidate(t *testing.T) {
	f := newFixture(t, session.Policy{})
	ctx := context.Background()
	uid := f.register(t, "Bob", "pw")
	if _, _, err := f.m.RegisterStart(ctx, "BOB", []byte("x")); !errors.Is(err, session.ErrUsernameTaken) {
		t.Fatalf("taken name: %v", err)
	}
	info, tok := f.mustLogin(t, "bob")
	if info.UserID != uid {
		t.Fatal("wrong user")
	}
	s, err := f.m.Validate(ctx, tok)
	if err != nil || s.ID != info.ID {
		t.Fatalf("validate: %v", err)
	}
	if _, _, err := f.login(t, "bob", "wrong"); !errors.Is(err, session.ErrAuthFailed) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, _, err := f.login(t, "nobody", "pw"); !errors.Is(err, session.ErrAuthFailed) {
		t.Fatalf("unknown user: %v", err)
	}
	for _, bad := range []string{"", "sdt_", "bearer", tok + "x"} {
		if _, err := f.m.Validate(ctx, bad); !errors.Is(err, session.ErrInvalid) {
			t.Fatalf("Validate(%q): %v", bad, err)
		}
	}
}

// TestFakeRecordIsStable: probes of one unknown name meet the same OPRF key, so the evaluated
// element is equal across probes with the same blinded input, as a real user's would be.
func TestFakeRecordIsStable(t *testing.T) {
	f := newFixture(t, session.Policy{})
	ctx := context.Background()
	c, _ := opaque.DefaultConfiguration().Client()
	ke1, _ := c.GenerateKE1([]byte("pw"))
	a, _, err := f.m.LoginStart(ctx, "ghost", ke1.Serialize())
	if err != nil {
		t.Fatal(err)
	}
	b, _, _ := f.m.LoginStart(ctx, "GHOST", ke1.Serialize())
	other, _, _ := f.m.LoginStart(ctx, "ghost2", ke1.Serialize())
	// KE2 starts with the evaluated element (32 bytes) for the same blinded element.
	if string(a[:32]) != string(b[:32]) {
		t.Fatal("fake OPRF output differs between probes of one name")
	}
	if string(a[:32]) == string(other[:32]) {
		t.Fatal("fake OPRF output equal for two names")
	}
	if len(a) != len(other) {
		t.Fatal("fake KE2 lengths differ")
	}
	f.register(t, "real", "pw")
	r, _, _ := f.m.LoginStart(ctx, "real", ke1.Serialize())
	if len(r) != len(a) {
		t.Fatalf("real KE2 is %d bytes, fake %d", len(r), len(a))
	}
}

func TestIdleAndAbsoluteDeadlines(t *testing.T) {
	p := session.Policy{IdleTimeout: 10 * time.Minute, AbsoluteTimeout: 25 * time.Minute, RefreshLead: time.Minute}
	f := newFixture(t, p)
	ctx := context.Background()
	f.register(t, "carol", "pw")
	info, tok := f.mustLogin(t, "carol")
	if !info.IdleExpiresAt.Equal(t0.Add(10*time.Minute)) || !info.ExpiresAt.Equal(t0.Add(25*time.Minute)) {
		t.Fatalf("deadlines %v %v", info.IdleExpiresAt, info.ExpiresAt)
	}
	// Activity at +9m moves the idle deadline to +19m.
	f.clock.Advance(9 * time.Minute)
	s, err := f.m.Validate(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	s = f.m.Touch(s)
	if !s.IdleExpiresAt.Equal(t0.Add(19 * time.Minute)) {
		t.Fatalf("touched idle deadline %v", s.IdleExpiresAt)
	}
	// The write is coalesced but visible to this node at once, and reaches the store on flush.
	f.clock.Advance(2 * time.Minute) // +11m: past the first idle deadline
	if _, err := f.m.Validate(ctx, tok); err != nil {
		t.Fatalf("validate after touch: %v", err)
	}
	f.m.FlushActivity(ctx)
	row, _ := f.st.SessionByID(ctx, info.ID)
	if !row.IdleExpiresAt.Equal(t0.Add(19 * time.Minute)) {
		t.Fatalf("stored idle deadline %v", row.IdleExpiresAt)
	}
	// Activity near the end never pushes the idle deadline past the absolute one.
	f.clock.Advance(8*time.Minute - time.Second) // +18:59, just inside the idle deadline
	s, err = f.m.Validate(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	s = f.m.Touch(s)
	if !s.IdleExpiresAt.Equal(info.ExpiresAt) {
		t.Fatalf("idle deadline %v should be clamped to %v", s.IdleExpiresAt, info.ExpiresAt)
	}
	f.clock.Advance(6*time.Minute + time.Second) // +25m: absolute deadline
	if _, err := f.m.Validate(ctx, tok); !errors.Is(err, session.ErrInvalid) {
		t.Fatalf("after the absolute deadline: %v", err)
	}

	// A session left alone dies at its idle deadline.
	_, tok2 := f.mustLogin(t, "carol")
	f.clock.Advance(10*time.Minute - time.Second)
	if _, err := f.m.Validate(ctx, tok2); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Second)
	if _, err := f.m.Validate(ctx, tok2); !errors.Is(err, session.ErrInvalid) {
		t.Fatalf("after the idle deadline: %v", err)
	}
}

func TestRotationGraceAndReuse(t *testing.T) {
	f := newFixture(t, session.Policy{RotationGrace: 30 * time.Second})
	ctx := context.Background()
	f.register(t, "dave", "pw")
	info, old := f.mustLogin(t, "dave")
	_, fresh, err := f.m.Refresh(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	if fresh == old {
		t.Fatal("refresh returned the same token")
	}
	// Within the grace period both work; refreshing with the old one is a conflict.
	f.clock.Advance(29 * time.Second)
	if _, err := f.m.Validate(ctx, old); err != nil {
		t.Fatalf("old token within grace: %v", err)
	}
	if _, _, err := f.m.Refresh(ctx, old); !errors.Is(err, session.ErrConflict) {
		t.Fatalf("refresh with a retired token: %v", err)
	}
	// After the grace period the old token is a reuse: the whole session is revoked.
	f.clock.Advance(time.Second)
	if _, err := f.m.Validate(ctx, old); !errors.Is(err, session.ErrTokenReuse) {
		t.Fatalf("old token after grace: %v", err)
	}
	if f.rec.reason(info.ID) != session.ReasonTokenReuse {
		t.Fatalf("reuse not notified: %q", f.rec.reason(info.ID))
	}
	if _, err := f.m.Validate(ctx, fresh); !errors.Is(err, session.ErrInvalid) {
		t.Fatalf("new token after reuse: %v", err)
	}
}

func TestLimitPolicies(t *testing.T) {
	f := newFixture(t, session.Policy{MaxSessions: 2})
	f.register(t, "erin", "pw")
	a, _ := f.mustLogin(t, "erin")
	f.clock.Advance(time.Second)
	f.mustLogin(t, "erin")
	f.clock.Advance(time.Second)
	f.mustLogin(t, "erin")
	if f.rec.reason(a.ID) != session.ReasonSessionLimit {
		t.Fatalf("oldest not evicted: %q", f.rec.reason(a.ID))
	}
	list, _ := f.m.List(context.Background(), a.UserID)
	if len(list) != 2 {
		t.Fatalf("%d live sessions, want 2", len(list))
	}

	g := newFixture(t, session.Policy{MaxSessions: 1, LimitPolicy: session.DenyNew})
	g.register(t, "frank", "pw")
	g.mustLogin(t, "frank")
	if _, _, err := g.login(t, "frank", "pw"); !errors.Is(err, session.ErrSessionLimit) {
		t.Fatalf("deny_new: %v", err)
	}
}

func TestRevokeAndPasswordChange(t *testing.T) {
	f := newFixture(t, session.Policy{})
	ctx := context.Background()
	f.register(t, "gina", "pw")
	f.register(t, "hank", "pw")
	a, ta := f.mustLogin(t, "gina")
	b, _ := f.mustLogin(t, "gina")
	c, _ := f.mustLogin(t, "gina")
	h, _ := f.mustLogin(t, "hank")
	sa, _ := f.m.Validate(ctx, ta)
	if _, err := f.m.Revoke(ctx, sa, h.ID); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("revoking another user's session: %v", err)
	}
	if ids, err := f.m.Revoke(ctx, sa, b.ID); err != nil || len(ids) != 1 || f.rec.reason(b.ID) != session.ReasonRevokedByUser {
		t.Fatalf("revoke: %v %v", ids, err)
	}
	// Password change revokes every other session with password_changed.
	cl, _ := opaque.DefaultConfiguration().Client()
	req, _ := cl.RegistrationInit([]byte("new pw"))
	resp, err := f.m.PasswordChangeStart(ctx, sa, req.Serialize())
	if err != nil {
		t.Fatal(err)
	}
	r, _ := cl.Deserialize.RegistrationResponse(resp)
	rec, _, _ := cl.RegistrationFinalize(r, nil, nil, cheapKSF)
	ids, err := f.m.PasswordChangeFinish(ctx, sa, 1, rec.Serialize())
	if err != nil || len(ids) != 1 || ids[0] != c.ID || f.rec.reason(c.ID) != session.ReasonPasswordChanged {
		t.Fatalf("password change revoked %v, %v", ids, err)
	}
	if _, err := f.m.Validate(ctx, ta); err != nil {
		t.Fatalf("the changing session must survive: %v", err)
	}
	if _, _, err := f.login(t, "gina", "pw"); !errors.Is(err, session.ErrAuthFailed) {
		t.Fatalf("old password still works: %v", err)
	}
	if _, _, err := f.login(t, "gina", "new pw"); err != nil {
		t.Fatalf("new password: %v", err)
	}
	_ = a
}

// batchStore records the limit and result of every DeleteEnded call.
type batchStore struct {
	session.Store
	mu    sync.Mutex
	calls [][2]int // {limit, deleted}
}

func (b *batchStore) DeleteEnded(ctx context.Context, before time.Time, limit int) (int, error) {
	n, err := b.Store.DeleteEnded(ctx, before, limit)
	b.mu.Lock()
	b.calls = append(b.calls, [2]int{limit, n})
	b.mu.Unlock()
	return n, err
}

func TestSweepDeletesEndedInBatches(t *testing.T) {
	f := newFixture(t, session.Policy{})
	bs := &batchStore{Store: f.st}
	var err error
	f.m, err = session.NewManager(session.Config{Store: bs, Keys: session.GenerateKeys(), Clock: f.clock, Notifier: f.rec, Logger: zerolog.Nop(),
		Policy: session.Policy{IdleTimeout: time.Minute, RefreshLead: time.Second, Retention: time.Hour, SweepBatch: 2}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	f.register(t, "ivy", "pw")
	for i := 0; i < 5; i++ {
		f.mustLogin(t, "ivy")
	}
	if n, _ := f.m.Sweep(ctx); n != 0 {
		t.Fatalf("swept %d live sessions", n)
	}
	f.clock.Advance(time.Minute + time.Hour) // ended exactly at the retention bound: kept
	if n, _ := f.m.Sweep(ctx); n != 0 {
		t.Fatalf("swept %d sessions inside retention", n)
	}
	f.clock.Advance(time.Second)
	bs.calls = nil
	if n, err := f.m.Sweep(ctx); n != 5 || err != nil {
		t.Fatalf("swept %d, %v; want 5", n, err)
	}
	// Five rows in batches of two: 2, 2, 1, and the short batch ends the sweep.
	want := [][2]int{{2, 2}, {2, 2}, {2, 1}}
	if !slices.Equal(bs.calls, want) {
		t.Fatalf("DeleteEnded calls {limit, deleted} = %v, want %v", bs.calls, want)
	}
}

// pausingStore holds a SessionByToken read, after it read the row, until released: a read
// that returns a session as it was before a revocation committed.
type pausingStore struct {
	session.Store
	read    chan struct{} // closed when a paused read has its row
	release chan struct{}
	armed   bool
}

func (p *pausingStore) SessionByToken(ctx context.Context, h []byte) (session.Session, session.TokenMatch, error) {
	s, m, err := p.Store.SessionByToken(ctx, h)
	if p.armed {
		p.armed = false
		close(p.read)
		<-p.release
	}
	return s, m, err
}

// TestCacheFillRacingRevocation: a validation whose store read raced a revocation must not put
// the pre-revocation row into the cache (it would be served as live until the TTL).
func TestCacheFillRacingRevocation(t *testing.T) {
	st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ps := &pausingStore{Store: st, read: make(chan struct{}), release: make(chan struct{})}
	f := &fixture{clock: testclock.New(t0), rec: &recorder{revoked: map[string]string{}}, st: st}
	f.m, err = session.NewManager(session.Config{Store: ps, Keys: session.GenerateKeys(), Policy: session.Policy{CacheTTL: time.Hour},
		Clock: f.clock, Notifier: f.rec, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	f.register(t, "ivy", "pw")
	info, token := f.mustLogin(t, "ivy")
	caller, _ := f.mustLogin(t, "ivy")
	callerSess, err := f.m.Check(ctx, caller.ID)
	if err != nil {
		t.Fatal(err)
	}

	ps.armed = true
	done := make(chan error, 1)
	go func() {
		_, err := f.m.Validate(ctx, token)
		done <- err
	}()
	<-ps.read // the row is read, live; the revocation commits before the read returns
	if _, err := f.m.Revoke(ctx, callerSess, info.ID); err != nil {
		t.Fatal(err)
	}
	close(ps.release)
	if err := <-done; err != nil {
		t.Fatalf("the racing validation: %v", err) // it read before the revocation: live then
	}
	if _, err := f.m.Validate(ctx, token); !errors.Is(err, session.ErrInvalid) {
		t.Fatalf("validation after the revocation: %v, want ErrInvalid (the racing read was cached)", err)
	}
}

// coreOnly is a store with the core operations alone: no EventStore, no KeyStore.
type coreOnly struct{ session.Store }

// TestStoreWithoutEvents: a Manager over a store that keeps no events logs them only; logins
// and the activity list still work.
func TestStoreWithoutEvents(t *testing.T) {
	f := newFixture(t, session.Policy{})
	var err error
	f.m, err = session.NewManager(session.Config{Store: coreOnly{f.st}, Keys: session.GenerateKeys(), Clock: f.clock, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	uid := f.register(t, "nell", "pw")
	f.mustLogin(t, "nell")
	if list, err := f.m.Activity(context.Background(), uid, 10); err != nil || len(list) != 0 {
		t.Fatalf("activity without an event store: %v %v", list, err)
	}
}

// TestCachedSessionBehindOtherNode: node A's cache holds a session whose idle deadline node B
// has since moved (activity there); when A's copy looks over, A asks the store before refusing,
// by token (Validate) and by id (Check), however long its cache TTL.
func TestCachedSessionBehindOtherNode(t *testing.T) {
	p := session.Policy{IdleTimeout: 10 * time.Minute, AbsoluteTimeout: time.Hour, CacheTTL: time.Hour}
	f := newFixture(t, p)
	ctx := context.Background()
	keys := session.GenerateKeys()
	var err error
	f.m, err = session.NewManager(session.Config{Store: f.st, Keys: keys, Policy: p, Clock: f.clock, Notifier: f.rec, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := session.NewManager(session.Config{Store: f.st, Keys: keys, Policy: p, Clock: f.clock, Notifier: &recorder{revoked: map[string]string{}}, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	f.register(t, "dora", "pw")
	info, tok := f.mustLogin(t, "dora")
	f.clock.Advance(time.Minute)
	if _, err := f.m.Validate(ctx, tok); err != nil { // A caches the row: idle deadline +10m
		t.Fatal(err)
	}
	f.clock.Advance(7 * time.Minute) // +8m: the device is active on node B
	s, err := b.Validate(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	b.Touch(s)
	b.FlushActivity(ctx)             // the store now says +18m
	f.clock.Advance(4 * time.Minute) // +12m: past A's cached deadline, before the real one
	if _, err := f.m.Validate(ctx, tok); err != nil {
		t.Fatalf("node A refused a session active on node B: %v", err)
	}
	if _, err := f.m.Check(ctx, info.ID); err != nil {
		t.Fatalf("node A's Check refused a session active on node B: %v", err)
	}
	f.clock.Advance(7 * time.Minute) // +19m: past the real idle deadline
	if _, err := f.m.Validate(ctx, tok); !errors.Is(err, session.ErrInvalid) {
		t.Fatalf("after the real idle deadline: %v", err)
	}
}
