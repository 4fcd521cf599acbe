package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/sessiond/sessiond/session"
)

// CreateUser implements [session.Backend].
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

// UserByName implements [session.Backend].
func (s *SQLite) UserByName(ctx context.Context, username string) (session.User, error) {
	return userWhere(ctx, s, "user by name", "username", username)
}

// UserByID implements [session.Backend].
func (s *SQLite) UserByID(ctx context.Context, id string) (session.User, error) {
	return userWhere(ctx, s, "user by id", "id", id)
}

// ChangeRecord implements [session.Backend].
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

// DeleteUser implements [session.Backend].
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
