package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sessiond/sessiond/session"
)

// postgresURL returns TEST_POSTGRES_URL, skipping the test when it is unset, except in CI where
// the PostgreSQL tests must run.
func postgresURL(t *testing.T) string {
	t.Helper()
	url := os.Getenv("TEST_POSTGRES_URL")
	if url == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("TEST_POSTGRES_URL must be set in CI")
		}
		t.Skip("TEST_POSTGRES_URL not set")
	}
	return url
}

// testSchema creates a fresh schema for t, dropped when t ends, and returns its name.
func testSchema(t *testing.T, url string) string {
	t.Helper()
	ctx := t.Context()
	schema := "t_" + hex.EncodeToString(randomBytes(t, 8))
	conn, err := pgx.Connect(ctx, url)
	must(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `CREATE SCHEMA `+schema)
	must(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `DROP SCHEMA `+schema+` CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return schema
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// schemaPool opens a pool whose connections work in schema, closed when t ends (before the
// schema is dropped, as cleanups run last-registered first).
func schemaPool(t *testing.T, url, schema string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	must(t, err)
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	// Many subtests run at once against one server; keep well inside max_connections.
	cfg.MaxConns = 6
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	must(t, err)
	t.Cleanup(pool.Close)
	return pool
}

func TestPostgres(t *testing.T) {
	url := postgresURL(t)
	runConformance(t, func(t *testing.T) session.Backend {
		st, err := NewPostgres(t.Context(), schemaPool(t, url, testSchema(t, url)))
		must(t, err)
		t.Cleanup(func() { st.Close() })
		return st
	})
}

// TestPostgresConcurrentMigrations starts several "nodes" on one empty schema at once.
func TestPostgresConcurrentMigrations(t *testing.T) {
	url := postgresURL(t)
	schema := testSchema(t, url)
	const nodes = 4
	pools := make([]*pgxpool.Pool, nodes)
	for i := range pools {
		pools[i] = schemaPool(t, url, schema)
	}
	ctx := t.Context()
	publicBefore := tablesIn(t, pools[0], "public")
	stores := make([]*Postgres, nodes)
	for i, err := range parallel(nodes, func(i int) (err error) {
		stores[i], err = NewPostgres(t.Context(), pools[i])
		return err
	}) {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}

	// Everything landed in the node's schema and nothing leaked into the default one.
	ours := tablesIn(t, pools[0], schema)
	for _, want := range []string{"users", "sessions", migrationTable} {
		if !ours[want] {
			t.Fatalf("table %s missing from %s (have %v)", want, schema, ours)
		}
	}
	for name := range tablesIn(t, pools[0], "public") {
		if !publicBefore[name] {
			t.Fatalf("table %s leaked into the public schema", name)
		}
	}

	var applied int
	must(t, pools[0].QueryRow(ctx, `SELECT count(*) FROM `+migrationTable+` WHERE version_id > 0`).Scan(&applied))
	entries, err := migrations.ReadDir("migrations/postgres")
	must(t, err)
	if applied != len(entries) {
		t.Fatalf("%d migrations recorded, want %d", applied, len(entries))
	}
	// Every node sees the one schema.
	must(t, stores[0].CreateUser(ctx, newUser("u1", "alice")))
	for i, st := range stores {
		if _, err := st.UserByName(ctx, "alice"); err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
}

// tablesIn returns the names of the tables in schema.
func tablesIn(t *testing.T, pool *pgxpool.Pool, schema string) map[string]bool {
	t.Helper()
	rows, err := pool.Query(t.Context(), `SELECT tablename FROM pg_tables WHERE schemaname = $1`, schema)
	must(t, err)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	must(t, err)
	set := map[string]bool{}
	for _, n := range names {
		set[n] = true
	}
	return set
}

// TestPostgresUnavailable needs no server: it is about not reaching one.
func TestPostgresUnavailable(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	// Port 1 on loopback: nothing listens there, so connecting is refused at once.
	pool, err := pgxpool.New(ctx, "postgres://sessiond@127.0.0.1:1/sessiond?sslmode=disable&connect_timeout=2")
	must(t, err)
	defer pool.Close()

	_, err = NewPostgres(ctx, pool)
	wantErr(t, err, session.ErrUnavailable)

	st := &Postgres{pool: pool}
	wantErr(t, st.Ping(ctx), session.ErrUnavailable)
	_, err = st.SessionByID(ctx, "s1")
	wantErr(t, err, session.ErrUnavailable)
	_, err = st.CreateSession(ctx, newSession("u1", "s1", t0), session.Limit{Max: 1})
	wantErr(t, err, session.ErrUnavailable)

	pool.Close()
	wantErr(t, st.Ping(ctx), session.ErrUnavailable)
	must(t, st.Close())
	must(t, st.Close())
}
