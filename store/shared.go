package store

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"sync"
	"time"

	"github.com/sessiond/sessiond/session"
)

// The queries whose SQL is the same on both databases are written once, here, against db: one
// row, one statement, and the backend's error mapping. They use PostgreSQL's $1 placeholders;
// the SQLite side rewrites them to its ?1 form. The queries whose SQL differs (conditional
// writes, the revoking UPDATEs, batch writes) stay per backend.
type db interface {
	row(ctx context.Context, query string, args ...any) scanner
	rows(ctx context.Context, query string, args ...any) (rows, error)
	exec(ctx context.Context, query string, args ...any) (int64, error)
	notFound(err error) error
	wrap(op string, err error) error
}

func (s *SQLite) row(ctx context.Context, q string, args ...any) scanner {
	return s.db.QueryRowContext(ctx, sqliteSQL(q), args...)
}

// rows is a result set of either driver.
type rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

type sqlRows struct{ *sql.Rows }

func (r sqlRows) Close() { _ = r.Rows.Close() }

func (s *SQLite) rows(ctx context.Context, q string, args ...any) (rows, error) {
	r, err := s.db.QueryContext(ctx, sqliteSQL(q), args...)
	if err != nil {
		return nil, err
	}
	return sqlRows{r}, nil
}

func (s *SQLite) exec(ctx context.Context, q string, args ...any) (int64, error) {
	res, err := s.db.ExecContext(ctx, sqliteSQL(q), args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (s *SQLite) notFound(err error) error { return sqliteNotFound(err) }

func (p *Postgres) row(ctx context.Context, q string, args ...any) scanner {
	return p.pool.QueryRow(ctx, q, args...)
}

func (p *Postgres) rows(ctx context.Context, q string, args ...any) (rows, error) {
	return p.pool.Query(ctx, q, args...)
}

func (p *Postgres) exec(ctx context.Context, q string, args ...any) (int64, error) {
	tag, err := p.pool.Exec(ctx, q, args...)
	return tag.RowsAffected(), err
}

func (p *Postgres) notFound(err error) error { return pgNotFound(err) }

var (
	placeholder = regexp.MustCompile(`\$(\d+)`)
	sqliteForm  sync.Map // PostgreSQL query -> the same for SQLite
)

// sqliteSQL rewrites PostgreSQL's $N placeholders to SQLite's ?N (same numbering, so a
// parameter used twice is bound once).
func sqliteSQL(q string) string {
	if v, ok := sqliteForm.Load(q); ok {
		return v.(string)
	}
	r := placeholder.ReplaceAllString(q, "?$1")
	sqliteForm.Store(q, r)
	return r
}

func userWhere(ctx context.Context, d db, op, column, value string) (session.User, error) {
	u, err := scanUser(d.row(ctx, `SELECT `+userCols+` FROM users WHERE `+column+` = $1`, value))
	return u, d.wrap(op, d.notFound(err))
}

func sessionByID(ctx context.Context, d db, id string) (session.Session, error) {
	s, err := scanSession(d.row(ctx, `SELECT `+sessionCols+` FROM sessions s WHERE s.id = $1`, id))
	return s, d.wrap("session by id", d.notFound(err))
}

func getVault(ctx context.Context, d db, vaultID string) (session.Vault, error) {
	var (
		v       session.Vault
		version int64
		updated sql.NullInt64
	)
	err := d.row(ctx, `SELECT data, version, updated_at FROM vaults WHERE vault_id = $1`, vaultID).
		Scan(&v.Data, &version, &updated)
	if err != nil {
		return session.Vault{}, d.wrap("get vault", d.notFound(err))
	}
	v.ETag = etag(version)
	v.UpdatedAt = fromMillis(updated)
	return v, nil
}

func checkKeyFingerprint(ctx context.Context, d db, fp string) error {
	if fp == "" {
		return fmt.Errorf("store: check key fingerprint: %w: empty fingerprint", session.ErrBadInput)
	}
	if _, err := d.exec(ctx, `INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING`, keyFingerprint, fp); err != nil {
		return d.wrap("check key fingerprint", err)
	}
	var recorded string
	if err := d.row(ctx, `SELECT value FROM meta WHERE key = $1`, keyFingerprint).Scan(&recorded); err != nil {
		return d.wrap("check key fingerprint", err)
	}
	if recorded != fp {
		return fmt.Errorf("store: check key fingerprint: %w", session.ErrKeyMismatch)
	}
	return nil
}

func setKeyFingerprint(ctx context.Context, d db, fp string) error {
	if fp == "" {
		return fmt.Errorf("store: set key fingerprint: %w: empty fingerprint", session.ErrBadInput)
	}
	_, err := d.exec(ctx, `INSERT INTO meta (key, value) VALUES ($1, $2)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, keyFingerprint, fp)
	return d.wrap("set key fingerprint", err)
}

// collect reads every row of a query with scan, into a non-nil slice.
func collect[T any](ctx context.Context, d db, op string, scan func(scanner) (T, error), q string, args ...any) ([]T, error) {
	rs, err := d.rows(ctx, q, args...)
	if err != nil {
		return nil, d.wrap(op, err)
	}
	defer rs.Close()
	out := []T{}
	for rs.Next() {
		v, err := scan(rs)
		if err != nil {
			return nil, d.wrap(op, err)
		}
		out = append(out, v)
	}
	return out, d.wrap(op, rs.Err())
}

func listSessions(ctx context.Context, d db, userID string, now time.Time) ([]session.Session, error) {
	return collect(ctx, d, "list sessions", func(r scanner) (session.Session, error) { return scanSession(r) }, `
		SELECT `+sessionCols+` FROM sessions s
		WHERE s.user_id = $1 AND s.revoked_at IS NULL AND s.idle_expires_at > $2 AND s.expires_at > $2
		ORDER BY s.created_at, s.id`, userID, millis(now))
}

func listEvents(ctx context.Context, d db, userID string, limit int) ([]session.Event, error) {
	return collect(ctx, d, "list events", scanEvent,
		`SELECT `+eventColumns+` FROM events WHERE user_id = $1 ORDER BY at DESC, id LIMIT $2`, userID, limit)
}

// sealedValues reads a batch of a sealed column for a key rotation. The comparison and the
// order use the same collation, so the cursor neither skips nor repeats a row whatever the
// database's collation is.
func sealedValues(ctx context.Context, d db, name, afterID string, limit int) ([]session.SealedValue, error) {
	table, column, err := sealedColumn(name)
	if err == nil && limit < 1 {
		err = fmt.Errorf("%w: limit %d", session.ErrBadInput, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("store: sealed values: %w", err)
	}
	return collect(ctx, d, "sealed values", func(r scanner) (session.SealedValue, error) {
		var v session.SealedValue
		err := r.Scan(&v.ID, &v.Value)
		return v, err
	}, `SELECT id, `+column+` FROM `+table+` WHERE id > $1 AND octet_length(`+column+`) > 0 ORDER BY id LIMIT $2`, afterID, limit)
}
