package store

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/sessiond/sessiond/session"
)

// Key rotation: the recorded key fingerprint is replaced, sealed values are read in id order
// and re-sealed only where they are unchanged, and a token hash moves to another token key only
// where it is still the session's current one. Table and column names below come from
// sealedColumn alone, never from the caller.

// sealedColumn maps a name of session.SealedTables to its table and column.
func sealedColumn(name string) (table, column string, err error) {
	switch name {
	case session.SealedUserRecords:
		return "users", "record", nil
	case session.SealedDevices:
		return "sessions", "device", nil
	case session.SealedEventDetails:
		return "events", "detail", nil
	}
	return "", "", fmt.Errorf("%w: unknown sealed table %q", session.ErrBadInput, name)
}

// checkReseals rejects a batch that could not be applied as one: an empty new value (sealed
// values are never empty) or a row named twice (which replacement would win?).
func checkReseals(updates []session.Reseal) error {
	seen := make(map[string]bool, len(updates))
	for _, u := range updates {
		if len(u.New) == 0 || len(u.Old) == 0 {
			return fmt.Errorf("%w: a re-seal needs the old and the new value", session.ErrBadInput)
		}
		if seen[u.ID] {
			return fmt.Errorf("%w: row %q named twice", session.ErrBadInput, u.ID)
		}
		seen[u.ID] = true
	}
	return nil
}

func checkRehash(oldHash, newHash []byte) error {
	if len(oldHash) == 0 || len(newHash) == 0 || subtle.ConstantTimeCompare(oldHash, newHash) == 1 {
		return fmt.Errorf("%w: token hashes empty or unchanged", session.ErrBadInput)
	}
	return nil
}

// ---- SQLite ----

// SetKeyFingerprint implements [session.Store].
func (s *SQLite) SetKeyFingerprint(ctx context.Context, fp string) error {
	if fp == "" {
		return fmt.Errorf("store: set key fingerprint: %w: empty fingerprint", session.ErrBadInput)
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?1, ?2)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, keyFingerprint, fp)
	return s.wrap("set key fingerprint", err)
}

// SealedValues implements [session.Store].
func (s *SQLite) SealedValues(ctx context.Context, name, afterID string, limit int) ([]session.SealedValue, error) {
	table, column, err := sealedColumn(name)
	if err == nil && limit < 1 {
		err = fmt.Errorf("%w: limit %d", session.ErrBadInput, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("store: sealed values: %w", err)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, `+column+` FROM `+table+`
		WHERE id > ?1 AND length(`+column+`) > 0 ORDER BY id LIMIT ?2`, afterID, limit)
	if err != nil {
		return nil, s.wrap("sealed values", err)
	}
	defer rows.Close()
	out := []session.SealedValue{}
	for rows.Next() {
		var v session.SealedValue
		if err := rows.Scan(&v.ID, &v.Value); err != nil {
			return nil, s.wrap("sealed values", err)
		}
		out = append(out, v)
	}
	return out, s.wrap("sealed values", rows.Err())
}

// ResealValues implements [session.Store].
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

// RehashToken implements [session.Store].
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

// ---- PostgreSQL ----

// SetKeyFingerprint implements [session.Store].
func (p *Postgres) SetKeyFingerprint(ctx context.Context, fp string) error {
	if fp == "" {
		return fmt.Errorf("store: set key fingerprint: %w: empty fingerprint", session.ErrBadInput)
	}
	_, err := p.pool.Exec(ctx, `INSERT INTO meta (key, value) VALUES ($1, $2)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, keyFingerprint, fp)
	return p.wrap("set key fingerprint", err)
}

// SealedValues implements [session.Store].
func (p *Postgres) SealedValues(ctx context.Context, name, afterID string, limit int) ([]session.SealedValue, error) {
	table, column, err := sealedColumn(name)
	if err == nil && limit < 1 {
		err = fmt.Errorf("%w: limit %d", session.ErrBadInput, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("store: sealed values: %w", err)
	}
	// The comparison and the order use the same collation, so the cursor neither skips nor
	// repeats a row whatever the database's collation is.
	rows, err := p.pool.Query(ctx, `SELECT id, `+column+` FROM `+table+`
		WHERE id > $1 AND octet_length(`+column+`) > 0 ORDER BY id LIMIT $2`, afterID, limit)
	if err != nil {
		return nil, p.wrap("sealed values", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (session.SealedValue, error) {
		var v session.SealedValue
		err := row.Scan(&v.ID, &v.Value)
		return v, err
	})
	if err != nil {
		return nil, p.wrap("sealed values", err)
	}
	if out == nil {
		out = []session.SealedValue{}
	}
	return out, nil
}

// ResealValues implements [session.Store]. A row updated concurrently is re-read by the
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

// RehashToken implements [session.Store].
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
