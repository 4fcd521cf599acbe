package store

import (
	"cmp"
	"database/sql"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"time"

	"github.com/sessiond/sessiond/session"
)

// keyFingerprint is the meta key under which CheckKeyFingerprint records the deployment's key.
const keyFingerprint = "key_fingerprint"

// evictReason is the revoke reason of sessions evicted by a session limit.
const evictReason = "session_limit"

// sessionCols lists the columns scanSession reads, in order, from a sessions table aliased s.
const sessionCols = `s.id, s.user_id, s.vault_id, s.token_hash, s.device, s.created_at,
	s.last_seen_at, s.idle_expires_at, s.expires_at, s.revoked_at, s.revoke_reason`

// userCols lists the columns scanUser reads, in order.
const userCols = `id, username, record, vault_id, created_at, cred_version`

// scanner is a row of either driver: *sql.Row, *sql.Rows, pgx.Row and pgx.Rows all fit.
type scanner interface {
	Scan(dest ...any) error
}

// millis is t as stored in a NOT NULL column. A zero t round-trips: its millisecond count
// converts back to a time for which IsZero is true.
func millis(t time.Time) int64 { return t.UnixMilli() }

// nullMillis is t as stored in a nullable column: the zero time is NULL.
func nullMillis(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMilli()
}

// fromMillis reads a time column; NULL is the zero time.
func fromMillis(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.UnixMilli(n.Int64).UTC()
}

// nullString stores "" as NULL so an absent value is not mistaken for an empty one.
func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// notNil turns a nil slice into an empty one for NOT NULL blob columns: both drivers send nil
// as NULL.
func notNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

func scanUser(row scanner) (session.User, error) {
	var (
		u       session.User
		created sql.NullInt64
	)
	if err := row.Scan(&u.ID, &u.Username, &u.Record, &u.VaultID, &created, &u.CredVersion); err != nil {
		return session.User{}, err
	}
	u.CreatedAt = fromMillis(created)
	return u, nil
}

// scanSession reads sessionCols followed by extra destinations.
func scanSession(row scanner, extra ...any) (session.Session, error) {
	var (
		s                                     session.Session
		vaultID, reason                       sql.NullString
		created, seen, idle, expires, revoked sql.NullInt64
	)
	dest := append([]any{&s.ID, &s.UserID, &vaultID, &s.TokenHash, &s.Device, &created,
		&seen, &idle, &expires, &revoked, &reason}, extra...)
	if err := row.Scan(dest...); err != nil {
		return session.Session{}, err
	}
	s.VaultID = vaultID.String
	s.RevokeReason = reason.String
	s.CreatedAt = fromMillis(created)
	s.LastSeenAt = fromMillis(seen)
	s.IdleExpiresAt = fromMillis(idle)
	s.ExpiresAt = fromMillis(expires)
	s.RevokedAt = fromMillis(revoked)
	return s, nil
}

// revokedRow is one row returned by a revoking UPDATE ... RETURNING id, created_at.
type revokedRow struct {
	id      string
	created int64
}

// revokedIDs orders revoked ids oldest first so callers (and tests) see a stable order whatever
// order the database returned the rows in. It never returns nil: "none" is an empty list.
func revokedIDs(rows []revokedRow) []string {
	slices.SortFunc(rows, func(a, b revokedRow) int {
		return cmp.Or(cmp.Compare(a.created, b.created), cmp.Compare(a.id, b.id))
	})
	ids := make([]string, 0, len(rows))
	for _, r := range rows {
		ids = append(ids, r.id)
	}
	return ids
}

// etag is the ETag of a vault version.
func etag(version int64) string { return strconv.FormatInt(version, 10) }

// lockKey derives a 64-bit PostgreSQL advisory lock key from a namespaced name. Collisions only
// serialise unrelated work, they never break it.
func lockKey(namespace, name string) int64 {
	h := fnv.New64a()
	h.Write([]byte(namespace))
	h.Write([]byte{0})
	h.Write([]byte(name))
	return int64(h.Sum64())
}

// checkSession rejects a session that could not be stored meaningfully.
func checkSession(s *session.Session) error {
	if s.ID == "" || s.UserID == "" || len(s.TokenHash) == 0 {
		return fmt.Errorf("%w: session needs an id, a user id and a token hash", session.ErrBadInput)
	}
	return nil
}

// checkUser rejects a user that could not be stored meaningfully.
func checkUser(u *session.User) error {
	if u.ID == "" || u.Username == "" || u.VaultID == "" {
		return fmt.Errorf("%w: user needs an id, a username and a vault id", session.ErrBadInput)
	}
	return nil
}
