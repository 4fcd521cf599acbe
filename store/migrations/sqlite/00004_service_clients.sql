-- Service clients: the application's own servers, which introspect tokens. Only a hash of each
-- secret is kept (the secrets are 256-bit random values, shown once at creation).

-- +goose Up
CREATE TABLE service_clients (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    secret_hash BLOB NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
) STRICT;

-- +goose Down
DROP TABLE service_clients;
