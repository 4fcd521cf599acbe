package store

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pressly/goose/v3"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/sessiond/sessiond/session"
)

// SQLite is the embedded [session.Store]: one database file, for a single process. Several
// processes opening the same file stay correct (SQLite locks the file) but contend for its one
// write lock.
type SQLite struct {
	db        *sql.DB
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

var _ session.Store = (*SQLite)(nil)

// sqliteBusyTimeout bounds how long a statement waits for another connection's write lock before
// failing with ErrUnavailable.
const sqliteBusyTimeout = 5 * time.Second

// OpenSQLite opens the database file at path, creating it if needed, and applies the pending
// migrations.
func OpenSQLite(ctx context.Context, path string) (*SQLite, error) {
	if path == "" {
		return nil, fmt.Errorf("store: open sqlite: %w: empty path", session.ErrBadInput)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("store: open sqlite: %w", err)
	}
	// Every option is in the DSN because database/sql opens connections on its own: a PRAGMA
	// run once would configure only whichever connection happened to run it.
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", sqliteBusyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	// Off by default in SQLite, and retired tokens rely on ON DELETE CASCADE.
	q.Add("_pragma", "foreign_keys(1)")
	// With WAL, NORMAL loses at most the last transactions on power loss, never consistency.
	q.Add("_pragma", "synchronous(NORMAL)")
	// A read-then-write transaction begun DEFERRED cannot wait for the write lock when another
	// writer got there first (it fails with SQLITE_BUSY at once); taking the lock at BEGIN lets
	// the busy timeout apply and serialises check-then-write sequences such as the session limit.
	q.Set("_txlock", "immediate")
	// A file: URI so that any character in the path (?, #, %) is escaped rather than parsed.
	dsn := (&url.URL{Scheme: "file", Path: abs}).String() + "?" + q.Encode()

	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("store: open sqlite: %w", err)
	}
	s := &SQLite{db: db}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, s.wrap("open sqlite", err)
	}
	if err := migrate(ctx, goose.DialectSQLite3, db, "migrations/sqlite", nil); err != nil {
		db.Close()
		return nil, s.wrap("migrate sqlite", err)
	}
	return s, nil
}

// Close closes the database. Calling it again does nothing and returns the first result.
func (s *SQLite) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.closeErr = s.db.Close()
	})
	return s.closeErr
}

// wrap prefixes err with the operation and classifies it: our sentinels stay checkable, and
// conditions that mean "the store cannot serve right now" also match ErrUnavailable.
func (s *SQLite) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if s.closed.Load() || sqliteUnavailable(err) {
		return fmt.Errorf("store: %s: %w: %w", op, session.ErrUnavailable, err)
	}
	return fmt.Errorf("store: %s: %w", op, err)
}

func sqliteUnavailable(err error) bool {
	if errors.Is(err, sql.ErrConnDone) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff { // primary result code
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR,
			sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY:
			return true
		}
	}
	return false
}

// sqliteUniqueViolation reports a UNIQUE or PRIMARY KEY constraint failure.
func sqliteUniqueViolation(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	c := se.Code()
	return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

// tx runs fn in a write transaction (BEGIN IMMEDIATE, see OpenSQLite) and commits it when fn
// returns nil.
func (s *SQLite) tx(ctx context.Context, op string, fn func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return s.wrap(op, err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	if err := fn(tx); err != nil {
		return s.wrap(op, err)
	}
	return s.wrap(op, tx.Commit())
}

// CreateUser implements [session.Store].
func (s *SQLite) CreateUser(ctx context.Context, u session.User) error {
	if err := checkUser(&u); err != nil {
		return fmt.Errorf("store: create user: %w", err)
	}
	// DO NOTHING on the username alone tells a taken username apart from a clash on another
	// unique column, which is a caller bug reported as a conflict.
	res, err := s.db.ExecContext(ctx, `
		INSERT INTO users (id, username, record, vault_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
		ON CONFLICT (username) DO NOTHING`,
		u.ID, u.Username, notNil(u.Record), u.VaultID, nullMillis(u.CreatedAt))
	if err != nil {
		if sqliteUniqueViolation(err) {
			err = fmt.Errorf("%w: %w", session.ErrConflict, err)
		}
		return s.wrap("create user", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return s.wrap("create user", err)
	} else if n == 0 {
		return s.wrap("create user", session.ErrUsernameTaken)
	}
	return nil
}

// UserByName implements [session.Store].
func (s *SQLite) UserByName(ctx context.Context, username string) (session.User, error) {
	u, err := scanUser(s.db.QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE username = ?1`, username))
	return u, s.wrap("user by name", sqliteNotFound(err))
}

// UserByID implements [session.Store].
func (s *SQLite) UserByID(ctx context.Context, id string) (session.User, error) {
	u, err := scanUser(s.db.QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE id = ?1`, id))
	return u, s.wrap("user by id", sqliteNotFound(err))
}

func sqliteNotFound(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return session.ErrNotFound
	}
	return err
}

// The revoking UPDATEs. ?1 at, ?2 reason, ?3 user id, ?4 the id to keep or the JSON array of ids
// to revoke. end_at only ever moves earlier: a live row's end_at is after at.
const (
	sqliteRevokeSet = `UPDATE sessions SET revoked_at = ?1, revoke_reason = ?2, end_at = min(end_at, ?1)
		WHERE revoked_at IS NULL AND idle_expires_at > ?1 AND expires_at > ?1 AND user_id = ?3`
	sqliteRevokeExcept = sqliteRevokeSet + ` AND id <> ?4 RETURNING id, created_at`
	sqliteRevokeIDs    = sqliteRevokeSet + ` AND id IN (SELECT value FROM json_each(?4)) RETURNING id, created_at`
)

// sqliteRevoke runs one of the revoking UPDATEs and returns the revoked ids, oldest first.
func sqliteRevoke(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, query string, at time.Time, reason, userID string, arg4 any) ([]string, error) {
	rows, err := q.QueryContext(ctx, query, millis(at), nullString(reason), userID, arg4)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var revoked []revokedRow
	for rows.Next() {
		var r revokedRow
		if err := rows.Scan(&r.id, &r.created); err != nil {
			return nil, err
		}
		revoked = append(revoked, r)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return revokedIDs(revoked), nil
}

// ChangeRecord implements [session.Store].
func (s *SQLite) ChangeRecord(ctx context.Context, userID string, credVersion int64, record []byte, keepSessionID, reason string, at time.Time) ([]string, error) {
	var revoked []string
	err := s.tx(ctx, "change record", func(tx *sql.Tx) error {
		var cur int64
		err := tx.QueryRowContext(ctx, `UPDATE users SET record = ?1, cred_version = cred_version + 1
			WHERE id = ?2 RETURNING cred_version - 1`, notNil(record), userID).Scan(&cur)
		if err != nil {
			return sqliteNotFound(err)
		}
		if cur != credVersion {
			// Undone with the transaction.
			return session.ErrStaleCredential
		}
		revoked, err = sqliteRevoke(ctx, tx, sqliteRevokeExcept, at, reason, userID, keepSessionID)
		return err
	})
	if err != nil {
		return nil, err
	}
	return revoked, nil
}

// DeleteUser implements [session.Store].
func (s *SQLite) DeleteUser(ctx context.Context, userID, reason string, at time.Time) ([]string, error) {
	var revoked []string
	err := s.tx(ctx, "delete user", func(tx *sql.Tx) error {
		var vaultID string
		err := tx.QueryRowContext(ctx, `DELETE FROM users WHERE id = ?1 RETURNING vault_id`, userID).Scan(&vaultID)
		if err != nil {
			return sqliteNotFound(err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM vaults WHERE vault_id = ?1`, vaultID); err != nil {
			return err
		}
		// Session ids are never empty, so excepting "" excepts none.
		revoked, err = sqliteRevoke(ctx, tx, sqliteRevokeExcept, at, reason, userID, "")
		return err
	})
	if err != nil {
		return nil, err
	}
	return revoked, nil
}

// CreateSession implements [session.Store].
func (s *SQLite) CreateSession(ctx context.Context, sess session.Session, limit session.Limit) ([]string, error) {
	if err := checkSession(&sess); err != nil {
		return nil, fmt.Errorf("store: create session: %w", err)
	}
	evicted := []string{}
	err := s.tx(ctx, "create session", func(tx *sql.Tx) error {
		// The transaction holds the write lock from BEGIN, so neither the user's credential
		// nor the count can change before the insert.
		if err := sqliteCheckCredential(ctx, tx, sess.UserID, sess.CredVersion); err != nil {
			return err
		}
		if limit.Max > 0 {
			live, err := sqliteLiveIDs(ctx, tx, sess.UserID, sess.CreatedAt)
			if err != nil {
				return err
			}
			if over := len(live) - limit.Max + 1; over > 0 {
				if !limit.EvictOldest {
					return session.ErrSessionLimit
				}
				ids, err := json.Marshal(live[:over])
				if err != nil {
					return err
				}
				if evicted, err = sqliteRevoke(ctx, tx, sqliteRevokeIDs, sess.CreatedAt, evictReason, sess.UserID, string(ids)); err != nil {
					return err
				}
			}
		}
		_, err := tx.ExecContext(ctx, `
			INSERT INTO sessions (id, user_id, vault_id, token_hash, device, created_at, last_seen_at,
				idle_expires_at, expires_at, revoked_at, revoke_reason, end_at)
			VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)`,
			sess.ID, sess.UserID, nullString(sess.VaultID), sess.TokenHash, sess.Device,
			millis(sess.CreatedAt), nullMillis(sess.LastSeenAt), millis(sess.IdleExpiresAt),
			millis(sess.ExpiresAt), nullMillis(sess.RevokedAt), nullString(sess.RevokeReason),
			millis(sess.EndAt()))
		if sqliteUniqueViolation(err) {
			return fmt.Errorf("%w: %w", session.ErrConflict, err)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return evicted, nil
}

// sqliteCheckCredential returns ErrStaleCredential unless the user exists with credential
// version v.
func sqliteCheckCredential(ctx context.Context, tx *sql.Tx, userID string, v int64) error {
	var cur int64
	err := tx.QueryRowContext(ctx, `SELECT cred_version FROM users WHERE id = ?1`, userID).Scan(&cur)
	if errors.Is(err, sql.ErrNoRows) || err == nil && cur != v {
		return session.ErrStaleCredential
	}
	return err
}

// sqliteLiveIDs returns the ids of the user's sessions live at now, oldest first.
func sqliteLiveIDs(ctx context.Context, tx *sql.Tx, userID string, now time.Time) ([]string, error) {
	rows, err := tx.QueryContext(ctx, `
		SELECT id FROM sessions
		WHERE user_id = ?1 AND revoked_at IS NULL AND idle_expires_at > ?2 AND expires_at > ?2
		ORDER BY created_at, id`, userID, millis(now))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// SessionByToken implements [session.Store].
func (s *SQLite) SessionByToken(ctx context.Context, tokenHash []byte) (session.Session, session.TokenMatch, error) {
	// One statement, so a rotation committing meanwhile cannot make the token appear in
	// neither place. A current token wins over a retired one.
	var (
		retired int64
		grace   sql.NullInt64
	)
	sess, err := scanSession(s.db.QueryRowContext(ctx, `
		SELECT `+sessionCols+`, 0 AS retired, NULL AS grace_until FROM sessions s WHERE s.token_hash = ?1
		UNION ALL
		SELECT `+sessionCols+`, 1 AS retired, r.grace_until FROM retired_tokens r
			JOIN sessions s ON s.id = r.session_id WHERE r.token_hash = ?1
		ORDER BY retired LIMIT 1`, notNil(tokenHash)), &retired, &grace)
	if err != nil {
		return session.Session{}, session.TokenMatch{}, s.wrap("session by token", sqliteNotFound(err))
	}
	return sess, session.TokenMatch{Retired: retired == 1, GraceUntil: fromMillis(grace)}, nil
}

// SessionByID implements [session.Store].
func (s *SQLite) SessionByID(ctx context.Context, id string) (session.Session, error) {
	sess, err := scanSession(s.db.QueryRowContext(ctx, `SELECT `+sessionCols+` FROM sessions s WHERE s.id = ?1`, id))
	return sess, s.wrap("session by id", sqliteNotFound(err))
}

// ListSessions implements [session.Store].
func (s *SQLite) ListSessions(ctx context.Context, userID string, now time.Time) ([]session.Session, error) {
	rows, err := s.db.QueryContext(ctx, `
		SELECT `+sessionCols+` FROM sessions s
		WHERE s.user_id = ?1 AND s.revoked_at IS NULL AND s.idle_expires_at > ?2 AND s.expires_at > ?2
		ORDER BY s.created_at, s.id`, userID, millis(now))
	if err != nil {
		return nil, s.wrap("list sessions", err)
	}
	defer rows.Close()
	list := []session.Session{}
	for rows.Next() {
		sess, err := scanSession(rows)
		if err != nil {
			return nil, s.wrap("list sessions", err)
		}
		list = append(list, sess)
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap("list sessions", err)
	}
	return list, nil
}

// RotateToken implements [session.Store].
func (s *SQLite) RotateToken(ctx context.Context, id string, oldHash, newHash []byte, graceUntil, now time.Time) error {
	if len(newHash) == 0 || subtle.ConstantTimeCompare(oldHash, newHash) == 1 {
		return fmt.Errorf("store: rotate token: %w: new token hash empty or unchanged", session.ErrBadInput)
	}
	return s.tx(ctx, "rotate token", func(tx *sql.Tx) error {
		var current []byte
		err := tx.QueryRowContext(ctx, `
			SELECT token_hash FROM sessions
			WHERE id = ?1 AND revoked_at IS NULL AND idle_expires_at > ?2 AND expires_at > ?2`,
			id, millis(now)).Scan(&current)
		if err != nil {
			return sqliteNotFound(err)
		}
		if subtle.ConstantTimeCompare(current, oldHash) != 1 {
			return session.ErrConflict
		}
		if _, err := tx.ExecContext(ctx, `UPDATE sessions SET token_hash = ?1 WHERE id = ?2`, newHash, id); err != nil {
			if sqliteUniqueViolation(err) {
				err = fmt.Errorf("%w: %w", session.ErrConflict, err)
			}
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO retired_tokens (token_hash, session_id, grace_until) VALUES (?1, ?2, ?3)`,
			oldHash, id, millis(graceUntil))
		if sqliteUniqueViolation(err) {
			return fmt.Errorf("%w: %w", session.ErrConflict, err)
		}
		return err
	})
}

// Touch implements [session.Store].
//
// A touch only extends a session that was still live when the activity happened (its deadlines
// after LastSeenAt): a delayed batch must not revive a session that had already ended.
func (s *SQLite) Touch(ctx context.Context, touches []session.Touch) error {
	if len(touches) == 0 {
		return nil
	}
	return s.tx(ctx, "touch", func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `
			UPDATE sessions SET
				last_seen_at = max(coalesce(last_seen_at, ?1), ?1),
				idle_expires_at = min(max(idle_expires_at, ?2), expires_at),
				end_at = min(max(idle_expires_at, ?2), expires_at)
			WHERE id = ?3 AND revoked_at IS NULL AND idle_expires_at > ?1 AND expires_at > ?1`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, t := range touches {
			if _, err := stmt.ExecContext(ctx, millis(t.LastSeenAt), millis(t.IdleExpiresAt), t.ID); err != nil {
				return err
			}
		}
		return nil
	})
}

// RevokeSessions implements [session.Store].
func (s *SQLite) RevokeSessions(ctx context.Context, userID string, ids []string, reason string, at time.Time) ([]string, error) {
	if len(ids) == 0 {
		return []string{}, nil
	}
	list, err := json.Marshal(ids)
	if err != nil {
		return nil, fmt.Errorf("store: revoke sessions: %w", err)
	}
	revoked, err := sqliteRevoke(ctx, s.db, sqliteRevokeIDs, at, reason, userID, string(list))
	if err != nil {
		return nil, s.wrap("revoke sessions", err)
	}
	return revoked, nil
}

// RevokeUserSessions implements [session.Store].
func (s *SQLite) RevokeUserSessions(ctx context.Context, userID, exceptID, reason string, at time.Time) ([]string, error) {
	revoked, err := sqliteRevoke(ctx, s.db, sqliteRevokeExcept, at, reason, userID, exceptID)
	if err != nil {
		return nil, s.wrap("revoke user sessions", err)
	}
	return revoked, nil
}

// DeleteEnded implements [session.Store]. Retired tokens go with their session (ON DELETE
// CASCADE): they must outlive their grace period for as long as the session exists, to detect
// reuse.
func (s *SQLite) DeleteEnded(ctx context.Context, before time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	res, err := s.db.ExecContext(ctx, `
		DELETE FROM sessions WHERE id IN (
			SELECT id FROM sessions WHERE end_at < ?1 ORDER BY end_at LIMIT ?2)`,
		millis(before), limit)
	if err != nil {
		return 0, s.wrap("delete ended", err)
	}
	n, err := res.RowsAffected()
	return int(n), s.wrap("delete ended", err)
}

// GetVault implements [session.Store].
func (s *SQLite) GetVault(ctx context.Context, vaultID string) (session.Vault, error) {
	var (
		v       session.Vault
		version int64
		updated sql.NullInt64
	)
	err := s.db.QueryRowContext(ctx, `SELECT data, version, updated_at FROM vaults WHERE vault_id = ?1`, vaultID).
		Scan(&v.Data, &version, &updated)
	if err != nil {
		return session.Vault{}, s.wrap("get vault", sqliteNotFound(err))
	}
	v.ETag = etag(version)
	v.UpdatedAt = fromMillis(updated)
	return v, nil
}

// PutVault implements [session.Store].
func (s *SQLite) PutVault(ctx context.Context, p session.VaultPut) (string, error) {
	var version int64
	err := s.tx(ctx, "put vault", func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `SELECT version FROM vaults WHERE vault_id = ?1`, p.VaultID).Scan(&version)
		exists := err == nil
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		switch {
		case p.IfNoneMatch && exists:
			return fmt.Errorf("%w: vault exists", session.ErrPrecondition)
		case p.IfMatch != "" && (!exists || etag(version) != p.IfMatch):
			return fmt.Errorf("%w: vault version differs", session.ErrPrecondition)
		}
		version++ // 0 when absent: versions start at 1
		_, err = tx.ExecContext(ctx, `
			INSERT INTO vaults (vault_id, data, version, updated_at) VALUES (?1, ?2, ?3, ?4)
			ON CONFLICT (vault_id) DO UPDATE SET data = excluded.data, version = excluded.version,
				updated_at = excluded.updated_at`,
			p.VaultID, notNil(p.Data), version, nullMillis(p.At))
		return err
	})
	if err != nil {
		return "", err
	}
	return etag(version), nil
}

// CheckKeyFingerprint implements [session.Store].
func (s *SQLite) CheckKeyFingerprint(ctx context.Context, fp string) error {
	if fp == "" {
		return fmt.Errorf("store: check key fingerprint: %w: empty fingerprint", session.ErrBadInput)
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING`,
		keyFingerprint, fp); err != nil {
		return s.wrap("check key fingerprint", err)
	}
	var recorded string
	if err := s.db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?1`, keyFingerprint).Scan(&recorded); err != nil {
		return s.wrap("check key fingerprint", err)
	}
	if recorded != fp {
		return fmt.Errorf("store: check key fingerprint: %w", session.ErrKeyMismatch)
	}
	return nil
}

// Ping implements [session.Store].
func (s *SQLite) Ping(ctx context.Context) error {
	_, err := s.db.ExecContext(ctx, `SELECT 1`)
	return s.wrap("ping", err)
}
