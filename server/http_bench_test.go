package server_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/bytemare/opaque"
	"github.com/rs/zerolog"

	"github.com/sessiond/sessiond/hub"
	"github.com/sessiond/sessiond/server"
	"github.com/sessiond/sessiond/session"
	"github.com/sessiond/sessiond/store"
)

// benchServer is a server over a real SQLite store with one live session, its token, and the
// client address and user agent the session was created with.
func benchServer(b *testing.B) (*server.Server, string) {
	b.Helper()
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	// A long cache TTL: this measures the cached path, as a node serves it between refreshes.
	m, err := session.NewManager(session.Config{Store: st, Keys: session.GenerateKeys(), Logger: zerolog.Nop(),
		Policy: session.Policy{CacheTTL: time.Hour}})
	if err != nil {
		b.Fatal(err)
	}
	ksf := &opaque.ClientOptions{KSFSalt: make([]byte, 16), KSFLength: 64, KSFParameters: []uint64{1, 64, 1}}
	c, _ := opaque.DefaultConfiguration().Client()
	req, _ := c.RegistrationInit([]byte("pw"))
	resp, reg, err := m.RegisterStart(ctx, "bench", req.Serialize())
	if err != nil {
		b.Fatal(err)
	}
	r, _ := c.Deserialize.RegistrationResponse(resp)
	rec, _, _ := c.RegistrationFinalize(r, nil, nil, ksf)
	if _, err := m.RegisterFinish(ctx, reg, rec.Serialize()); err != nil {
		b.Fatal(err)
	}
	c, _ = opaque.DefaultConfiguration().Client()
	ke1, _ := c.GenerateKE1([]byte("pw"))
	ke2b, l, err := m.LoginStart(ctx, "bench", ke1.Serialize())
	if err != nil {
		b.Fatal(err)
	}
	ke2, _ := c.Deserialize.KE2(ke2b)
	ke3, _, _, err := c.GenerateKE3(ke2, nil, nil, ksf)
	if err != nil {
		b.Fatal(err)
	}
	_, token, err := m.LoginFinish(ctx, l, ke3.Serialize(), session.DeviceInfo{Label: "bench", IP: "127.0.0.1", UserAgent: "Go-http-client/1.1"})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := server.New(server.Config{Manager: m, Hub: hub.New(hub.NewLoopback()), Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	return srv, token
}

// BenchmarkHTTP compares, at the handler (no network), a trivial endpoint with an
// authenticated one: the difference is what token validation and the session answer cost.
func BenchmarkHTTP(b *testing.B) {
	srv, token := benchServer(b)
	run := func(b *testing.B, path, auth string) {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.RemoteAddr = "127.0.0.1:40000"
		req.Header.Set("User-Agent", "Go-http-client/1.1")
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		b.ReportAllocs()
		for b.Loop() {
			w := httptest.NewRecorder()
			srv.ServeHTTP(w, req)
			if w.Code != http.StatusOK {
				b.Fatalf("%s: HTTP %d %s", path, w.Code, w.Body)
			}
		}
	}
	b.Run("healthz", func(b *testing.B) { run(b, "/healthz", "") })
	b.Run("session", func(b *testing.B) { run(b, "/api/v1/session", token) })
}
