package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sessiond/sessiond/session"
)

// AddEvents implements [session.Backend].
func (p *Postgres) AddEvents(ctx context.Context, events []session.Event) error {
	if len(events) == 0 {
		return nil
	}
	// One batch: a revocation of many sessions records an event each, and a round trip per
	// row held a pooled connection for as many round trips.
	return p.tx(ctx, "add events", func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		for _, e := range events {
			b.Queue(`INSERT INTO events (`+eventColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
				e.ID, e.UserID, nullString(e.SessionID), e.Kind, nullString(e.Reason), e.Detail, millis(e.At))
		}
		return tx.SendBatch(ctx, b).Close()
	})
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
