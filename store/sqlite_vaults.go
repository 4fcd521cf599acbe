package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/sessiond/sessiond/session"
)

// GetVault implements [session.Backend].
func (s *SQLite) GetVault(ctx context.Context, vaultID string) (session.Vault, error) {
	return getVault(ctx, s, vaultID)
}

// PutVault implements [session.Backend].
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
