package store

import (
	"path/filepath"
	"testing"

	"github.com/sessiond/sessiond/session"
)

func openTestSQLite(t *testing.T, path string) *SQLite {
	t.Helper()
	st, err := OpenSQLite(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestSQLite(t *testing.T) {
	runConformance(t, func(t *testing.T) session.Backend {
		return openTestSQLite(t, filepath.Join(t.TempDir(), "sessiond.db"))
	})
}

// TestSQLiteConnections checks the settings every pooled connection must carry, not only the
// first one.
func TestSQLiteConnections(t *testing.T) {
	st := openTestSQLite(t, filepath.Join(t.TempDir(), "sessiond.db"))
	ctx := t.Context()
	for i := range 3 {
		conn, err := st.db.Conn(ctx) // held open, so each iteration gets a new connection
		must(t, err)
		defer conn.Close()
		var fk, busy int
		var journal string
		must(t, conn.QueryRowContext(ctx, `PRAGMA foreign_keys`).Scan(&fk))
		must(t, conn.QueryRowContext(ctx, `PRAGMA busy_timeout`).Scan(&busy))
		must(t, conn.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&journal))
		if fk != 1 || busy != int(sqliteBusyTimeout.Milliseconds()) || journal != "wal" {
			t.Fatalf("connection %d: foreign_keys=%d busy_timeout=%d journal_mode=%s", i, fk, busy, journal)
		}
	}
}

func TestSQLiteReopen(t *testing.T) {
	ctx := t.Context()
	// Characters a DSN would otherwise parse.
	path := filepath.Join(t.TempDir(), "odd ?name#%.db")
	st := openTestSQLite(t, path)
	must(t, st.CreateUser(ctx, newUser("u1", "alice")))
	must(t, st.Close())
	must(t, st.Close()) // idempotent
	wantErr(t, st.Ping(ctx), session.ErrUnavailable)

	// Migrations already applied are not applied again, and the data is still there.
	st = openTestSQLite(t, path)
	if _, err := st.UserByName(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
}

func TestOpenSQLiteBadPath(t *testing.T) {
	if _, err := OpenSQLite(t.Context(), ""); err == nil {
		t.Fatal("empty path opened")
	}
	if _, err := OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "missing", "dir", "x.db")); err == nil {
		t.Fatal("path in a missing directory opened")
	}
}
