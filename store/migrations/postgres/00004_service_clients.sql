-- Service clients: the application's own servers, which introspect tokens. Only a hash of each
-- secret is kept (the secrets are 256-bit random values, shown once at creation).

-- +goose Up
CREATE TABLE service_clients (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    secret_hash BYTEA NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

-- +goose Down
DROP TABLE service_clients;
