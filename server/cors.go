package server

import (
	"net/http"
	"strings"

	"github.com/sessiond/sessiond/protocol"
)

// cors.go: a single-page app served from another origin calls /api/v1 with its bearer token.
// Only the origins listed in SESSIOND_ALLOWED_ORIGINS get CORS headers, each its own origin back
// (never "*"), and no credentials: tokens travel in Authorization, never in cookies. The
// endpoints meant for the app's servers and proxies (forward auth) get none.

var (
	corsMethods = "GET, POST, PUT, DELETE"
	corsHeaders = "Authorization, Content-Type, If-Match, If-None-Match, " + protocol.ProofHeader
	corsExpose  = "ETag, WWW-Authenticate"
)

// corsOrigin returns the request's Origin when it is one of the configured origins, else "".
func (s *Server) corsOrigin(r *http.Request) string {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return ""
	}
	o, err := normalizeOrigin(origin)
	if err != nil {
		return ""
	}
	for _, a := range s.cfg.AllowedOrigins {
		if n, _ := normalizeOrigin(a); n == o {
			return origin
		}
	}
	return ""
}

// cors answers preflights and labels the answers of /api/v1 for the allowed origins.
func (s *Server) cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/api/v1/") || r.URL.Path == forwardAuthPath || r.URL.Path == introspectPath || r.URL.Path == eventsPath {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Add("Vary", "Origin")
		origin := s.corsOrigin(r)
		if origin == "" {
			next.ServeHTTP(w, r)
			return
		}
		h.Set("Access-Control-Allow-Origin", origin)
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Set("Access-Control-Allow-Methods", corsMethods)
			h.Set("Access-Control-Allow-Headers", corsHeaders)
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h.Set("Access-Control-Expose-Headers", corsExpose)
		// The answer is for that page: let the browser hand it over.
		h.Set("Cross-Origin-Resource-Policy", "cross-origin")
		next.ServeHTTP(w, r)
	})
}
