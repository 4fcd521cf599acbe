package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sessiond/sessiond/session"
)

// CreateUser implements [session.Backend].
func (p *Postgres) CreateUser(ctx context.Context, u session.User) error {
	if err := checkUser(&u); err != nil {
		return fmt.Errorf("store: create user: %w", err)
	}
	// DO NOTHING on the username alone tells a taken username apart from a clash on another
	// unique column, which is a caller bug reported as a conflict.
	tag, err := p.pool.Exec(ctx, `
		INSERT INTO users (id, username, record, vault_id, created_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (username) DO NOTHING`,
		u.ID, u.Username, notNil(u.Record), u.VaultID, nullMillis(u.CreatedAt))
	if err != nil {
		return p.wrap("create user", pgConflict(err))
	}
	if tag.RowsAffected() == 0 {
		return p.wrap("create user", session.ErrUsernameTaken)
	}
	return nil
}

// UserByName implements [session.Backend].
func (p *Postgres) UserByName(ctx context.Context, username string) (session.User, error) {
	return userWhere(ctx, p, "user by name", "username", username)
}

// UserByID implements [session.Backend].
func (p *Postgres) UserByID(ctx context.Context, id string) (session.User, error) {
	return userWhere(ctx, p, "user by id", "id", id)
}

// ChangeRecord implements [session.Backend].
func (p *Postgres) ChangeRecord(ctx context.Context, userID string, credVersion int64, record []byte, keepSessionID, reason string, at time.Time) ([]string, error) {
	var revoked []string
	err := p.tx(ctx, "change record", func(tx pgx.Tx) error {
		if err := lockUser(ctx, tx, userID); err != nil {
			return err
		}
		var cur int64
		err := tx.QueryRow(ctx, `UPDATE users SET record = $1, cred_version = cred_version + 1
			WHERE id = $2 RETURNING cred_version - 1`, notNil(record), userID).Scan(&cur)
		if err != nil {
			return pgNotFound(err)
		}
		if cur != credVersion {
			// Undone with the transaction.
			return session.ErrStaleCredential
		}
		revoked, err = pgRevoke(ctx, tx, pgRevokeExcept, at, reason, userID, keepSessionID)
		return err
	})
	if err != nil {
		return nil, err
	}
	return revoked, nil
}

// DeleteUser implements [session.Backend].
func (p *Postgres) DeleteUser(ctx context.Context, userID, reason string, at time.Time) ([]string, error) {
	var revoked []string
	err := p.tx(ctx, "delete user", func(tx pgx.Tx) error {
		if err := lockUser(ctx, tx, userID); err != nil {
			return err
		}
		var vaultID string
		if err := tx.QueryRow(ctx, `DELETE FROM users WHERE id = $1 RETURNING vault_id`, userID).Scan(&vaultID); err != nil {
			return pgNotFound(err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM vaults WHERE vault_id = $1`, vaultID); err != nil {
			return err
		}
		// Session ids are never empty, so excepting "" excepts none.
		var err error
		revoked, err = pgRevoke(ctx, tx, pgRevokeExcept, at, reason, userID, "")
		return err
	})
	if err != nil {
		return nil, err
	}
	return revoked, nil
}
