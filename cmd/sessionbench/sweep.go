package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/bytemare/opaque"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/sessiond/sessiond/session"
	"github.com/sessiond/sessiond/store"
)

// sweepScenario fills PostgreSQL with expired sessions, then measures store-backed validation
// latency without a sweep and while the sweeper deletes them all in bounded batches, and how
// long the sweep takes. Validation runs with the node cache disabled so that every validation
// reads the store: the worst case for contention with the sweeper.
func sweepScenario(ctx context.Context, o options) (map[string]any, error) {
	if o.databaseURL == "" {
		return nil, errors.New("sweep needs -database-url (or TEST_POSTGRES_URL)")
	}
	schema := fmt.Sprintf("bench_%d", time.Now().UnixNano())
	admin, err := pgx.Connect(ctx, o.databaseURL)
	if err != nil {
		return nil, err
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		return nil, err
	}
	defer admin.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
	cfg, err := pgxpool.ParseConfig(o.databaseURL)
	if err != nil {
		return nil, err
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cfg.MaxConns = int32(o.concurrency + 4)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	st, err := store.NewPostgres(ctx, pool)
	if err != nil {
		return nil, err
	}

	// Expired rows, written with COPY in chunks (the realistic shape: ended long ago).
	logf("inserting %d expired sessions", o.sessions)
	insertStart := time.Now()
	past := time.Now().Add(-48 * time.Hour).UnixMilli()
	const chunk = 50_000
	for done := 0; done < o.sessions; done += chunk {
		n := min(chunk, o.sessions-done)
		rows := make([][]any, n)
		for i := range rows {
			h := make([]byte, 32)
			_, _ = rand.Read(h)
			id := session.NewID()
			rows[i] = []any{id, "bench-user-" + fmt.Sprint((done+i)%5000), "v", h, []byte{0}, past, past, past + 1000, past + 2000, past + 1000}
		}
		if _, err := pool.CopyFrom(ctx, pgx.Identifier{"sessions"},
			[]string{"id", "user_id", "vault_id", "token_hash", "device", "created_at", "last_seen_at", "idle_expires_at", "expires_at", "end_at"},
			pgx.CopyFromRows(rows)); err != nil {
			return nil, err
		}
	}
	if _, err := pool.Exec(ctx, "ANALYZE sessions"); err != nil {
		return nil, err
	}
	logf("inserted in %s", time.Since(insertStart).Round(time.Millisecond))

	// Live sessions to validate, made by real OPAQUE logins through the Manager.
	m, err := session.NewManager(session.Config{
		Store: st, Keys: session.GenerateKeys(), Logger: zerolog.Nop(),
		Policy: session.Policy{CacheTTL: time.Nanosecond, MaxSessions: -1, Retention: time.Nanosecond, SweepBatch: 1000},
	})
	if err != nil {
		return nil, err
	}
	tokens, err := benchLogins(ctx, m, 200)
	if err != nil {
		return nil, err
	}

	validate := func(ctx context.Context) (latencies, int, error) {
		var mu sync.Mutex
		var all latencies
		errs := 0
		var wg sync.WaitGroup
		for w := 0; w < o.concurrency; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				var local latencies
				bad := 0
				for i := w; ctx.Err() == nil && len(local) < 2_000_000; i++ {
					t := time.Now()
					if _, err := m.Validate(ctx, tokens[i%len(tokens)]); err != nil && ctx.Err() == nil {
						bad++
					}
					local = append(local, time.Since(t))
				}
				mu.Lock()
				all = append(all, local...)
				errs += bad
				mu.Unlock()
			}(w)
		}
		wg.Wait()
		return all, errs, nil
	}

	logf("baseline: validating for %s", o.duration)
	bctx, cancel := context.WithTimeout(ctx, o.duration)
	base, baseErrs, _ := validate(bctx)
	cancel()

	logf("sweeping %d sessions while validating", o.sessions)
	vctx, stopValidate := context.WithCancel(ctx)
	var during latencies
	var duringErrs int
	vdone := make(chan struct{})
	go func() {
		during, duringErrs, _ = validate(vctx)
		close(vdone)
	}()
	sweepStart := time.Now()
	swept, err := m.Sweep(ctx)
	sweepTime := time.Since(sweepStart)
	stopValidate()
	<-vdone
	if err != nil {
		return nil, err
	}
	var left int
	_ = pool.QueryRow(ctx, "SELECT count(*) FROM sessions WHERE end_at < $1", time.Now().UnixMilli()).Scan(&left)
	logf("swept %d in %s", swept, sweepTime.Round(time.Millisecond))

	return map[string]any{
		"expired_sessions":    o.sessions,
		"swept":               swept,
		"left_expired":        left,
		"batch":               1000,
		"sweep_seconds":       sweepTime.Seconds(),
		"sweep_rows_per_s":    float64(swept) / sweepTime.Seconds(),
		"validate_p50_ms":     ms(base.quantile(0.50)),
		"validate_p99_ms":     ms(base.quantile(0.99)),
		"validate_n":          len(base),
		"validate_errors":     baseErrs,
		"during_p50_ms":       ms(during.quantile(0.50)),
		"during_p99_ms":       ms(during.quantile(0.99)),
		"during_n":            len(during),
		"during_errors":       duringErrs,
		"p99_ratio_during_vs": ms(during.quantile(0.99)) / ms(base.quantile(0.99)),
		"concurrency":         o.concurrency,
		"validation_cache":    "disabled (every validation reads PostgreSQL)",
	}, nil
}

// benchLogins registers one user with a cheap client KSF and logs in n times, returning the
// tokens. Key stretching runs on the client only, so the server's work is unchanged by it.
func benchLogins(ctx context.Context, m *session.Manager, n int) ([]string, error) {
	ksf := &opaque.ClientOptions{KSFSalt: make([]byte, 16), KSFLength: 64, KSFParameters: []uint64{1, 64, 1}}
	name := "bench-" + session.NewID()
	c, _ := opaque.DefaultConfiguration().Client()
	req, _ := c.RegistrationInit([]byte("pw"))
	resp, reg, err := m.RegisterStart(ctx, name, req.Serialize())
	if err != nil {
		return nil, err
	}
	r, err := c.Deserialize.RegistrationResponse(resp)
	if err != nil {
		return nil, err
	}
	rec, _, err := c.RegistrationFinalize(r, nil, nil, ksf)
	if err != nil {
		return nil, err
	}
	if _, err := m.RegisterFinish(ctx, reg, rec.Serialize()); err != nil {
		return nil, err
	}
	tokens := make([]string, 0, n)
	for i := 0; i < n; i++ {
		c, _ := opaque.DefaultConfiguration().Client()
		ke1, _ := c.GenerateKE1([]byte("pw"))
		ke2b, l, err := m.LoginStart(ctx, name, ke1.Serialize())
		if err != nil {
			return nil, err
		}
		ke2, _ := c.Deserialize.KE2(ke2b)
		ke3, _, _, err := c.GenerateKE3(ke2, nil, nil, ksf)
		if err != nil {
			return nil, err
		}
		_, tok, err := m.LoginFinish(ctx, l, ke3.Serialize(), session.DeviceInfo{Label: "bench"})
		if err != nil {
			return nil, err
		}
		tokens = append(tokens, tok)
	}
	return tokens, nil
}
