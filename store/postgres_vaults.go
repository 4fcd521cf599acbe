package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/sessiond/sessiond/session"
)

// GetVault implements [session.Backend].
func (p *Postgres) GetVault(ctx context.Context, vaultID string) (session.Vault, error) {
	return getVault(ctx, p, vaultID)
}

// PutVault implements [session.Backend]. Each case is one statement whose condition is checked
// by the row it writes, so concurrent writers with the same precondition cannot both win.
func (p *Postgres) PutVault(ctx context.Context, put session.VaultPut) (string, error) {
	data, at := notNil(put.Data), nullMillis(put.At)
	var (
		version int64
		err     error
	)
	switch {
	case put.IfNoneMatch && put.IfMatch != "":
		// No vault and a vault of a given version: never both.
		return "", fmt.Errorf("store: put vault: %w: If-Match with If-None-Match", session.ErrPrecondition)
	case put.IfNoneMatch:
		err = p.pool.QueryRow(ctx, `
			INSERT INTO vaults (vault_id, data, version, updated_at) VALUES ($1, $2, 1, $3)
			ON CONFLICT (vault_id) DO NOTHING RETURNING version`, put.VaultID, data, at).Scan(&version)
	case put.IfMatch != "":
		want, perr := strconv.ParseInt(put.IfMatch, 10, 64)
		if perr != nil || etag(want) != put.IfMatch {
			// Not an ETag we could have issued, so not the current one.
			return "", fmt.Errorf("store: put vault: %w: vault version differs", session.ErrPrecondition)
		}
		err = p.pool.QueryRow(ctx, `
			UPDATE vaults SET data = $2, version = version + 1, updated_at = $3
			WHERE vault_id = $1 AND version = $4 RETURNING version`, put.VaultID, data, at, want).Scan(&version)
	default:
		err = p.pool.QueryRow(ctx, `
			INSERT INTO vaults (vault_id, data, version, updated_at) VALUES ($1, $2, 1, $3)
			ON CONFLICT (vault_id) DO UPDATE SET data = excluded.data, version = vaults.version + 1,
				updated_at = excluded.updated_at
			RETURNING version`, put.VaultID, data, at).Scan(&version)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("store: put vault: %w: vault exists or its version differs", session.ErrPrecondition)
	}
	if err != nil {
		return "", p.wrap("put vault", err)
	}
	return etag(version), nil
}
