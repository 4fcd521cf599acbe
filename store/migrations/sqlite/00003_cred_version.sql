-- The credential version: 1 at registration, one more with every password change. A session
-- is only created, and a password only changed, for the version the proof of the password was
-- computed from.

-- +goose Up
ALTER TABLE users ADD COLUMN cred_version INTEGER NOT NULL DEFAULT 1;

-- +goose Down
ALTER TABLE users DROP COLUMN cred_version;
