package store

import (
	"context"
	"crypto/subtle"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/sessiond/sessiond/session"
)

// CheckKeyFingerprint implements [session.Backend].
func (p *Postgres) CheckKeyFingerprint(ctx context.Context, fp string) error {
	return checkKeyFingerprint(ctx, p, fp)
}

// SetKeyFingerprint implements [session.Backend].
func (p *Postgres) SetKeyFingerprint(ctx context.Context, fp string) error {
	return setKeyFingerprint(ctx, p, fp)
}

// SealedValues implements [session.Backend].
func (p *Postgres) SealedValues(ctx context.Context, name, afterID string, limit int) ([]session.SealedValue, error) {
	return sealedValues(ctx, p, name, afterID, limit)
}

// ResealValues implements [session.Backend]. A row updated concurrently is re-read by the
// UPDATE once the other transaction commits (READ COMMITTED), so the comparison with Old
// sees the value that won.
func (p *Postgres) ResealValues(ctx context.Context, name string, updates []session.Reseal) (int, error) {
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
	ids := make([]string, len(updates))
	olds := make([][]byte, len(updates))
	news := make([][]byte, len(updates))
	for i, u := range updates {
		ids[i], olds[i], news[i] = u.ID, u.Old, u.New
	}
	var n int64
	err = p.tx(ctx, "reseal values", func(tx pgx.Tx) error {
		// Lock the rows in id order first, as Touch does, so that this batch and a node's
		// activity flush cannot deadlock.
		if _, err := tx.Exec(ctx, `SELECT id FROM `+table+` WHERE id = ANY($1) ORDER BY id FOR UPDATE`, ids); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `
			UPDATE `+table+` t SET `+column+` = u.new
			FROM unnest($1::text[], $2::bytea[], $3::bytea[]) AS u (id, old, new)
			WHERE t.id = u.id AND t.`+column+` = u.old`, ids, olds, news)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, err
	}
	return int(n), nil
}

// RehashToken implements [session.Backend].
func (p *Postgres) RehashToken(ctx context.Context, id string, oldHash, newHash []byte) error {
	if err := checkRehash(oldHash, newHash); err != nil {
		return fmt.Errorf("store: rehash token: %w", err)
	}
	return p.tx(ctx, "rehash token", func(tx pgx.Tx) error {
		// FOR UPDATE makes a concurrent refresh or re-hash wait, then see this one's hash.
		var current []byte
		if err := tx.QueryRow(ctx, `SELECT token_hash FROM sessions WHERE id = $1 FOR UPDATE`, id).Scan(&current); err != nil {
			return pgNotFound(err)
		}
		if subtle.ConstantTimeCompare(current, oldHash) != 1 {
			return session.ErrConflict
		}
		_, err := tx.Exec(ctx, `UPDATE sessions SET token_hash = $1 WHERE id = $2`, newHash, id)
		return pgConflict(err)
	})
}
