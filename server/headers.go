package server

import (
	"net/http"
	"strings"
)

// contentSecurityPolicy allows only same-origin scripts, styles, images and connections (the
// WebSocket included), WebAssembly for the OPAQUE library, and no framing, plugins or forms
// posting elsewhere. The only inline script the page has is its import map, allowed by hash.
func contentSecurityPolicy(scriptHashes []string) string {
	script := strings.Join(append([]string{"'self'", "'wasm-unsafe-eval'"}, scriptHashes...), " ")
	return "default-src 'none'; script-src " + script + "; style-src 'self'; " +
		"img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
}

// securityHeaders sets the headers every response carries.
func (s *Server) securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		if s.secure(r) {
			h.Set("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
		}
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()")
		if len(r.URL.Path) >= 5 && r.URL.Path[:5] == "/api/" {
			// API answers are per-user and some carry tokens: never cache them.
			h.Set("Cache-Control", "no-store")
		} else {
			h.Set("Content-Security-Policy", s.csp)
		}
		next.ServeHTTP(w, r)
	})
}
