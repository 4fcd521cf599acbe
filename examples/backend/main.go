// Command backend is a minimal application server protected by sessiond: every request to
// /api/orders needs a live session's bearer token, checked by introspection (cached) and dropped
// from the cache the moment sessiond's event stream says the session ended.
//
//	sessiond admin service create orders-api    # prints the secret once
//	SESSIOND_URL=http://127.0.0.1:8080 SESSIOND_SERVICE_SECRET=sds_... go run ./examples/backend
//	curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:3000/api/orders
package main

import (
	"context"
	"encoding/json"
	"log"
	"net/http"
	"os"
	"os/signal"

	"github.com/sessiond/sessiond/client/backend"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	g := backend.New(backend.Config{Base: env("SESSIOND_URL", "http://127.0.0.1:8080"), Secret: os.Getenv("SESSIOND_SERVICE_SECRET")})
	go func() { _ = g.Run(ctx) }()

	mux := http.NewServeMux()
	mux.Handle("GET /api/orders", g.RequireSession(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := backend.IdentityFrom(r.Context())
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"user": id.UserID, "orders": []string{}})
	})))
	srv := &http.Server{Addr: env("ADDR", "127.0.0.1:3000"), Handler: mux}
	go func() {
		<-ctx.Done()
		_ = srv.Shutdown(context.Background())
	}()
	log.Printf("listening on %s", srv.Addr)
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
