package store

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/sessiond/sessiond/session"
)

// The key-rotation part of the conformance suite (listed in runConformance).

// sealedFixture writes rows of every sealed column, including rows without a value, and
// returns the values that SealedValues must return, by table and row id.
func sealedFixture(t *testing.T, st session.Backend) map[string]map[string][]byte {
	t.Helper()
	ctx := t.Context()
	want := map[string]map[string][]byte{}
	for _, table := range session.SealedTables {
		want[table] = map[string][]byte{}
	}
	for i := range 5 {
		u := newUser(fmt.Sprintf("u%d", i), fmt.Sprintf("user-%d", i))
		must(t, st.CreateUser(ctx, u))
		want[session.SealedUserRecords][u.ID] = u.Record
	}
	for i := range 7 {
		s := newSession("u0", fmt.Sprintf("s%d", i), at(time.Duration(i)*time.Second))
		if i == 3 {
			s.Device = nil // a row without a value is not listed
		}
		create(t, st, s)
		if s.Device != nil {
			want[session.SealedDevices][s.ID] = s.Device
		}
	}
	// Ended and revoked sessions keep sealed values too.
	_, err := st.RevokeSessions(ctx, "u0", []string{"s1"}, "logout", at(time.Minute))
	must(t, err)
	var evs []session.Event
	for i := range 6 {
		e := session.Event{ID: fmt.Sprintf("e%d", i), UserID: "u0", Kind: session.EventLogin, At: at(time.Duration(i) * time.Minute)}
		if i%2 == 0 {
			e.Detail = []byte("detail-" + e.ID)
			want[session.SealedEventDetails][e.ID] = e.Detail
		}
		evs = append(evs, e)
	}
	must(t, st.AddEvents(ctx, evs))
	return want
}

// readSealed pages through table with limit and fails on a row seen twice or out of order.
func readSealed(t *testing.T, st session.Backend, table string, limit int) map[string][]byte {
	t.Helper()
	got := map[string][]byte{}
	after := ""
	for pages := 0; ; pages++ {
		if pages > 100 {
			t.Fatalf("%s: the cursor does not advance", table)
		}
		vals, err := st.SealedValues(t.Context(), table, after, limit)
		must(t, err)
		if len(vals) > limit {
			t.Fatalf("%s: %d values with limit %d", table, len(vals), limit)
		}
		for _, v := range vals {
			if _, dup := got[v.ID]; dup {
				t.Fatalf("%s: row %s listed twice", table, v.ID)
			}
			got[v.ID] = v.Value
		}
		if len(vals) < limit {
			return got
		}
		after = vals[len(vals)-1].ID
	}
}

func testSealedValues(t *testing.T, st session.Backend) {
	want := sealedFixture(t, st)
	for _, table := range session.SealedTables {
		for _, limit := range []int{1, 2, 3, 100} {
			got := readSealed(t, st, table, limit)
			if !maps.EqualFunc(got, want[table], bytes.Equal) {
				t.Fatalf("%s with limit %d: %q, want %q", table, limit, got, want[table])
			}
		}
	}
	// A cursor past every id returns nothing, and not nil.
	vals, err := st.SealedValues(t.Context(), session.SealedDevices, "~~~~", 10)
	must(t, err)
	if vals == nil || len(vals) != 0 {
		t.Fatalf("past the end: %q", vals)
	}
	_, err = st.SealedValues(t.Context(), "sessions.token_hash", "", 10)
	wantErr(t, err, session.ErrBadInput)
	_, err = st.SealedValues(t.Context(), session.SealedDevices, "", 0)
	wantErr(t, err, session.ErrBadInput)
}

func testResealValues(t *testing.T, st session.Backend) {
	ctx := t.Context()
	want := sealedFixture(t, st)
	before := getSession(t, st, "s2")
	for _, table := range session.SealedTables {
		ids := slices.Sorted(maps.Keys(want[table]))
		fresh, stale, gone := ids[0], ids[1], "no-such-row"
		updates := []session.Reseal{
			{ID: fresh, Old: want[table][fresh], New: []byte("new-" + fresh)},
			{ID: stale, Old: []byte("not what the row holds"), New: []byte("new-" + stale)},
			{ID: gone, Old: []byte("x"), New: []byte("y")},
		}
		n, err := st.ResealValues(ctx, table, updates)
		must(t, err)
		if n != 1 {
			t.Fatalf("%s: %d replaced, want 1", table, n)
		}
		want[table][fresh] = []byte("new-" + fresh)
		if got := readSealed(t, st, table, 100); !maps.EqualFunc(got, want[table], bytes.Equal) {
			t.Fatalf("%s after re-seal: %q, want %q", table, got, want[table])
		}
		// Applying the same batch again replaces nothing: it is conditional on the old value.
		if n, err := st.ResealValues(ctx, table, updates); err != nil || n != 0 {
			t.Fatalf("%s again: %d, %v; want 0", table, n, err)
		}
		if n, err := st.ResealValues(ctx, table, nil); err != nil || n != 0 {
			t.Fatalf("%s empty batch: %d, %v", table, n, err)
		}
		// A bad batch writes nothing, even its good part.
		for _, bad := range [][]session.Reseal{
			{{ID: ids[2], Old: want[table][ids[2]], New: []byte("z")}, {ID: ids[2], Old: want[table][ids[2]], New: []byte("w")}},
			{{ID: ids[2], Old: want[table][ids[2]], New: []byte("z")}, {ID: ids[0], Old: want[table][ids[0]], New: nil}},
		} {
			_, err := st.ResealValues(ctx, table, bad)
			wantErr(t, err, session.ErrBadInput)
		}
		if got := readSealed(t, st, table, 100); !maps.EqualFunc(got, want[table], bytes.Equal) {
			t.Fatalf("%s after a bad batch: %q, want %q", table, got, want[table])
		}
	}
	_, err := st.ResealValues(ctx, "vaults.data", []session.Reseal{{ID: "v", Old: []byte("a"), New: []byte("b")}})
	wantErr(t, err, session.ErrBadInput)

	// Nothing but the sealed column changed.
	after := getSession(t, st, "s2")
	before.Device = after.Device
	assertSession(t, after, before)
	u, err := st.UserByID(ctx, "u1")
	must(t, err)
	if u.Username != "user-1" || u.VaultID != "vault-u1" {
		t.Fatalf("user after re-seal: %+v", u)
	}
}

func testResealConcurrent(t *testing.T, st session.Backend) {
	want := sealedFixture(t, st)
	const n = 6
	ids := slices.Sorted(maps.Keys(want[session.SealedDevices]))
	// Every writer re-seals every row from the same old values, in a different order: each
	// row is replaced exactly once, and every row ends with one writer's value.
	replaced := make([]int, n)
	errs := parallel(n, func(i int) error {
		var batch []session.Reseal
		for j := range ids {
			id := ids[(i+j)%len(ids)]
			batch = append(batch, session.Reseal{ID: id, Old: want[session.SealedDevices][id], New: fmt.Appendf(nil, "w%d-%s", i, id)})
		}
		var err error
		replaced[i], err = st.ResealValues(t.Context(), session.SealedDevices, batch)
		return err
	})
	total := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("writer %d: %v", i, errs[i])
		}
		total += replaced[i]
	}
	if total != len(ids) {
		t.Fatalf("%d replacements, want %d (one per row)", total, len(ids))
	}
	for id, v := range readSealed(t, st, session.SealedDevices, 100) {
		if !bytes.HasPrefix(v, []byte("w")) || !bytes.HasSuffix(v, []byte("-"+id)) {
			t.Fatalf("row %s holds %q", id, v)
		}
	}
}

func testRehashToken(t *testing.T, st session.Backend) {
	ctx := t.Context()
	s, other := newSession("u1", "s1", t0), newSession("u1", "s2", t0)
	create(t, st, s, other)
	h0, h1 := s.TokenHash, []byte("hash-1")
	must(t, st.RotateToken(ctx, "s1", h0, h1, at(time.Minute), at(time.Second)))

	rehashed := []byte("rehashed-1")
	wantErr(t, st.RehashToken(ctx, "s1", h0, rehashed), session.ErrConflict) // h0 is retired, not current
	wantErr(t, st.RehashToken(ctx, "nope", h1, rehashed), session.ErrNotFound)
	wantErr(t, st.RehashToken(ctx, "s1", h1, other.TokenHash), session.ErrConflict) // another session's
	wantErr(t, st.RehashToken(ctx, "s1", h1, h1), session.ErrBadInput)
	wantErr(t, st.RehashToken(ctx, "s1", h1, nil), session.ErrBadInput)
	if got := getSession(t, st, "s1"); !bytes.Equal(got.TokenHash, h1) {
		t.Fatalf("a failed re-hash wrote %q", got.TokenHash)
	}

	must(t, st.RehashToken(ctx, "s1", h1, rehashed))
	want := s
	want.TokenHash = rehashed
	got, match, err := st.SessionByToken(ctx, rehashed)
	must(t, err)
	assertSession(t, got, want)
	if match.Retired {
		t.Fatal("the re-hashed token matched as retired")
	}
	_, _, err = st.SessionByToken(ctx, h1)
	wantErr(t, err, session.ErrNotFound)
	// The retired token is untouched: it still detects reuse.
	if _, match, err := st.SessionByToken(ctx, h0); err != nil || !match.Retired || !match.GraceUntil.Equal(at(time.Minute)) {
		t.Fatalf("retired token after re-hash: %+v %v", match, err)
	}
	// A second re-hash from the old hash lost the race.
	wantErr(t, st.RehashToken(ctx, "s1", h1, []byte("rehashed-2")), session.ErrConflict)
	// Refresh keeps working from the re-hashed token.
	must(t, st.RotateToken(ctx, "s1", rehashed, []byte("hash-2"), at(2*time.Minute), at(2*time.Second)))

	// Ended sessions are re-hashed too: whether a session is live is the caller's business.
	_, err = st.RevokeSessions(ctx, "u1", []string{"s2"}, "logout", at(time.Second))
	must(t, err)
	must(t, st.RehashToken(ctx, "s2", other.TokenHash, []byte("rehashed-s2")))

	// Concurrent re-hashes of one token: exactly one wins.
	s3 := newSession("u1", "s3", t0)
	create(t, st, s3)
	errs := parallel(8, func(i int) error {
		return st.RehashToken(t.Context(), "s3", s3.TokenHash, fmt.Appendf(nil, "rehash-s3-%d", i))
	})
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, session.ErrConflict):
			t.Fatalf("re-hash %d: %v", i, err)
		}
	}
	if won != 1 {
		t.Fatalf("%d concurrent re-hashes won, want 1", won)
	}
}

func testSetKeyFingerprint(t *testing.T, st session.Backend) {
	ctx := t.Context()
	// On a store that never recorded one, Set records it.
	must(t, st.SetKeyFingerprint(ctx, "fp-1"))
	wantErr(t, st.CheckKeyFingerprint(ctx, "fp-0"), session.ErrKeyMismatch)
	must(t, st.CheckKeyFingerprint(ctx, "fp-1"))
	// A rotation replaces it: nodes with the old keys are refused from then on.
	must(t, st.SetKeyFingerprint(ctx, "fp-2"))
	must(t, st.CheckKeyFingerprint(ctx, "fp-2"))
	wantErr(t, st.CheckKeyFingerprint(ctx, "fp-1"), session.ErrKeyMismatch)
	must(t, st.SetKeyFingerprint(ctx, "fp-2")) // idempotent
	wantErr(t, st.SetKeyFingerprint(ctx, ""), session.ErrBadInput)
	must(t, st.CheckKeyFingerprint(ctx, "fp-2"))
}
