package store

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"fmt"

	"github.com/sessiond/sessiond/session"
)

// CheckKeyFingerprint implements [session.Backend].
func (s *SQLite) CheckKeyFingerprint(ctx context.Context, fp string) error {
	return checkKeyFingerprint(ctx, s, fp)
}

// SetKeyFingerprint implements [session.Backend].
func (s *SQLite) SetKeyFingerprint(ctx context.Context, fp string) error {
	return setKeyFingerprint(ctx, s, fp)
}

// SealedValues implements [session.Backend].
func (s *SQLite) SealedValues(ctx context.Context, name, afterID string, limit int) ([]session.SealedValue, error) {
	return sealedValues(ctx, s, name, afterID, limit)
}

// ResealValues implements [session.Backend].
func (s *SQLite) ResealValues(ctx context.Context, name string, updates []session.Reseal) (int, error) {
	table, column, err := sealedColumn(name)
	if err == nil {
		err = checkReseals(updates)
	}
	if err != nil {
		return 0, fmt.Errorf("store: reseal values: %w", err)
	}
	if len(updates) == 0 {
		return 0, nil
	}
	var n int64
	err = s.tx(ctx, "reseal values", func(tx *sql.Tx) error {
		n = 0
		stmt, err := tx.PrepareContext(ctx, `UPDATE `+table+` SET `+column+` = ?1 WHERE id = ?2 AND `+column+` = ?3`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, u := range updates {
			res, err := stmt.ExecContext(ctx, u.New, u.ID, u.Old)
			if err != nil {
				return err
			}
			k, err := res.RowsAffected()
			if err != nil {
				return err
			}
			n += k
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return int(n), nil
}

// RehashToken implements [session.Backend].
func (s *SQLite) RehashToken(ctx context.Context, id string, oldHash, newHash []byte) error {
	if err := checkRehash(oldHash, newHash); err != nil {
		return fmt.Errorf("store: rehash token: %w", err)
	}
	return s.tx(ctx, "rehash token", func(tx *sql.Tx) error {
		// The transaction holds the write lock from BEGIN: nothing changes the row between
		// this read and the update.
		var current []byte
		if err := tx.QueryRowContext(ctx, `SELECT token_hash FROM sessions WHERE id = ?1`, id).Scan(&current); err != nil {
			return sqliteNotFound(err)
		}
		if subtle.ConstantTimeCompare(current, oldHash) != 1 {
			return session.ErrConflict
		}
		_, err := tx.ExecContext(ctx, `UPDATE sessions SET token_hash = ?1 WHERE id = ?2`, newHash, id)
		if sqliteUniqueViolation(err) {
			return fmt.Errorf("%w: %w", session.ErrConflict, err)
		}
		return err
	})
}
