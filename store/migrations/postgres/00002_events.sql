-- Security events: the user's "recent security activity". Detail is sealed by the server.

-- +goose Up
CREATE TABLE events (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    session_id TEXT,
    kind       TEXT NOT NULL,
    reason     TEXT,
    detail     BYTEA,
    at         BIGINT NOT NULL
);
CREATE INDEX events_user_at_idx ON events (user_id, at);
CREATE INDEX events_at_idx ON events (at);

-- +goose Down
DROP TABLE events;
