package store

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sessiond/sessiond/session"
)

// t0 is the suite's "now". Times are whole milliseconds so that what comes back from the store
// can be compared exactly.
var t0 = time.UnixMilli(1_767_225_600_000).UTC()

// at is t0 plus d.
func at(d time.Duration) time.Time { return t0.Add(d) }

// runConformance runs the behaviour every session.Backend must share against the stores that open
// returns, one fresh, empty store per subtest.
func runConformance(t *testing.T, open func(t *testing.T) session.Backend) {
	tests := []struct {
		name string
		run  func(t *testing.T, st session.Backend)
	}{
		{"users/create and look up", testUserLookup},
		{"users/duplicate username", testUserDuplicate},
		{"users/bad input", testUserBadInput},
		{"sessions/create and look up", testSessionLookup},
		{"sessions/lookups return ended sessions", testSessionLookupEnded},
		{"sessions/list live oldest first", testListSessions},
		{"limit/deny", testLimitDeny},
		{"limit/evict oldest", testLimitEvict},
		{"limit/concurrent deny", testLimitConcurrentDeny},
		{"limit/concurrent evict", testLimitConcurrentEvict},
		{"rotate/current and retired", testRotate},
		{"rotate/not live", testRotateNotLive},
		{"rotate/concurrent", testRotateConcurrent},
		{"touch", testTouch},
		{"revoke/own live sessions only", testRevokeSessions},
		{"revoke/others of user", testRevokeUserSessions},
		{"users/change record", testChangeRecord},
		{"users/credential version", testCredentialVersion},
		{"service clients", testServiceClients},
		{"outbox", testOutbox},
		{"users/delete", testDeleteUser},
		{"sweep/delete ended", testDeleteEnded},
		{"vault/etag flow", testVault},
		{"vault/concurrent writers", testVaultConcurrent},
		{"key fingerprint", testKeyFingerprint},
		{"events/add, list newest first, delete by age", testEvents},
		{"rotation/sealed values in pages", testSealedValues},
		{"rotation/re-seal only unchanged values", testResealValues},
		{"rotation/concurrent re-seals", testResealConcurrent},
		{"rotation/re-hash token", testRehashToken},
		{"rotation/set key fingerprint", testSetKeyFingerprint},
		{"ping", func(t *testing.T, st session.Backend) { must(t, st.Ping(t.Context())) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, open(t))
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantErr(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("err = %v, want %v", err, target)
	}
}

func newUser(id, name string) session.User {
	return session.User{
		ID: id, Username: name, Record: []byte("record-" + id), VaultID: "vault-" + id, CreatedAt: t0,
		CredVersion: 1,
	}
}

// newSession is a session of userID created at created, idle for 30 minutes, absolute for a day.
func newSession(userID, id string, created time.Time) session.Session {
	return session.Session{
		ID:            id,
		UserID:        userID,
		VaultID:       "vault-" + userID,
		TokenHash:     []byte("hash-" + id),
		Device:        []byte("device-" + id),
		CreatedAt:     created,
		LastSeenAt:    created,
		IdleExpiresAt: created.Add(30 * time.Minute),
		ExpiresAt:     created.Add(24 * time.Hour),
		CredVersion:   1,
	}
}

// users creates a user for each id that has none yet, so that sessions can be created for it.
func users(t *testing.T, st session.Backend, ids ...string) {
	t.Helper()
	for _, id := range ids {
		_, err := st.UserByID(t.Context(), id)
		if errors.Is(err, session.ErrNotFound) {
			err = st.CreateUser(t.Context(), newUser(id, "user-"+id))
		}
		must(t, err)
	}
}

func create(t *testing.T, st session.Backend, sessions ...session.Session) {
	t.Helper()
	for _, s := range sessions {
		users(t, st, s.UserID)
		if _, err := st.CreateSession(t.Context(), s, session.Limit{}); err != nil {
			t.Fatalf("create session %s: %v", s.ID, err)
		}
	}
}

func getSession(t *testing.T, st session.Backend, id string) session.Session {
	t.Helper()
	s, err := st.SessionByID(t.Context(), id)
	if err != nil {
		t.Fatalf("session %s: %v", id, err)
	}
	return s
}

func assertUser(t *testing.T, got, want session.User) {
	t.Helper()
	if got.ID != want.ID || got.Username != want.Username || !bytes.Equal(got.Record, want.Record) ||
		got.VaultID != want.VaultID || !got.CreatedAt.Equal(want.CreatedAt) || got.CredVersion != want.CredVersion {
		t.Fatalf("user = %+v, want %+v", got, want)
	}
}

func assertSession(t *testing.T, got, want session.Session) {
	t.Helper()
	var diffs []string
	diff := func(field string, g, w any, same bool) {
		if !same {
			diffs = append(diffs, fmt.Sprintf("%s = %v, want %v", field, g, w))
		}
	}
	diff("ID", got.ID, want.ID, got.ID == want.ID)
	diff("UserID", got.UserID, want.UserID, got.UserID == want.UserID)
	diff("VaultID", got.VaultID, want.VaultID, got.VaultID == want.VaultID)
	diff("TokenHash", got.TokenHash, want.TokenHash, bytes.Equal(got.TokenHash, want.TokenHash))
	diff("Device", got.Device, want.Device, bytes.Equal(got.Device, want.Device))
	diff("CreatedAt", got.CreatedAt, want.CreatedAt, got.CreatedAt.Equal(want.CreatedAt))
	diff("LastSeenAt", got.LastSeenAt, want.LastSeenAt, got.LastSeenAt.Equal(want.LastSeenAt))
	diff("IdleExpiresAt", got.IdleExpiresAt, want.IdleExpiresAt, got.IdleExpiresAt.Equal(want.IdleExpiresAt))
	diff("ExpiresAt", got.ExpiresAt, want.ExpiresAt, got.ExpiresAt.Equal(want.ExpiresAt))
	diff("RevokedAt", got.RevokedAt, want.RevokedAt, got.RevokedAt.Equal(want.RevokedAt))
	diff("RevokeReason", got.RevokeReason, want.RevokeReason, got.RevokeReason == want.RevokeReason)
	if len(diffs) > 0 {
		t.Fatalf("session %s:\n%s", want.ID, joinLines(diffs))
	}
}

func joinLines(lines []string) string {
	var b bytes.Buffer
	for _, l := range lines {
		b.WriteString("\t" + l + "\n")
	}
	return b.String()
}

func assertIDs(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !slices.Equal(got, want) {
		t.Fatalf("%s = %q, want %q", what, got, want)
	}
}

// assertRevoked checks that session id was revoked at when with reason.
func assertRevoked(t *testing.T, st session.Backend, id string, when time.Time, reason string) {
	t.Helper()
	s := getSession(t, st, id)
	if !s.RevokedAt.Equal(when) || s.RevokeReason != reason {
		t.Fatalf("session %s revoked at %v (%q), want %v (%q)", id, s.RevokedAt, s.RevokeReason, when, reason)
	}
}

func assertNotRevoked(t *testing.T, st session.Backend, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if s := getSession(t, st, id); !s.RevokedAt.IsZero() || s.RevokeReason != "" {
			t.Fatalf("session %s revoked at %v (%q), want not revoked", id, s.RevokedAt, s.RevokeReason)
		}
	}
}

func liveIDs(t *testing.T, st session.Backend, userID string, now time.Time) []string {
	t.Helper()
	list, err := st.ListSessions(t.Context(), userID, now)
	must(t, err)
	ids := make([]string, 0, len(list))
	for _, s := range list {
		ids = append(ids, s.ID)
	}
	return ids
}

// countRetired reads the retired_tokens table directly: the interface cannot tell a retired token
// that is gone from one whose session is gone.
func countRetired(t *testing.T, st session.Backend) int {
	t.Helper()
	const q = `SELECT count(*) FROM retired_tokens`
	var n int
	switch st := st.(type) {
	case *SQLite:
		must(t, st.db.QueryRowContext(t.Context(), q).Scan(&n))
	case *Postgres:
		must(t, st.pool.QueryRow(t.Context(), q).Scan(&n))
	default:
		t.Fatalf("countRetired: unknown store %T", st)
	}
	return n
}

// parallel runs fn(i) for i in [0, n) at once and returns the errors by i.
func parallel(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = fn(i)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

func testUserLookup(t *testing.T, st session.Backend) {
	ctx := t.Context()
	alice, bob := newUser("u1", "alice"), newUser("u2", "bob")
	bob.CreatedAt = time.Time{}
	must(t, st.CreateUser(ctx, alice))
	must(t, st.CreateUser(ctx, bob))

	tests := []struct {
		name   string
		lookup func() (session.User, error)
		want   session.User
		err    error
	}{
		{"by name", func() (session.User, error) { return st.UserByName(ctx, "alice") }, alice, nil},
		{"by id", func() (session.User, error) { return st.UserByID(ctx, "u1") }, alice, nil},
		{"zero created at", func() (session.User, error) { return st.UserByID(ctx, "u2") }, bob, nil},
		{"unknown name", func() (session.User, error) { return st.UserByName(ctx, "carol") }, session.User{}, session.ErrNotFound},
		{"unknown id", func() (session.User, error) { return st.UserByID(ctx, "u3") }, session.User{}, session.ErrNotFound},
		{"id is not a name", func() (session.User, error) { return st.UserByName(ctx, "u1") }, session.User{}, session.ErrNotFound},
	}
	for _, tc := range tests {
		got, err := tc.lookup()
		if tc.err != nil {
			wantErr(t, err, tc.err)
			continue
		}
		must(t, err)
		assertUser(t, got, tc.want)
	}
}

func testUserDuplicate(t *testing.T, st session.Backend) {
	ctx := t.Context()
	alice := newUser("u1", "alice")
	must(t, st.CreateUser(ctx, alice))

	wantErr(t, st.CreateUser(ctx, newUser("u2", "alice")), session.ErrUsernameTaken)
	// A clash on the id is not a taken username.
	err := st.CreateUser(ctx, session.User{ID: "u1", Username: "carol", Record: []byte("r"), VaultID: "vault-other"})
	if err == nil || errors.Is(err, session.ErrUsernameTaken) {
		t.Fatalf("duplicate id: err = %v, want a non-username error", err)
	}
	got, err := st.UserByName(ctx, "alice")
	must(t, err)
	assertUser(t, got, alice)
	_, err = st.UserByName(ctx, "carol")
	wantErr(t, err, session.ErrNotFound)
}

func testUserBadInput(t *testing.T, st session.Backend) {
	ctx := t.Context()
	for _, u := range []session.User{
		{Username: "alice", VaultID: "v"},
		{ID: "u1", VaultID: "v"},
		{ID: "u1", Username: "alice"},
	} {
		wantErr(t, st.CreateUser(ctx, u), session.ErrBadInput)
	}
	_, err := st.CreateSession(ctx, session.Session{ID: "s1", UserID: "u1"}, session.Limit{})
	wantErr(t, err, session.ErrBadInput)
	wantErr(t, st.RotateToken(ctx, "s1", []byte("a"), []byte("a"), at(time.Minute), t0), session.ErrBadInput)
	wantErr(t, st.CheckKeyFingerprint(ctx, ""), session.ErrBadInput)
}

func testSessionLookup(t *testing.T, st session.Backend) {
	ctx := t.Context()
	users(t, st, "u1")
	s1 := newSession("u1", "s1", t0)
	// Optional fields left empty come back empty.
	s2 := newSession("u1", "s2", at(time.Second))
	s2.Device, s2.VaultID, s2.LastSeenAt = nil, "", time.Time{}

	for _, s := range []session.Session{s1, s2} {
		evicted, err := st.CreateSession(ctx, s, session.Limit{})
		must(t, err)
		assertIDs(t, "evicted", evicted)

		got, match, err := st.SessionByToken(ctx, s.TokenHash)
		must(t, err)
		assertSession(t, got, s)
		if match != (session.TokenMatch{}) {
			t.Fatalf("match = %+v, want current token", match)
		}
		assertSession(t, getSession(t, st, s.ID), s)
	}

	_, _, err := st.SessionByToken(ctx, []byte("no such hash"))
	wantErr(t, err, session.ErrNotFound)
	_, _, err = st.SessionByToken(ctx, nil)
	wantErr(t, err, session.ErrNotFound)
	_, err = st.SessionByID(ctx, "s3")
	wantErr(t, err, session.ErrNotFound)

	// Token hashes and ids are unique.
	dup := newSession("u1", "s3", t0)
	dup.TokenHash = s1.TokenHash
	_, err = st.CreateSession(ctx, dup, session.Limit{})
	wantErr(t, err, session.ErrConflict)
	_, err = st.SessionByID(ctx, "s3")
	wantErr(t, err, session.ErrNotFound)
}

func testSessionLookupEnded(t *testing.T, st session.Backend) {
	ctx := t.Context()
	revoked, expired := newSession("u1", "s1", t0), newSession("u1", "s2", t0)
	expired.IdleExpiresAt = at(time.Minute)
	create(t, st, revoked, expired)
	_, err := st.RevokeSessions(ctx, "u1", []string{"s1"}, "logout", at(time.Second))
	must(t, err)
	revoked.RevokedAt, revoked.RevokeReason = at(time.Second), "logout"

	for _, want := range []session.Session{revoked, expired} {
		got, _, err := st.SessionByToken(ctx, want.TokenHash)
		must(t, err)
		assertSession(t, got, want)
		assertSession(t, getSession(t, st, want.ID), want)
	}
}

func testListSessions(t *testing.T, st session.Backend) {
	ctx := t.Context()
	now := at(time.Hour)
	s1, s2, s3 := newSession("u1", "s1", at(time.Minute)), newSession("u1", "s2", at(2*time.Minute)), newSession("u1", "s3", at(3*time.Minute))
	for _, s := range []*session.Session{&s1, &s2, &s3} {
		s.IdleExpiresAt = now.Add(time.Hour)
	}
	revoked := newSession("u1", "revoked", t0)
	revoked.IdleExpiresAt = now.Add(time.Hour)
	idle := newSession("u1", "idle", t0) // idle deadline t0+30m, before now
	absolute := newSession("u1", "absolute", t0)
	absolute.ExpiresAt = now // a deadline equal to now has passed
	other := newSession("u2", "other", t0)
	other.IdleExpiresAt = now.Add(time.Hour)
	// Inserted out of order: the order must come from the creation times.
	create(t, st, s3, revoked, s1, idle, other, absolute, s2)
	_, err := st.RevokeSessions(ctx, "u1", []string{"revoked"}, "logout", at(time.Second))
	must(t, err)

	list, err := st.ListSessions(ctx, "u1", now)
	must(t, err)
	if len(list) != 3 {
		t.Fatalf("listed %d sessions, want 3", len(list))
	}
	for i, want := range []session.Session{s1, s2, s3} {
		assertSession(t, list[i], want)
	}
	assertIDs(t, "u2 live", liveIDs(t, st, "u2", now), "other")
	assertIDs(t, "unknown user live", liveIDs(t, st, "u3", now))
	assertIDs(t, "u1 live before idle expiry", liveIDs(t, st, "u1", at(29*time.Minute)), "absolute", "idle", "s1", "s2", "s3")
}

func testLimitDeny(t *testing.T, st session.Backend) {
	ctx := t.Context()
	users(t, st, "u1", "u2")
	limit := session.Limit{Max: 2}
	s1 := newSession("u1", "s1", t0)
	s1.IdleExpiresAt = at(10 * time.Minute)
	s2 := newSession("u1", "s2", at(time.Minute))
	for _, s := range []session.Session{s1, s2, newSession("u2", "other", t0)} {
		_, err := st.CreateSession(ctx, s, limit)
		must(t, err)
	}

	evicted, err := st.CreateSession(ctx, newSession("u1", "s3", at(2*time.Minute)), limit)
	wantErr(t, err, session.ErrSessionLimit)
	assertIDs(t, "evicted", evicted)
	_, err = st.SessionByID(ctx, "s3")
	wantErr(t, err, session.ErrNotFound)
	assertNotRevoked(t, st, "s1", "s2")

	// Once s1 idled out it no longer counts.
	evicted, err = st.CreateSession(ctx, newSession("u1", "s4", at(20*time.Minute)), limit)
	must(t, err)
	assertIDs(t, "evicted", evicted)
	assertIDs(t, "live", liveIDs(t, st, "u1", at(20*time.Minute)), "s2", "s4")
}

func testLimitEvict(t *testing.T, st session.Backend) {
	ctx := t.Context()
	two := session.Limit{Max: 2, EvictOldest: true}
	create(t, st, newSession("u1", "s1", t0), newSession("u1", "s2", at(time.Minute)), newSession("u2", "other", t0))

	s3 := newSession("u1", "s3", at(2*time.Minute))
	evicted, err := st.CreateSession(ctx, s3, two)
	must(t, err)
	assertIDs(t, "evicted", evicted, "s1")
	assertRevoked(t, st, "s1", s3.CreatedAt, "session_limit")
	assertIDs(t, "live", liveIDs(t, st, "u1", s3.CreatedAt), "s2", "s3")

	// Lowering the limit evicts as many as needed to make room, oldest first.
	s4 := newSession("u1", "s4", at(3*time.Minute))
	evicted, err = st.CreateSession(ctx, s4, session.Limit{Max: 1, EvictOldest: true})
	must(t, err)
	assertIDs(t, "evicted", evicted, "s2", "s3")
	assertRevoked(t, st, "s2", s4.CreatedAt, "session_limit")
	assertRevoked(t, st, "s3", s4.CreatedAt, "session_limit")
	assertIDs(t, "live", liveIDs(t, st, "u1", s4.CreatedAt), "s4")
	assertNotRevoked(t, st, "other", "s4")
}

func testLimitConcurrentDeny(t *testing.T, st session.Backend) {
	const n, max = 10, 3
	users(t, st, "u1")
	errs := parallel(n, func(i int) error {
		_, err := st.CreateSession(t.Context(), newSession("u1", fmt.Sprintf("s%02d", i), at(time.Duration(i)*time.Millisecond)),
			session.Limit{Max: max})
		return err
	})
	var ok, denied int
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, session.ErrSessionLimit):
			denied++
		default:
			t.Fatalf("create session: %v", err)
		}
	}
	if ok != max || denied != n-max {
		t.Fatalf("%d created and %d denied, want %d and %d", ok, denied, max, n-max)
	}
	if live := liveIDs(t, st, "u1", at(time.Second)); len(live) != max {
		t.Fatalf("live sessions %q, want %d", live, max)
	}
}

func testLimitConcurrentEvict(t *testing.T, st session.Backend) {
	const n, max = 10, 3
	users(t, st, "u1")
	var (
		mu      sync.Mutex
		evicted []string
	)
	errs := parallel(n, func(i int) error {
		ids, err := st.CreateSession(t.Context(), newSession("u1", fmt.Sprintf("s%02d", i), at(time.Duration(i)*time.Millisecond)),
			session.Limit{Max: max, EvictOldest: true})
		mu.Lock()
		evicted = append(evicted, ids...)
		mu.Unlock()
		return err
	})
	for _, err := range errs {
		must(t, err)
	}
	live := liveIDs(t, st, "u1", at(time.Second))
	if len(live) != max || len(evicted) != n-max {
		t.Fatalf("live %q and evicted %q, want %d and %d", live, evicted, max, n-max)
	}
	for _, id := range evicted {
		if slices.Contains(live, id) {
			t.Fatalf("evicted session %s is live", id)
		}
	}
}

func testRotate(t *testing.T, st session.Backend) {
	ctx := t.Context()
	s := newSession("u1", "s1", t0)
	create(t, st, s)
	h0, h1, h2 := s.TokenHash, []byte("hash-1"), []byte("hash-2")
	grace1, grace2 := at(time.Minute), at(2*time.Minute)

	must(t, st.RotateToken(ctx, "s1", h0, h1, grace1, at(time.Second)))
	// A stale token cannot rotate again: a concurrent rotation won.
	wantErr(t, st.RotateToken(ctx, "s1", h0, h2, grace2, at(time.Second)), session.ErrConflict)
	_, _, err := st.SessionByToken(ctx, h2)
	wantErr(t, err, session.ErrNotFound)
	must(t, st.RotateToken(ctx, "s1", h1, h2, grace2, at(2*time.Second)))
	wantErr(t, st.RotateToken(ctx, "nope", h2, []byte("hash-3"), grace2, at(2*time.Second)), session.ErrNotFound)

	want := s
	want.TokenHash = h2
	tests := []struct {
		hash  []byte
		match session.TokenMatch
	}{
		{h2, session.TokenMatch{}},
		{h1, session.TokenMatch{Retired: true, GraceUntil: grace2}},
		{h0, session.TokenMatch{Retired: true, GraceUntil: grace1}},
	}
	for _, tc := range tests {
		got, match, err := st.SessionByToken(ctx, tc.hash)
		must(t, err)
		assertSession(t, got, want)
		if match.Retired != tc.match.Retired || !match.GraceUntil.Equal(tc.match.GraceUntil) {
			t.Fatalf("token %s: match = %+v, want %+v", tc.hash, match, tc.match)
		}
	}
}

func testRotateNotLive(t *testing.T, st session.Backend) {
	ctx := t.Context()
	revoked, idle, absolute := newSession("u1", "revoked", t0), newSession("u1", "idle", t0), newSession("u1", "absolute", t0)
	idle.IdleExpiresAt = at(time.Minute)
	absolute.ExpiresAt = at(time.Minute)
	create(t, st, revoked, idle, absolute)
	_, err := st.RevokeSessions(ctx, "u1", []string{"revoked"}, "logout", at(time.Second))
	must(t, err)

	for _, s := range []session.Session{revoked, idle, absolute} {
		newHash := []byte("new-" + s.ID)
		wantErr(t, st.RotateToken(ctx, s.ID, s.TokenHash, newHash, at(2*time.Minute), at(time.Minute)), session.ErrNotFound)
		_, _, err := st.SessionByToken(ctx, newHash)
		wantErr(t, err, session.ErrNotFound)
		if _, match, err := st.SessionByToken(ctx, s.TokenHash); err != nil || match.Retired {
			t.Fatalf("old token of %s: match %+v, err %v; want it current", s.ID, match, err)
		}
	}
}

func testRotateConcurrent(t *testing.T, st session.Backend) {
	s := newSession("u1", "s1", t0)
	create(t, st, s)
	const n = 8
	errs := parallel(n, func(i int) error {
		return st.RotateToken(t.Context(), "s1", s.TokenHash, fmt.Appendf(nil, "new-%d", i), at(time.Minute), at(time.Second))
	})
	var won []int
	for i, err := range errs {
		switch {
		case err == nil:
			won = append(won, i)
		case !errors.Is(err, session.ErrConflict):
			t.Fatalf("rotate %d: %v", i, err)
		}
	}
	if len(won) != 1 {
		t.Fatalf("rotations %v succeeded, want exactly one", won)
	}
	if got := getSession(t, st, "s1"); !bytes.Equal(got.TokenHash, fmt.Appendf(nil, "new-%d", won[0])) {
		t.Fatalf("token hash %q, want the winner's", got.TokenHash)
	}
}

func testTouch(t *testing.T, st session.Backend) {
	ctx := t.Context()
	s := newSession("u1", "s1", t0) // idle t0+30m, absolute t0+24h
	s.ExpiresAt = at(2 * time.Hour)
	other, revoked, idle := newSession("u1", "s2", t0), newSession("u1", "revoked", t0), newSession("u1", "idle", t0)
	create(t, st, s, other, revoked, idle)
	_, err := st.RevokeSessions(ctx, "u1", []string{"revoked"}, "logout", at(time.Second))
	must(t, err)
	revoked = getSession(t, st, "revoked")

	type want struct{ seen, idle time.Duration }
	tests := []struct {
		name    string
		touches []session.Touch
		want    want // of s1
	}{
		{"extends", []session.Touch{{ID: "s1", LastSeenAt: at(10 * time.Minute), IdleExpiresAt: at(40 * time.Minute)}},
			want{10 * time.Minute, 40 * time.Minute}},
		{"never backwards", []session.Touch{{ID: "s1", LastSeenAt: at(5 * time.Minute), IdleExpiresAt: at(35 * time.Minute)}},
			want{10 * time.Minute, 40 * time.Minute}},
		{"duplicates in a batch: latest wins", []session.Touch{
			{ID: "s1", LastSeenAt: at(20 * time.Minute), IdleExpiresAt: at(50 * time.Minute)},
			{ID: "s1", LastSeenAt: at(15 * time.Minute), IdleExpiresAt: at(45 * time.Minute)},
			{ID: "s2", LastSeenAt: at(15 * time.Minute), IdleExpiresAt: at(45 * time.Minute)},
		}, want{20 * time.Minute, 50 * time.Minute}},
		{"clamped to the absolute deadline", []session.Touch{{ID: "s1", LastSeenAt: at(45 * time.Minute), IdleExpiresAt: at(3 * time.Hour)}},
			want{45 * time.Minute, 2 * time.Hour}},
		{"revoked, ended and unknown left alone", []session.Touch{
			{ID: "revoked", LastSeenAt: at(time.Minute), IdleExpiresAt: at(time.Hour)},
			{ID: "idle", LastSeenAt: at(31 * time.Minute), IdleExpiresAt: at(61 * time.Minute)},
			{ID: "nope", LastSeenAt: at(time.Minute), IdleExpiresAt: at(time.Hour)},
		}, want{45 * time.Minute, 2 * time.Hour}},
		{"empty batch", nil, want{45 * time.Minute, 2 * time.Hour}},
	}
	for _, tc := range tests {
		if err := st.Touch(ctx, tc.touches); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got := getSession(t, st, "s1")
		if !got.LastSeenAt.Equal(at(tc.want.seen)) || !got.IdleExpiresAt.Equal(at(tc.want.idle)) {
			t.Fatalf("%s: last seen %v, idle deadline %v; want %v, %v", tc.name,
				got.LastSeenAt, got.IdleExpiresAt, at(tc.want.seen), at(tc.want.idle))
		}
	}
	if got := getSession(t, st, "s2"); !got.IdleExpiresAt.Equal(at(45 * time.Minute)) {
		t.Fatalf("s2 idle deadline %v, want %v", got.IdleExpiresAt, at(45*time.Minute))
	}
	assertSession(t, getSession(t, st, "revoked"), revoked)
	assertSession(t, getSession(t, st, "idle"), idle)

	// The sweeper sees the extended deadlines: of the four, only the revoked and the idle
	// session have ended 40 minutes in.
	n, err := st.DeleteEnded(ctx, at(40*time.Minute), 10)
	must(t, err)
	if n != 2 {
		t.Fatalf("deleted %d sessions, want 2", n)
	}
	getSession(t, st, "s1")
	getSession(t, st, "s2")
}

func testRevokeSessions(t *testing.T, st session.Backend) {
	ctx := t.Context()
	when := at(time.Hour)
	s1, s2, idle := newSession("u1", "s1", t0), newSession("u1", "s2", t0), newSession("u1", "idle", t0)
	s1.IdleExpiresAt, s2.IdleExpiresAt = at(2*time.Hour), at(2*time.Hour) // idle's deadline has passed at when
	other := newSession("u2", "other", t0)
	other.IdleExpiresAt = at(2 * time.Hour)
	create(t, st, s1, s2, idle, other)

	tests := []struct {
		name string
		ids  []string
		want []string
	}{
		{"only own and live", []string{"s1", "other", "idle", "nope"}, []string{"s1"}},
		{"already revoked", []string{"s1"}, nil},
		{"none", nil, nil},
	}
	for _, tc := range tests {
		got, err := st.RevokeSessions(ctx, "u1", tc.ids, "logout", when)
		must(t, err)
		assertIDs(t, tc.name, got, tc.want...)
	}
	assertRevoked(t, st, "s1", when, "logout")
	assertNotRevoked(t, st, "s2", "other", "idle")

	// Another user cannot revoke u1's session.
	got, err := st.RevokeSessions(ctx, "u2", []string{"s2"}, "logout", when)
	must(t, err)
	assertIDs(t, "revoked by u2", got)
	assertNotRevoked(t, st, "s2")
}

func testRevokeUserSessions(t *testing.T, st session.Backend) {
	ctx := t.Context()
	when := at(time.Minute)
	create(t, st, newSession("u1", "s1", t0), newSession("u1", "s2", at(time.Second)),
		newSession("u1", "s3", at(2*time.Second)), newSession("u2", "other", t0))

	got, err := st.RevokeUserSessions(ctx, "u1", "s2", "logout_others", when)
	must(t, err)
	assertIDs(t, "revoked", got, "s1", "s3")
	assertRevoked(t, st, "s1", when, "logout_others")
	assertRevoked(t, st, "s3", when, "logout_others")
	assertNotRevoked(t, st, "s2", "other")

	got, err = st.RevokeUserSessions(ctx, "u1", "s2", "logout_others", when)
	must(t, err)
	assertIDs(t, "revoked again", got)

	got, err = st.RevokeUserSessions(ctx, "u1", "", "logout_all", at(2*time.Minute))
	must(t, err)
	assertIDs(t, "revoked all", got, "s2")
	assertRevoked(t, st, "s1", when, "logout_others") // first revocation kept
	assertNotRevoked(t, st, "other")
}

func testChangeRecord(t *testing.T, st session.Backend) {
	ctx := t.Context()
	when := at(time.Minute)
	u := newUser("u1", "alice")
	must(t, st.CreateUser(ctx, u))
	create(t, st, newSession("u1", "keep", t0), newSession("u1", "s2", at(time.Second)),
		newSession("u1", "s3", at(2*time.Second)), newSession("u2", "other", t0), newSession("ghost", "g1", t0))
	_, err := st.RevokeSessions(ctx, "u1", []string{"s3"}, "logout", at(time.Second))
	must(t, err)

	got, err := st.ChangeRecord(ctx, "u1", 1, []byte("new record"), "keep", "password_changed", when)
	must(t, err)
	assertIDs(t, "revoked", got, "s2")
	assertRevoked(t, st, "s2", when, "password_changed")
	assertRevoked(t, st, "s3", at(time.Second), "logout")
	assertNotRevoked(t, st, "keep", "other")
	user, err := st.UserByID(ctx, "u1")
	must(t, err)
	u.Record, u.CredVersion = []byte("new record"), 2
	assertUser(t, user, u)

	// An unknown user changes nothing.
	_, err = st.ChangeRecord(ctx, "nobody", 1, []byte("r"), "", "password_changed", when)
	wantErr(t, err, session.ErrNotFound)
	assertNotRevoked(t, st, "g1")
}

// testCredentialVersion: a password change and a session are only written for the credential
// version that was proved; a stale version or a deleted user writes nothing.
func testCredentialVersion(t *testing.T, st session.Backend) {
	ctx := t.Context()
	when := at(time.Minute)
	must(t, st.CreateUser(ctx, newUser("u1", "alice")))
	user, err := st.UserByName(ctx, "alice")
	must(t, err)
	if user.CredVersion != 1 {
		t.Fatalf("a new user's credential version is %d, want 1", user.CredVersion)
	}
	create(t, st, newSession("u1", "s1", t0))

	// A change based on a proof of another version: nothing written, nothing revoked.
	_, err = st.ChangeRecord(ctx, "u1", 2, []byte("stale"), "", "password_changed", when)
	wantErr(t, err, session.ErrStaleCredential)
	user, err = st.UserByID(ctx, "u1")
	must(t, err)
	if user.CredVersion != 1 || string(user.Record) != "record-u1" {
		t.Fatalf("a stale change wrote version %d, record %q", user.CredVersion, user.Record)
	}
	assertNotRevoked(t, st, "s1")

	_, err = st.ChangeRecord(ctx, "u1", 1, []byte("new"), "", "password_changed", when)
	must(t, err)
	// A login proved against version 1 no longer creates a session; one against 2 does.
	old := newSession("u1", "s2", when)
	_, err = st.CreateSession(ctx, old, session.Limit{})
	wantErr(t, err, session.ErrStaleCredential)
	_, err = st.SessionByID(ctx, "s2")
	wantErr(t, err, session.ErrNotFound)
	cur := newSession("u1", "s3", when)
	cur.CredVersion = 2
	_, err = st.CreateSession(ctx, cur, session.Limit{})
	must(t, err)

	// A deleted user gets no session, whatever the version.
	_, err = st.DeleteUser(ctx, "u1", "account_deleted", when)
	must(t, err)
	gone := newSession("u1", "s4", when)
	gone.CredVersion = 2
	_, err = st.CreateSession(ctx, gone, session.Limit{})
	wantErr(t, err, session.ErrStaleCredential)
	_, err = st.SessionByID(ctx, "s4")
	wantErr(t, err, session.ErrNotFound)
}

func testDeleteUser(t *testing.T, st session.Backend) {
	ctx := t.Context()
	when := at(time.Minute)
	alice, bob := newUser("u1", "alice"), newUser("u2", "bob")
	must(t, st.CreateUser(ctx, alice))
	must(t, st.CreateUser(ctx, bob))
	for _, vault := range []string{alice.VaultID, bob.VaultID} {
		_, err := st.PutVault(ctx, session.VaultPut{VaultID: vault, Data: []byte("data"), At: t0})
		must(t, err)
	}
	create(t, st, newSession("u1", "s1", t0), newSession("u1", "s2", at(time.Second)), newSession("u2", "other", t0))

	got, err := st.DeleteUser(ctx, "u1", "account_deleted", when)
	must(t, err)
	assertIDs(t, "revoked", got, "s1", "s2")
	// The sessions stay, revoked, until swept, so their tokens are still recognised.
	assertRevoked(t, st, "s1", when, "account_deleted")
	assertRevoked(t, st, "s2", when, "account_deleted")
	_, err = st.UserByID(ctx, "u1")
	wantErr(t, err, session.ErrNotFound)
	_, err = st.UserByName(ctx, "alice")
	wantErr(t, err, session.ErrNotFound)
	_, err = st.GetVault(ctx, alice.VaultID)
	wantErr(t, err, session.ErrNotFound)

	// Bob is untouched.
	assertNotRevoked(t, st, "other")
	_, err = st.GetVault(ctx, bob.VaultID)
	must(t, err)
	_, err = st.UserByID(ctx, "u2")
	must(t, err)

	_, err = st.DeleteUser(ctx, "u1", "account_deleted", when)
	wantErr(t, err, session.ErrNotFound)
	// The username is free again.
	must(t, st.CreateUser(ctx, newUser("u3", "alice")))
}

func testDeleteEnded(t *testing.T, st session.Backend) {
	ctx := t.Context()
	before := at(10 * time.Minute)
	revoked, idle, absolute := newSession("u1", "revoked", t0), newSession("u1", "idle", t0), newSession("u1", "absolute", t0)
	idle.IdleExpiresAt = at(2 * time.Minute)
	absolute.ExpiresAt = at(3 * time.Minute)
	edge := newSession("u1", "edge", t0)
	edge.IdleExpiresAt = before // ends at before, not before it
	live := newSession("u1", "live", t0)
	create(t, st, live, absolute, edge, idle, revoked)

	// Both rotated sessions keep a retired token whose grace has passed by before: only the
	// ended session's goes.
	must(t, st.RotateToken(ctx, "revoked", revoked.TokenHash, []byte("hash-revoked-2"), at(30*time.Second), at(10*time.Second)))
	must(t, st.RotateToken(ctx, "live", live.TokenHash, []byte("hash-live-2"), at(30*time.Second), at(10*time.Second)))
	_, err := st.RevokeSessions(ctx, "u1", []string{"revoked"}, "logout", at(time.Minute))
	must(t, err)
	if n := countRetired(t, st); n != 2 {
		t.Fatalf("%d retired tokens, want 2", n)
	}

	n, err := st.DeleteEnded(ctx, before, 0)
	must(t, err)
	if n != 0 {
		t.Fatalf("limit 0 deleted %d", n)
	}
	// Batches are bounded and take the earliest ended first.
	for i, want := range []int{2, 1, 0} {
		n, err := st.DeleteEnded(ctx, before, 2)
		must(t, err)
		if n != want {
			t.Fatalf("batch %d deleted %d, want %d", i, n, want)
		}
		if i == 0 {
			getSession(t, st, "absolute")
		}
	}
	for _, id := range []string{"revoked", "idle", "absolute"} {
		_, err := st.SessionByID(ctx, id)
		wantErr(t, err, session.ErrNotFound)
	}
	getSession(t, st, "edge")
	getSession(t, st, "live")

	if n := countRetired(t, st); n != 1 {
		t.Fatalf("%d retired tokens, want 1", n)
	}
	_, _, err = st.SessionByToken(ctx, revoked.TokenHash)
	wantErr(t, err, session.ErrNotFound)
	if _, match, err := st.SessionByToken(ctx, live.TokenHash); err != nil || !match.Retired {
		t.Fatalf("live session's retired token: match %+v, err %v", match, err)
	}
}

func testVault(t *testing.T, st session.Backend) {
	ctx := t.Context()
	get := func() session.Vault {
		t.Helper()
		v, err := st.GetVault(ctx, "v1")
		must(t, err)
		return v
	}
	_, err := st.GetVault(ctx, "v1")
	wantErr(t, err, session.ErrNotFound)

	// ETags are opaque: a step's If-Match is built from the ETag an earlier step got, and
	// every successful write must get an ETag this vault never had.
	etags := map[string]string{} // step name -> the ETag it got
	of := func(step string) func() string { return func() string { return etags[step] } }
	lit := func(v string) func() string { return func() string { return v } }
	none := lit("")
	tests := []struct {
		name    string
		put     session.VaultPut
		ifMatch func() string
		err     error
	}{
		{"if-match on no vault", session.VaultPut{Data: []byte("x")}, lit("1"), session.ErrPrecondition},
		{"both conditions", session.VaultPut{IfNoneMatch: true, Data: []byte("x")}, lit("1"), session.ErrPrecondition},
		{"create", session.VaultPut{IfNoneMatch: true, Data: []byte("one"), At: at(time.Second)}, none, nil},
		{"create again", session.VaultPut{IfNoneMatch: true, Data: []byte("x")}, none, session.ErrPrecondition},
		{"update", session.VaultPut{Data: []byte("two"), At: at(2 * time.Second)}, of("create"), nil},
		{"stale if-match", session.VaultPut{Data: []byte("x")}, of("create"), session.ErrPrecondition},
		{"foreign if-match", session.VaultPut{Data: []byte("x")}, func() string { return `"` + etags["update"] + `"` }, session.ErrPrecondition},
		{"padded if-match", session.VaultPut{Data: []byte("x")}, func() string { return "0" + etags["update"] }, session.ErrPrecondition},
		{"unconditional", session.VaultPut{Data: []byte("three"), At: at(3 * time.Second)}, none, nil},
		{"empty data", session.VaultPut{At: at(4 * time.Second)}, of("unconditional"), nil},
		{"back to data", session.VaultPut{Data: []byte("five"), At: at(5 * time.Second)}, of("empty data"), nil},
	}
	seen := map[string]bool{}
	var last session.VaultPut
	for _, tc := range tests {
		tc.put.VaultID, tc.put.IfMatch = "v1", tc.ifMatch()
		etag, err := st.PutVault(ctx, tc.put)
		if tc.err != nil {
			wantErr(t, err, tc.err)
			if etag != "" {
				t.Fatalf("%s: a refused write returned etag %q", tc.name, etag)
			}
		} else {
			must(t, err)
			if etag == "" || seen[etag] {
				t.Fatalf("%s: etag %q is empty or was this vault's before (%v)", tc.name, etag, seen)
			}
			seen[etag], etags[tc.name], last = true, etag, tc.put
		}
		if last.VaultID == "" {
			_, err := st.GetVault(ctx, "v1")
			wantErr(t, err, session.ErrNotFound)
			continue
		}
		v := get()
		if !bytes.Equal(v.Data, last.Data) || !v.UpdatedAt.Equal(last.At) {
			t.Fatalf("%s: vault %q at %v, want %q at %v", tc.name, v.Data, v.UpdatedAt, last.Data, last.At)
		}
	}
	if v := get(); v.ETag != etags["back to data"] {
		t.Fatalf("etag %q, want the last write's %q", v.ETag, etags["back to data"])
	}
	// Vaults are independent: a write to another vault leaves this one's ETag alone.
	etag, err := st.PutVault(ctx, session.VaultPut{VaultID: "v2", Data: []byte("other")})
	must(t, err)
	if etag == "" {
		t.Fatal("v2: empty etag")
	}
	if v := get(); v.ETag != etags["back to data"] {
		t.Fatalf("v1 etag %q after a write to v2, want %q", v.ETag, etags["back to data"])
	}
}

func testVaultConcurrent(t *testing.T, st session.Backend) {
	ctx := t.Context()
	const n = 8
	check := func(name string, errs []error, wantETag string, etags []string) int {
		t.Helper()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner < 0:
				winner = i
			case err == nil:
				t.Fatalf("%s: writers %d and %d both succeeded", name, winner, i)
			case !errors.Is(err, session.ErrPrecondition):
				t.Fatalf("%s: writer %d: %v", name, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("%s: no writer succeeded", name)
		}
		if etags[winner] != wantETag {
			t.Fatalf("%s: etag %q, want %q", name, etags[winner], wantETag)
		}
		return winner
	}
	put := func(p func(i int) session.VaultPut) ([]error, []string) {
		etags := make([]string, n)
		errs := parallel(n, func(i int) (err error) {
			etags[i], err = st.PutVault(ctx, p(i))
			return err
		})
		return errs, etags
	}

	errs, etags := put(func(i int) session.VaultPut {
		return session.VaultPut{VaultID: "v1", IfNoneMatch: true, Data: fmt.Appendf(nil, "create-%d", i)}
	})
	check("if-none-match", errs, "1", etags)
	errs, etags = put(func(i int) session.VaultPut {
		return session.VaultPut{VaultID: "v1", IfMatch: "1", Data: fmt.Appendf(nil, "update-%d", i)}
	})
	winner := check("if-match", errs, "2", etags)
	v, err := st.GetVault(ctx, "v1")
	must(t, err)
	if want := fmt.Appendf(nil, "update-%d", winner); v.ETag != "2" || !bytes.Equal(v.Data, want) {
		t.Fatalf("vault %q (etag %s), want %q (etag 2)", v.Data, v.ETag, want)
	}
	// Unconditional writers all land, each on its own version.
	errs, etags = put(func(i int) session.VaultPut { return session.VaultPut{VaultID: "v1", Data: []byte("x")} })
	for _, err := range errs {
		must(t, err)
	}
	slices.Sort(etags)
	if etags = slices.Compact(etags); len(etags) != n {
		t.Fatalf("unconditional writes shared versions: %q", etags)
	}
}

func testKeyFingerprint(t *testing.T, st session.Backend) {
	ctx := t.Context()
	tests := []struct {
		fp  string
		err error
	}{
		{"fp-1", nil},
		{"fp-1", nil},
		{"fp-2", session.ErrKeyMismatch},
		{"fp-1", nil},
	}
	for _, tc := range tests {
		err := st.CheckKeyFingerprint(ctx, tc.fp)
		if tc.err == nil {
			must(t, err)
		} else {
			wantErr(t, err, tc.err)
		}
	}
}

func testEvents(t *testing.T, st session.Backend) {
	ctx := t.Context()
	var evs []session.Event
	for i := 0; i < 5; i++ {
		evs = append(evs, session.Event{ID: fmt.Sprintf("e%d", i), UserID: "u1", SessionID: "s1", Kind: session.EventLogin, Detail: []byte{byte(i)}, At: at(time.Duration(i) * time.Minute)})
	}
	evs = append(evs, session.Event{ID: "other", UserID: "u2", Kind: session.EventRevoked, Reason: "logout", At: at(0)})
	must(t, st.AddEvents(ctx, evs))
	must(t, st.AddEvents(ctx, nil))
	got, err := st.ListEvents(ctx, "u1", 3)
	must(t, err)
	if len(got) != 3 || got[0].ID != "e4" || got[2].ID != "e2" || !got[0].At.Equal(at(4*time.Minute)) || got[0].Detail[0] != 4 || got[0].SessionID != "s1" {
		t.Fatalf("ListEvents = %+v", got)
	}
	other, _ := st.ListEvents(ctx, "u2", 10)
	if len(other) != 1 || other[0].Reason != "logout" || other[0].SessionID != "" {
		t.Fatalf("other user's events = %+v", other)
	}
	n, err := st.DeleteEventsBefore(ctx, at(2*time.Minute), 1)
	must(t, err)
	if n != 1 {
		t.Fatalf("deleted %d, want 1 (batch bound)", n)
	}
	n, _ = st.DeleteEventsBefore(ctx, at(2*time.Minute), 100)
	if n != 2 { // e0/e1/other minus the one already deleted
		t.Fatalf("deleted %d, want 2", n)
	}
	got, _ = st.ListEvents(ctx, "u1", 10)
	if len(got) != 3 {
		t.Fatalf("%d events left, want 3", len(got))
	}
}

func testServiceClients(t *testing.T, st session.Backend) {
	ctx := t.Context()
	list, err := st.ListServiceClients(ctx)
	must(t, err)
	if len(list) != 0 {
		t.Fatalf("a new store lists %v", list)
	}
	a := session.ServiceClient{ID: "c1", Name: "orders", SecretHash: []byte("hash-1"), CreatedAt: t0}
	b := session.ServiceClient{ID: "c2", Name: "billing", SecretHash: []byte("hash-2"), CreatedAt: at(time.Second)}
	must(t, st.CreateServiceClient(ctx, a))
	must(t, st.CreateServiceClient(ctx, b))
	wantErr(t, st.CreateServiceClient(ctx, session.ServiceClient{ID: "c3", Name: "x"}), session.ErrBadInput)
	got, err := st.ServiceClientBySecret(ctx, []byte("hash-2"))
	must(t, err)
	if got.ID != "c2" || got.Name != "billing" || !got.CreatedAt.Equal(b.CreatedAt) || !got.RevokedAt.IsZero() {
		t.Fatalf("by secret: %+v", got)
	}
	_, err = st.ServiceClientBySecret(ctx, []byte("nope"))
	wantErr(t, err, session.ErrNotFound)
	must(t, st.RevokeServiceClient(ctx, "c1", at(time.Minute)))
	wantErr(t, st.RevokeServiceClient(ctx, "c1", at(time.Minute)), session.ErrNotFound)
	wantErr(t, st.RevokeServiceClient(ctx, "ghost", at(time.Minute)), session.ErrNotFound)
	list, err = st.ListServiceClients(ctx)
	must(t, err)
	if len(list) != 2 || list[0].ID != "c1" || !list[0].RevokedAt.Equal(at(time.Minute)) || list[1].ID != "c2" {
		t.Fatalf("list: %+v", list)
	}
}

func testOutbox(t *testing.T, st session.Backend) {
	ctx := t.Context()
	last, err := st.LastChangeSeq(ctx)
	must(t, err)
	if last != 0 {
		t.Fatalf("a new store's last change is %d", last)
	}
	must(t, st.AppendChanges(ctx, []session.Change{
		{Kind: session.ChangeSessionCreated, UserID: "u1", SessionID: "s1", At: t0},
		{Kind: session.ChangeSessionEnded, UserID: "u1", SessionID: "s1", Reason: "logout", At: at(time.Hour)},
		{Kind: session.ChangeUserDeleted, UserID: "u1", At: at(2 * time.Hour)},
	}))
	all, err := st.ChangesAfter(ctx, 0, 10)
	must(t, err)
	if len(all) != 3 || all[0].Seq >= all[1].Seq || all[1].Seq >= all[2].Seq || all[1].Reason != "logout" ||
		all[2].SessionID != "" || all[0].Kind != session.ChangeSessionCreated || !all[1].At.Equal(at(time.Hour)) {
		t.Fatalf("changes: %+v", all)
	}
	after, err := st.ChangesAfter(ctx, all[0].Seq, 1)
	must(t, err)
	if len(after) != 1 || after[0].Seq != all[1].Seq {
		t.Fatalf("after the first, one: %+v", after)
	}
	if last, err := st.LastChangeSeq(ctx); err != nil || last != all[2].Seq {
		t.Fatalf("last change %d %v, want %d", last, err, all[2].Seq)
	}
	n, err := st.DeleteChangesBefore(ctx, at(90*time.Minute), 10)
	must(t, err)
	rest, err := st.ChangesAfter(ctx, 0, 10)
	must(t, err)
	if n != 2 || len(rest) != 1 || rest[0].Kind != session.ChangeUserDeleted {
		t.Fatalf("after deleting the old ones (%d): %+v", n, rest)
	}
}
