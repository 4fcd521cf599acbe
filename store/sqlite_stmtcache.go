package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"strings"
)

// The SQLite driver parses every query it is given anew: on the login path that was about a
// seventh of the node's CPU (sqlite3_prepare_v2 under CreateSession, UserByName, the events
// and the outbox). stmtCacheConnector gives each connection a cache of prepared statements,
// keyed by the query text, for single statements (a script, with ';', goes to the driver as
// it is). database/sql uses a connection from one goroutine at a time, so the cache needs no
// lock; its statements are finalised with their connection.

const maxCachedStmts = 256 // the store's queries are a fixed set; this only bounds a surprise

type stmtCacheConnector struct {
	dsn string
	drv driver.Driver
}

func (c stmtCacheConnector) Connect(context.Context) (driver.Conn, error) {
	conn, err := c.drv.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	return &cachingConn{Conn: conn, stmts: map[string]*cachedStmt{}}, nil
}

func (c stmtCacheConnector) Driver() driver.Driver { return c.drv }

// openCachedSQLite opens dsn with the registered "sqlite" driver behind the statement cache.
func openCachedSQLite(dsn string) (*sql.DB, error) {
	probe, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	drv := probe.Driver()
	_ = probe.Close()
	return sql.OpenDB(stmtCacheConnector{dsn: dsn, drv: drv}), nil
}

type cachingConn struct {
	driver.Conn
	stmts map[string]*cachedStmt
}

// cachedStmt is a prepared statement the cache owns: database/sql's Close leaves it open.
type cachedStmt struct {
	driver.Stmt
	owned bool // not in the cache: closed when database/sql closes it
}

func (s *cachedStmt) Close() error {
	if s.owned {
		return s.Stmt.Close()
	}
	return nil
}

func (s *cachedStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	return s.Stmt.(driver.StmtExecContext).ExecContext(ctx, args)
}

func (s *cachedStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	return s.Stmt.(driver.StmtQueryContext).QueryContext(ctx, args)
}

func (c *cachingConn) prepare(ctx context.Context, query string) (*cachedStmt, error) {
	if s, ok := c.stmts[query]; ok {
		return s, nil
	}
	st, err := c.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	s := &cachedStmt{Stmt: st}
	if len(c.stmts) < maxCachedStmts && !strings.Contains(query, ";") {
		c.stmts[query] = s
	} else {
		s.owned = true
	}
	return s, nil
}

func (c *cachingConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.prepare(ctx, query)
}

func (c *cachingConn) Prepare(query string) (driver.Stmt, error) {
	return c.prepare(context.Background(), query)
}

func (c *cachingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if strings.Contains(query, ";") { // a script: the driver runs its statements in turn
		return c.Conn.(driver.ExecerContext).ExecContext(ctx, query, args)
	}
	s, err := c.prepare(ctx, query)
	if err != nil {
		return nil, err
	}
	r, err := s.ExecContext(ctx, args)
	if s.owned {
		_ = s.Stmt.Close()
	}
	return r, err
}

func (c *cachingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	if strings.Contains(query, ";") {
		return c.Conn.(driver.QueryerContext).QueryContext(ctx, query, args)
	}
	s, err := c.prepare(ctx, query)
	if err != nil {
		return nil, err
	}
	if s.owned { // closing the statement would end its rows: let the driver own this one
		_ = s.Stmt.Close()
		return c.Conn.(driver.QueryerContext).QueryContext(ctx, query, args)
	}
	return s.QueryContext(ctx, args)
}

func (c *cachingConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
}

func (c *cachingConn) Ping(ctx context.Context) error {
	if p, ok := c.Conn.(driver.Pinger); ok {
		return p.Ping(ctx)
	}
	return nil
}

func (c *cachingConn) ResetSession(ctx context.Context) error {
	if r, ok := c.Conn.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (c *cachingConn) IsValid() bool {
	if v, ok := c.Conn.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}

func (c *cachingConn) Close() error {
	var errs []error
	for q, s := range c.stmts {
		errs = append(errs, s.Stmt.Close())
		delete(c.stmts, q)
	}
	return errors.Join(append(errs, c.Conn.Close())...)
}
