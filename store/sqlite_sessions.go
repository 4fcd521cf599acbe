package store

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/sessiond/sessiond/session"
)

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

// CreateSession implements [session.Backend].
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

// SessionByToken implements [session.Backend].
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

// SessionByID implements [session.Backend].
func (s *SQLite) SessionByID(ctx context.Context, id string) (session.Session, error) {
	return sessionByID(ctx, s, id)
}

// ListSessions implements [session.Backend].
func (s *SQLite) ListSessions(ctx context.Context, userID string, now time.Time) ([]session.Session, error) {
	return listSessions(ctx, s, userID, now)
}

// RotateToken implements [session.Backend].
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

// Touch implements [session.Backend].
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

// RevokeSessions implements [session.Backend].
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

// RevokeUserSessions implements [session.Backend].
func (s *SQLite) RevokeUserSessions(ctx context.Context, userID, exceptID, reason string, at time.Time) ([]string, error) {
	revoked, err := sqliteRevoke(ctx, s.db, sqliteRevokeExcept, at, reason, userID, exceptID)
	if err != nil {
		return nil, s.wrap("revoke user sessions", err)
	}
	return revoked, nil
}

// DeleteEnded implements [session.Backend]. Retired tokens go with their session (ON DELETE
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
