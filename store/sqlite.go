package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pressly/goose/v3"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/sessiond/sessiond/session"
)

// SQLite is the embedded [session.Store]: one database file, for a single process. Several
// processes opening the same file stay correct (SQLite locks the file) but contend for its one
// write lock.
type SQLite struct {
	db        *sql.DB
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

var _ session.Store = (*SQLite)(nil)

// sqliteBusyTimeout bounds how long a statement waits for another connection's write lock before
// failing with ErrUnavailable.
const sqliteBusyTimeout = 5 * time.Second

// OpenSQLite opens the database file at path, creating it if needed, and applies the pending
// migrations.
func OpenSQLite(ctx context.Context, path string) (*SQLite, error) {
	if path == "" {
		return nil, fmt.Errorf("store: open sqlite: %w: empty path", session.ErrBadInput)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("store: open sqlite: %w", err)
	}
	// Every option is in the DSN because database/sql opens connections on its own: a PRAGMA
	// run once would configure only whichever connection happened to run it.
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", sqliteBusyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	// Off by default in SQLite, and retired tokens rely on ON DELETE CASCADE.
	q.Add("_pragma", "foreign_keys(1)")
	// With WAL, NORMAL loses at most the last transactions on power loss, never consistency.
	q.Add("_pragma", "synchronous(NORMAL)")
	// A read-then-write transaction begun DEFERRED cannot wait for the write lock when another
	// writer got there first (it fails with SQLITE_BUSY at once); taking the lock at BEGIN lets
	// the busy timeout apply and serialises check-then-write sequences such as the session limit.
	q.Set("_txlock", "immediate")
	// A file: URI so that any character in the path (?, #, %) is escaped rather than parsed.
	dsn := (&url.URL{Scheme: "file", Path: abs}).String() + "?" + q.Encode()

	db, err := openCachedSQLite(dsn)
	if err != nil {
		return nil, fmt.Errorf("store: open sqlite: %w", err)
	}
	// Keep connections rather than open and close them under load (database/sql keeps two idle
	// by default): opening one runs the DSN's pragmas and reads the schema, and its prepared
	// statements (sqlite_stmtcache.go) go with it.
	db.SetMaxIdleConns(16)
	s := &SQLite{db: db}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, s.wrap("open sqlite", err)
	}
	if err := migrate(ctx, goose.DialectSQLite3, db, "migrations/sqlite", nil); err != nil {
		db.Close()
		return nil, s.wrap("migrate sqlite", err)
	}
	return s, nil
}

// Close closes the database. Calling it again does nothing and returns the first result.
func (s *SQLite) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.closeErr = s.db.Close()
	})
	return s.closeErr
}

// wrap prefixes err with the operation and classifies it: our sentinels stay checkable, and
// conditions that mean "the store cannot serve right now" also match ErrUnavailable.
func (s *SQLite) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if s.closed.Load() || sqliteUnavailable(err) {
		return fmt.Errorf("store: %s: %w: %w", op, session.ErrUnavailable, err)
	}
	return fmt.Errorf("store: %s: %w", op, err)
}

func sqliteUnavailable(err error) bool {
	if errors.Is(err, sql.ErrConnDone) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff { // primary result code
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR,
			sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY:
			return true
		}
	}
	return false
}

// sqliteUniqueViolation reports a UNIQUE or PRIMARY KEY constraint failure.
func sqliteUniqueViolation(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	c := se.Code()
	return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

// tx runs fn in a write transaction (BEGIN IMMEDIATE, see OpenSQLite) and commits it when fn
// returns nil.
func (s *SQLite) tx(ctx context.Context, op string, fn func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return s.wrap(op, err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	if err := fn(tx); err != nil {
		return s.wrap(op, err)
	}
	return s.wrap(op, tx.Commit())
}

func sqliteNotFound(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return session.ErrNotFound
	}
	return err
}

// Ping implements [session.Backend].
func (s *SQLite) Ping(ctx context.Context) error {
	_, err := s.db.ExecContext(ctx, `SELECT 1`)
	return s.wrap("ping", err)
}
