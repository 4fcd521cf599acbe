package store

import (
	"context"
	"database/sql"
	"time"

	"github.com/sessiond/sessiond/session"
)

// AddEvents implements [session.Backend].
func (s *SQLite) AddEvents(ctx context.Context, events []session.Event) error {
	if len(events) == 0 {
		return nil
	}
	return s.tx(ctx, "add events", func(tx *sql.Tx) error {
		for _, e := range events {
			if _, err := tx.ExecContext(ctx, `INSERT INTO events (`+eventColumns+`) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)`,
				e.ID, e.UserID, nullString(e.SessionID), e.Kind, nullString(e.Reason), e.Detail, millis(e.At)); err != nil {
				return err
			}
		}
		return nil
	})
}

// ListEvents implements [session.Backend].
func (s *SQLite) ListEvents(ctx context.Context, userID string, limit int) ([]session.Event, error) {
	return listEvents(ctx, s, userID, limit)
}

// DeleteEventsBefore implements [session.Backend].
func (s *SQLite) DeleteEventsBefore(ctx context.Context, before time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	res, err := s.db.ExecContext(ctx, `DELETE FROM events WHERE id IN (SELECT id FROM events WHERE at < ?1 LIMIT ?2)`, millis(before), limit)
	if err != nil {
		return 0, s.wrap("delete events", err)
	}
	n, err := res.RowsAffected()
	return int(n), s.wrap("delete events", err)
}
