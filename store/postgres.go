package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/jackc/puddle/v2"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/sessiond/sessiond/session"
)

// Postgres is the [session.Store] for deployments of several nodes sharing one PostgreSQL
// database. Its tables live in the first schema of the pool connections' search_path.
type Postgres struct {
	pool *pgxpool.Pool
}

var _ session.Store = (*Postgres)(nil)

// pgTxAttempts bounds how often a transaction aborted by a deadlock or serialization failure is
// run again. Such aborts are expected now and then between nodes touching and revoking the same
// rows; nothing of the aborted attempt was written.
const pgTxAttempts = 3

// NewPostgres applies the pending migrations through pool and returns a store using it. The pool
// stays the caller's: it must outlive the store, and Close leaves it open.
//
// Nodes may start together: the migration runs under a session advisory lock keyed by the target
// schema, so one node migrates while the others wait, then find nothing to do.
func NewPostgres(ctx context.Context, pool *pgxpool.Pool) (*Postgres, error) {
	if pool == nil {
		return nil, fmt.Errorf("store: new postgres: %w: nil pool", session.ErrBadInput)
	}
	p := &Postgres{pool: pool}
	var schema *string
	if err := pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return nil, p.wrap("new postgres", err)
	}
	if schema == nil {
		return nil, errors.New("store: new postgres: no schema of the search_path exists")
	}
	locker, err := lock.NewPostgresSessionLocker(
		lock.WithLockID(lockKey("sessiond/migrate", *schema)),
		// Poll every second (the minimum) for up to five minutes, goose's default budget.
		lock.WithLockTimeout(1, 300),
	)
	if err != nil {
		return nil, fmt.Errorf("store: new postgres: %w", err)
	}
	// Closing this *sql.DB releases its connections back to the pool and leaves the pool open.
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	if err := migrate(ctx, goose.DialectPostgres, db, "migrations/postgres", locker); err != nil {
		return nil, p.wrap("migrate postgres", err)
	}
	return p, nil
}

// Close does nothing: the pool belongs to the caller. It exists so that both stores close alike.
func (p *Postgres) Close() error { return nil }

// wrap prefixes err with the operation and classifies it: our sentinels stay checkable, and
// failures to reach or use the server also match ErrUnavailable.
func (p *Postgres) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if pgUnavailable(err) {
		return fmt.Errorf("store: %s: %w: %w", op, session.ErrUnavailable, err)
	}
	return fmt.Errorf("store: %s: %w", op, err)
}

// pgUnavailable reports errors that say nothing about the request and everything about the
// database being unreachable, shutting down or out of resources.
func pgUnavailable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case strings.HasPrefix(pe.Code, "08"), // connection exception
			strings.HasPrefix(pe.Code, "53"), // insufficient resources
			pe.Code == "57014",               // query_canceled: a statement timeout
			pe.Code == "57P01",               // admin_shutdown
			pe.Code == "57P02",               // crash_shutdown
			pe.Code == "57P03":               // cannot_connect_now
			return true
		}
		return false
	}
	var (
		ce *pgconn.ConnectError
		ne net.Error
	)
	return errors.As(err, &ce) || errors.As(err, &ne) || pgconn.Timeout(err) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, puddle.ErrClosedPool) ||
		errors.Is(err, pgconn.ErrConnClosed) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// pgConflict marks a unique violation as ErrConflict.
func pgConflict(err error) error {
	if pgCode(err) == "23505" {
		return fmt.Errorf("%w: %w", session.ErrConflict, err)
	}
	return err
}

func pgNotFound(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return session.ErrNotFound
	}
	return err
}

// tx runs fn in a transaction, again when a deadlock or serialization failure aborted it. fn must
// therefore set its results afresh on each call.
func (p *Postgres) tx(ctx context.Context, op string, fn func(tx pgx.Tx) error) error {
	return p.retrying(ctx, op, func() error { return pgx.BeginFunc(ctx, p.pool, fn) })
}

// retrying runs fn again after a deadlock or a serialisation failure (up to pgTxAttempts).
func (p *Postgres) retrying(ctx context.Context, op string, fn func() error) error {
	for attempt := 1; ; attempt++ {
		err := fn()
		if code := pgCode(err); (code == "40P01" || code == "40001") && attempt < pgTxAttempts && ctx.Err() == nil {
			continue
		}
		return p.wrap(op, err)
	}
}

// lockUser serialises, until the end of tx, the operations that read a user's set of live
// sessions and then change it. An advisory lock rather than a row lock: sessions need no users
// row, and the lock must also cover a user being deleted.
func lockUser(ctx context.Context, tx pgx.Tx, userID string) error {
	_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockKey("sessiond/user", userID))
	return err
}

// Ping implements [session.Backend].
func (p *Postgres) Ping(ctx context.Context) error {
	_, err := p.pool.Exec(ctx, `SELECT 1`)
	return p.wrap("ping", err)
}
