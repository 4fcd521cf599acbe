-- The outbox: sessions created, refreshed and ended, users deleted, in the order they were
-- recorded (seq), for the event stream of the application's servers (/api/v1/events).

-- +goose Up
CREATE TABLE outbox (
    seq        BIGSERIAL PRIMARY KEY,
    kind       TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    session_id TEXT,
    reason     TEXT,
    at         BIGINT NOT NULL
);
CREATE INDEX outbox_at_idx ON outbox (at);

-- +goose Down
DROP TABLE outbox;
