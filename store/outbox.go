package store

import (
	"context"
	"database/sql"
	"time"

	"github.com/sessiond/sessiond/session"
)

// The outbox ([session.OutboxStore]): the same SQL on both databases.

const outboxColumns = `seq, kind, user_id, session_id, reason, at`

func scanChange(r scanner) (session.Change, error) {
	var (
		c           session.Change
		sid, reason sql.NullString
		at          int64
	)
	err := r.Scan(&c.Seq, &c.Kind, &c.UserID, &sid, &reason, &at)
	c.SessionID, c.Reason, c.At = sid.String, reason.String, time.UnixMilli(at).UTC()
	return c, err
}

func appendChanges(ctx context.Context, d db, changes []session.Change) error {
	for _, c := range changes {
		if _, err := d.exec(ctx, `INSERT INTO outbox (kind, user_id, session_id, reason, at) VALUES ($1, $2, $3, $4, $5)`,
			c.Kind, c.UserID, nullString(c.SessionID), nullString(c.Reason), millis(c.At)); err != nil {
			return d.wrap("append changes", err)
		}
	}
	return nil
}

func changesAfter(ctx context.Context, d db, seq int64, limit int) ([]session.Change, error) {
	return collect(ctx, d, "changes after", scanChange,
		`SELECT `+outboxColumns+` FROM outbox WHERE seq > $1 ORDER BY seq LIMIT $2`, seq, limit)
}

func lastChangeSeq(ctx context.Context, d db) (int64, error) {
	var seq int64
	err := d.row(ctx, `SELECT COALESCE(MAX(seq), 0) FROM outbox`).Scan(&seq)
	return seq, d.wrap("last change", err)
}

func deleteChangesBefore(ctx context.Context, d db, before time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	n, err := d.exec(ctx, `DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE at < $1 ORDER BY seq LIMIT $2)`, millis(before), limit)
	return int(n), d.wrap("delete changes", err)
}

// AppendChanges implements [session.OutboxStore].
func (s *SQLite) AppendChanges(ctx context.Context, c []session.Change) error {
	return appendChanges(ctx, s, c)
}

// ChangesAfter implements [session.OutboxStore].
func (s *SQLite) ChangesAfter(ctx context.Context, seq int64, limit int) ([]session.Change, error) {
	return changesAfter(ctx, s, seq, limit)
}

// LastChangeSeq implements [session.OutboxStore].
func (s *SQLite) LastChangeSeq(ctx context.Context) (int64, error) { return lastChangeSeq(ctx, s) }

// DeleteChangesBefore implements [session.OutboxStore].
func (s *SQLite) DeleteChangesBefore(ctx context.Context, before time.Time, limit int) (int, error) {
	return deleteChangesBefore(ctx, s, before, limit)
}

// AppendChanges implements [session.OutboxStore]: one statement (one round trip, one commit,
// atomic) for any number of changes, numbered in their order.
func (p *Postgres) AppendChanges(ctx context.Context, c []session.Change) error {
	if len(c) == 0 {
		return nil
	}
	n := len(c)
	kinds, users, sessions, reasons, ats := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]int64, n)
	for i, ch := range c {
		kinds[i], users[i], sessions[i], reasons[i], ats[i] = ch.Kind, ch.UserID, ch.SessionID, ch.Reason, millis(ch.At)
	}
	_, err := p.pool.Exec(ctx, `INSERT INTO outbox (kind, user_id, session_id, reason, at)
		SELECT kind, user_id, NULLIF(session_id, ''), NULLIF(reason, ''), at
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) WITH ORDINALITY
			AS c(kind, user_id, session_id, reason, at, n)
		ORDER BY n`,
		kinds, users, sessions, reasons, ats)
	return p.wrap("append changes", err)
}

// ChangesAfter implements [session.OutboxStore].
func (p *Postgres) ChangesAfter(ctx context.Context, seq int64, limit int) ([]session.Change, error) {
	return changesAfter(ctx, p, seq, limit)
}

// LastChangeSeq implements [session.OutboxStore].
func (p *Postgres) LastChangeSeq(ctx context.Context) (int64, error) { return lastChangeSeq(ctx, p) }

// DeleteChangesBefore implements [session.OutboxStore].
func (p *Postgres) DeleteChangesBefore(ctx context.Context, before time.Time, limit int) (int, error) {
	return deleteChangesBefore(ctx, p, before, limit)
}
