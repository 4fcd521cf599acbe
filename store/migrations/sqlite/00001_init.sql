-- Times are unix milliseconds. STRICT makes SQLite reject a value of the wrong type instead of
-- storing it as whatever it looks like.

-- +goose Up
CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    username   TEXT NOT NULL UNIQUE,
    record     BLOB NOT NULL,
    vault_id   TEXT NOT NULL UNIQUE,
    created_at INTEGER
) STRICT;

-- No foreign key to users: a deleted user's sessions stay, revoked, until the sweeper removes
-- them. end_at = min(idle_expires_at, expires_at, revoked_at), kept current by every write, is
-- what the sweeper scans.
CREATE TABLE sessions (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    vault_id        TEXT,
    token_hash      BLOB NOT NULL UNIQUE,
    device          BLOB,
    created_at      INTEGER NOT NULL,
    last_seen_at    INTEGER,
    idle_expires_at INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    revoked_at      INTEGER,
    revoke_reason   TEXT,
    end_at          INTEGER NOT NULL
) STRICT;
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_end_at_idx ON sessions (end_at);

-- Retired tokens live exactly as long as their session: they are what detects the reuse of a
-- rotated token.
CREATE TABLE retired_tokens (
    token_hash  BLOB PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    grace_until INTEGER NOT NULL
) STRICT;
CREATE INDEX retired_tokens_session_id_idx ON retired_tokens (session_id);

CREATE TABLE vaults (
    vault_id   TEXT PRIMARY KEY,
    data       BLOB NOT NULL,
    version    INTEGER NOT NULL,
    updated_at INTEGER
) STRICT;

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- +goose Down
DROP TABLE meta;
DROP TABLE vaults;
DROP TABLE retired_tokens;
DROP TABLE sessions;
DROP TABLE users;
