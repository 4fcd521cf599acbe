-- Times are unix milliseconds. Objects are created unqualified, in the first schema of the
-- connection's search_path.

-- +goose Up
CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    username   TEXT NOT NULL UNIQUE,
    record     BYTEA NOT NULL,
    vault_id   TEXT NOT NULL UNIQUE,
    created_at BIGINT
);

-- No foreign key to users: a deleted user's sessions stay, revoked, until the sweeper removes
-- them. end_at = LEAST(idle_expires_at, expires_at, revoked_at), kept current by every write,
-- is what the sweeper scans.
CREATE TABLE sessions (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    vault_id        TEXT,
    token_hash      BYTEA NOT NULL UNIQUE,
    device          BYTEA,
    created_at      BIGINT NOT NULL,
    last_seen_at    BIGINT,
    idle_expires_at BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    revoked_at      BIGINT,
    revoke_reason   TEXT,
    end_at          BIGINT NOT NULL
);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_end_at_idx ON sessions (end_at);

-- Retired tokens live exactly as long as their session: they are what detects the reuse of a
-- rotated token.
CREATE TABLE retired_tokens (
    token_hash  BYTEA PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    grace_until BIGINT NOT NULL
);
CREATE INDEX retired_tokens_session_id_idx ON retired_tokens (session_id);

CREATE TABLE vaults (
    vault_id   TEXT PRIMARY KEY,
    data       BYTEA NOT NULL,
    version    BIGINT NOT NULL,
    updated_at BIGINT
);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- +goose Down
DROP TABLE meta;
DROP TABLE vaults;
DROP TABLE retired_tokens;
DROP TABLE sessions;
DROP TABLE users;
