package store

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestSQLiteStatementCache: single statements are prepared once per connection and reused;
// a script (several statements) still runs every statement, uncached.
func TestSQLiteStatementCache(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	conn, err := s.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `CREATE TEMP TABLE t (v INTEGER); INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)`); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		var n int
		if err := conn.QueryRowContext(ctx, `SELECT count(*) FROM t WHERE v > ?1`, 0).Scan(&n); err != nil || n != 2 {
			t.Fatalf("count after the script: %d %v (a script must run every statement)", n, err)
		}
	}
	_ = conn.Raw(func(dc any) error {
		cc, ok := dc.(*cachingConn)
		if !ok {
			t.Fatalf("the connection is a %T, not the caching one", dc)
		}
		if _, ok := cc.stmts[`SELECT count(*) FROM t WHERE v > ?1`]; !ok {
			t.Errorf("the query is not cached (%d statements are)", len(cc.stmts))
		}
		for q := range cc.stmts {
			if strings.Contains(q, ";") {
				t.Errorf("a script is cached: %q", q)
			}
		}
		return nil
	})
}
