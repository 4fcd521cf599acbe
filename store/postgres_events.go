package store

import (
	"context"
	"time"

	"github.com/sessiond/sessiond/session"
)

// AddEvents implements [session.Backend].
func (p *Postgres) AddEvents(ctx context.Context, events []session.Event) error {
	if len(events) == 0 {
		return nil
	}
	// One statement, whatever the count: a revocation of many sessions records an event each,
	// and it is one round trip and one commit (atomic by itself, no BEGIN/COMMIT).
	n := len(events)
	ids, users, sessions, kinds, reasons := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	details, ats := make([][]byte, n), make([]int64, n)
	for i, e := range events {
		ids[i], users[i], sessions[i], kinds[i], reasons[i] = e.ID, e.UserID, e.SessionID, e.Kind, e.Reason
		details[i], ats[i] = e.Detail, millis(e.At)
	}
	_, err := p.pool.Exec(ctx, `INSERT INTO events (`+eventColumns+`)
		SELECT id, user_id, NULLIF(session_id, ''), kind, NULLIF(reason, ''), detail, at
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::bigint[])
			AS e(id, user_id, session_id, kind, reason, detail, at)`,
		ids, users, sessions, kinds, reasons, details, ats)
	return p.wrap("add events", err)
}

// ListEvents implements [session.Backend].
func (p *Postgres) ListEvents(ctx context.Context, userID string, limit int) ([]session.Event, error) {
	return listEvents(ctx, p, userID, limit)
}

// DeleteEventsBefore implements [session.Backend].
func (p *Postgres) DeleteEventsBefore(ctx context.Context, before time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	tag, err := p.pool.Exec(ctx, `DELETE FROM events WHERE id IN (SELECT id FROM events WHERE at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)`, millis(before), limit)
	if err != nil {
		return 0, p.wrap("delete events", err)
	}
	return int(tag.RowsAffected()), nil
}
