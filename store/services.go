package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/sessiond/sessiond/session"
)

// Service clients ([session.ServiceStore]): the same SQL on both databases.

const serviceColumns = `id, name, secret_hash, created_at, revoked_at`

func scanService(r scanner) (session.ServiceClient, error) {
	var (
		c       session.ServiceClient
		created int64
		revoked sql.NullInt64
	)
	if err := r.Scan(&c.ID, &c.Name, &c.SecretHash, &created, &revoked); err != nil {
		return c, err
	}
	c.CreatedAt, c.RevokedAt = time.UnixMilli(created).UTC(), fromMillis(revoked)
	return c, nil
}

func createServiceClient(ctx context.Context, d db, c session.ServiceClient) error {
	if c.ID == "" || c.Name == "" || len(c.SecretHash) == 0 {
		return fmt.Errorf("store: create service client: %w: id, name and secret hash are required", session.ErrBadInput)
	}
	_, err := d.exec(ctx, `INSERT INTO service_clients (`+serviceColumns+`) VALUES ($1, $2, $3, $4, NULL)`,
		c.ID, c.Name, c.SecretHash, millis(c.CreatedAt))
	return d.wrap("create service client", err)
}

func serviceClientBySecret(ctx context.Context, d db, hash []byte) (session.ServiceClient, error) {
	c, err := scanService(d.row(ctx, `SELECT `+serviceColumns+` FROM service_clients WHERE secret_hash = $1`, notNil(hash)))
	return c, d.wrap("service client", d.notFound(err))
}

func listServiceClients(ctx context.Context, d db) ([]session.ServiceClient, error) {
	return collect(ctx, d, "list service clients", scanService,
		`SELECT `+serviceColumns+` FROM service_clients ORDER BY created_at, id`)
}

func revokeServiceClient(ctx context.Context, d db, id string, at time.Time) error {
	n, err := d.exec(ctx, `UPDATE service_clients SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL`, millis(at), id)
	if err == nil && n == 0 {
		err = session.ErrNotFound
	}
	return d.wrap("revoke service client", err)
}

// CreateServiceClient implements [session.ServiceStore].
func (s *SQLite) CreateServiceClient(ctx context.Context, c session.ServiceClient) error {
	return createServiceClient(ctx, s, c)
}

// ServiceClientBySecret implements [session.ServiceStore].
func (s *SQLite) ServiceClientBySecret(ctx context.Context, hash []byte) (session.ServiceClient, error) {
	return serviceClientBySecret(ctx, s, hash)
}

// ListServiceClients implements [session.ServiceStore].
func (s *SQLite) ListServiceClients(ctx context.Context) ([]session.ServiceClient, error) {
	return listServiceClients(ctx, s)
}

// RevokeServiceClient implements [session.ServiceStore].
func (s *SQLite) RevokeServiceClient(ctx context.Context, id string, at time.Time) error {
	return revokeServiceClient(ctx, s, id, at)
}

// CreateServiceClient implements [session.ServiceStore].
func (p *Postgres) CreateServiceClient(ctx context.Context, c session.ServiceClient) error {
	return createServiceClient(ctx, p, c)
}

// ServiceClientBySecret implements [session.ServiceStore].
func (p *Postgres) ServiceClientBySecret(ctx context.Context, hash []byte) (session.ServiceClient, error) {
	return serviceClientBySecret(ctx, p, hash)
}

// ListServiceClients implements [session.ServiceStore].
func (p *Postgres) ListServiceClients(ctx context.Context) ([]session.ServiceClient, error) {
	return listServiceClients(ctx, p)
}

// RevokeServiceClient implements [session.ServiceStore].
func (p *Postgres) RevokeServiceClient(ctx context.Context, id string, at time.Time) error {
	return revokeServiceClient(ctx, p, id, at)
}
