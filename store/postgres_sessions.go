package store

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sessiond/sessiond/session"
)

// The revoking UPDATEs. $1 at, $2 reason, $3 user id, $4 the id to keep or the ids to revoke.
// end_at only ever moves earlier: a live row's end_at is after at.
const (
	pgRevokeSet = `UPDATE sessions SET revoked_at = $1, revoke_reason = $2, end_at = LEAST(end_at, $1)
		WHERE revoked_at IS NULL AND idle_expires_at > $1 AND expires_at > $1 AND user_id = $3`
	pgRevokeExcept = pgRevokeSet + ` AND id <> $4 RETURNING id, created_at`
	pgRevokeIDs    = pgRevokeSet + ` AND id = ANY($4) RETURNING id, created_at`
)

// pgQuerier is a transaction or the pool.
type pgQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// pgRevoke runs one of the revoking UPDATEs and returns the revoked ids, oldest first.
func pgRevoke(ctx context.Context, tx pgQuerier, query string, at time.Time, reason, userID string, arg4 any) ([]string, error) {
	rows, err := tx.Query(ctx, query, millis(at), nullString(reason), userID, arg4)
	if err != nil {
		return nil, err
	}
	revoked, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (revokedRow, error) {
		var r revokedRow
		err := row.Scan(&r.id, &r.created)
		return r, err
	})
	if err != nil {
		return nil, err
	}
	return revokedIDs(revoked), nil
}

// CreateSession implements [session.Backend].
func (p *Postgres) CreateSession(ctx context.Context, s session.Session, limit session.Limit) ([]string, error) {
	if err := checkSession(&s); err != nil {
		return nil, fmt.Errorf("store: create session: %w", err)
	}
	var evicted []string
	err := p.tx(ctx, "create session", func(tx pgx.Tx) error {
		evicted = []string{}
		// Taken before counting, so the count stays true until the insert commits: two logins
		// of a full user cannot both see room for one more.
		if err := lockUser(ctx, tx, s.UserID); err != nil {
			return err
		}
		// Under the same lock as ChangeRecord and DeleteUser: the credential cannot change
		// before the insert commits.
		var cur int64
		err := tx.QueryRow(ctx, `SELECT cred_version FROM users WHERE id = $1`, s.UserID).Scan(&cur)
		if errors.Is(err, pgx.ErrNoRows) || err == nil && cur != s.CredVersion {
			return session.ErrStaleCredential
		} else if err != nil {
			return err
		}
		if limit.Max > 0 {
			rows, err := tx.Query(ctx, `
				SELECT id FROM sessions
				WHERE user_id = $1 AND revoked_at IS NULL AND idle_expires_at > $2 AND expires_at > $2
				ORDER BY created_at, id`, s.UserID, millis(s.CreatedAt))
			if err != nil {
				return err
			}
			live, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return err
			}
			if over := len(live) - limit.Max + 1; over > 0 {
				if !limit.EvictOldest {
					return session.ErrSessionLimit
				}
				if evicted, err = pgRevoke(ctx, tx, pgRevokeIDs, s.CreatedAt, evictReason, s.UserID, live[:over]); err != nil {
					return err
				}
			}
		}
		_, err = tx.Exec(ctx, `
			INSERT INTO sessions (id, user_id, vault_id, token_hash, device, created_at, last_seen_at,
				idle_expires_at, expires_at, revoked_at, revoke_reason, end_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
			s.ID, s.UserID, nullString(s.VaultID), s.TokenHash, s.Device,
			millis(s.CreatedAt), nullMillis(s.LastSeenAt), millis(s.IdleExpiresAt),
			millis(s.ExpiresAt), nullMillis(s.RevokedAt), nullString(s.RevokeReason),
			millis(s.EndAt()))
		return pgConflict(err)
	})
	if err != nil {
		return nil, err
	}
	return evicted, nil
}

// SessionByToken implements [session.Backend].
func (p *Postgres) SessionByToken(ctx context.Context, tokenHash []byte) (session.Session, session.TokenMatch, error) {
	// One statement, so a rotation committing meanwhile cannot make the token appear in
	// neither place. A current token wins over a retired one.
	var (
		retired int64
		grace   *int64
	)
	s, err := scanSession(p.pool.QueryRow(ctx, `
		SELECT `+sessionCols+`, 0 AS retired, NULL::bigint AS grace_until FROM sessions s WHERE s.token_hash = $1
		UNION ALL
		SELECT `+sessionCols+`, 1 AS retired, r.grace_until FROM retired_tokens r
			JOIN sessions s ON s.id = r.session_id WHERE r.token_hash = $1
		ORDER BY retired LIMIT 1`, notNil(tokenHash)), &retired, &grace)
	if err != nil {
		return session.Session{}, session.TokenMatch{}, p.wrap("session by token", pgNotFound(err))
	}
	m := session.TokenMatch{Retired: retired == 1}
	if grace != nil {
		m.GraceUntil = time.UnixMilli(*grace).UTC()
	}
	return s, m, nil
}

// SessionByID implements [session.Backend].
func (p *Postgres) SessionByID(ctx context.Context, id string) (session.Session, error) {
	return sessionByID(ctx, p, id)
}

// ListSessions implements [session.Backend].
func (p *Postgres) ListSessions(ctx context.Context, userID string, now time.Time) ([]session.Session, error) {
	return listSessions(ctx, p, userID, now)
}

// RotateToken implements [session.Backend].
func (p *Postgres) RotateToken(ctx context.Context, id string, oldHash, newHash []byte, graceUntil, now time.Time) error {
	if len(newHash) == 0 || subtle.ConstantTimeCompare(oldHash, newHash) == 1 {
		return fmt.Errorf("store: rotate token: %w: new token hash empty or unchanged", session.ErrBadInput)
	}
	return p.tx(ctx, "rotate token", func(tx pgx.Tx) error {
		// FOR UPDATE makes a concurrent rotation wait and then see this one's new hash, so
		// exactly one rotation from a given token succeeds.
		var current []byte
		err := tx.QueryRow(ctx, `
			SELECT token_hash FROM sessions
			WHERE id = $1 AND revoked_at IS NULL AND idle_expires_at > $2 AND expires_at > $2
			FOR UPDATE`, id, millis(now)).Scan(&current)
		if err != nil {
			return pgNotFound(err)
		}
		if subtle.ConstantTimeCompare(current, oldHash) != 1 {
			return session.ErrConflict
		}
		if _, err := tx.Exec(ctx, `UPDATE sessions SET token_hash = $1 WHERE id = $2`, newHash, id); err != nil {
			return pgConflict(err)
		}
		_, err = tx.Exec(ctx, `INSERT INTO retired_tokens (token_hash, session_id, grace_until) VALUES ($1, $2, $3)`,
			oldHash, id, millis(graceUntil))
		return pgConflict(err)
	})
}

// Touch implements [session.Backend].
//
// A touch only extends a session that was still live when the activity happened (its deadlines
// after LastSeenAt): a delayed batch must not revive a session that had already ended.
func (p *Postgres) Touch(ctx context.Context, touches []session.Touch) error {
	if len(touches) == 0 {
		return nil
	}
	ids := make([]string, len(touches))
	seen := make([]int64, len(touches))
	idle := make([]int64, len(touches))
	for i, t := range touches {
		ids[i], seen[i], idle[i] = t.ID, millis(t.LastSeenAt), millis(t.IdleExpiresAt)
	}
	return p.tx(ctx, "touch", func(tx pgx.Tx) error {
		// Lock the rows in id order first: two nodes flushing overlapping batches would
		// otherwise lock them in whatever order the join produced, and could deadlock.
		if _, err := tx.Exec(ctx, `SELECT id FROM sessions WHERE id = ANY($1) ORDER BY id FOR UPDATE`, ids); err != nil {
			return err
		}
		// A batch may name a session twice; the latest activity wins.
		_, err := tx.Exec(ctx, `
			UPDATE sessions s SET
				last_seen_at = GREATEST(s.last_seen_at, t.seen),
				idle_expires_at = LEAST(GREATEST(s.idle_expires_at, t.idle), s.expires_at),
				end_at = LEAST(GREATEST(s.idle_expires_at, t.idle), s.expires_at)
			FROM (
				SELECT id, max(seen) AS seen, max(idle) AS idle
				FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS u (id, seen, idle)
				GROUP BY id
			) t
			WHERE s.id = t.id AND s.revoked_at IS NULL AND s.idle_expires_at > t.seen AND s.expires_at > t.seen`,
			ids, seen, idle)
		return err
	})
}

// RevokeSessions implements [session.Backend].
func (p *Postgres) RevokeSessions(ctx context.Context, userID string, ids []string, reason string, at time.Time) ([]string, error) {
	if len(ids) == 0 {
		return []string{}, nil
	}
	// One statement, atomic on its own: one round trip instead of BEGIN, UPDATE, COMMIT (this
	// is on the path of every revocation notice).
	var revoked []string
	err := p.retrying(ctx, "revoke sessions", func() (err error) {
		revoked, err = pgRevoke(ctx, p.pool, pgRevokeIDs, at, reason, userID, ids)
		return err
	})
	if err != nil {
		return nil, err
	}
	return revoked, nil
}

// RevokeUserSessions implements [session.Backend].
func (p *Postgres) RevokeUserSessions(ctx context.Context, userID, exceptID, reason string, at time.Time) ([]string, error) {
	// One statement, atomic on its own, without the user's lock: a login committing at the
	// same moment is either seen (and revoked) or not (and kept), as if it came just after,
	// which is what the lock would also allow. One round trip instead of four.
	var revoked []string
	err := p.retrying(ctx, "revoke user sessions", func() (err error) {
		revoked, err = pgRevoke(ctx, p.pool, pgRevokeExcept, at, reason, userID, exceptID)
		return err
	})
	if err != nil {
		return nil, err
	}
	return revoked, nil
}

// DeleteEnded implements [session.Backend]. SKIP LOCKED lets sweepers on several nodes take
// disjoint batches instead of queueing behind each other. Retired tokens go with their session
// (ON DELETE CASCADE): they must outlive their grace period for as long as the session exists,
// to detect reuse. The rows are deleted by the physical address (ctid) the locking subquery
// returns: they are locked by this statement, so it cannot change, and finding each row again
// through the primary key made a batch of 1,000 about four times slower (38 ms against 10 ms).
func (p *Postgres) DeleteEnded(ctx context.Context, before time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	tag, err := p.pool.Exec(ctx, `
		DELETE FROM sessions WHERE ctid = ANY(ARRAY(
			SELECT ctid FROM sessions WHERE end_at < $1 ORDER BY end_at LIMIT $2 FOR UPDATE SKIP LOCKED))`,
		millis(before), limit)
	if err != nil {
		return 0, p.wrap("delete ended", err)
	}
	return int(tag.RowsAffected()), nil
}
