package server

import (
	"net/http"
	"net/url"

	"github.com/sessiond/sessiond/session"
)

// forwardAuthPath answers the sub-requests of reverse proxies that put sessiond in front of an
// application (nginx auth_request, Caddy forward_auth, Traefik ForwardAuth, Envoy ext_authz,
// HAProxy): the end user's token, proof and User-Agent come with it, the address from the
// proxy's forwarding header. 200 with the identity headers, or 401.
const forwardAuthPath = "/api/v1/forward-auth"

// The identity headers of a 200 answer, for the proxy to pass on to the application.
const (
	HeaderUserID        = "X-Sessiond-User-Id"
	HeaderSessionID     = "X-Sessiond-Session-Id"
	HeaderVaultID       = "X-Sessiond-Vault-Id"
	HeaderExpiresAt     = "X-Sessiond-Expires-At"
	HeaderIdleExpiresAt = "X-Sessiond-Idle-Expires-At"
)

// forwardAuth validates the token exactly as the API does — cached validation, fingerprint of
// the end user's client, proof of possession, activity — for any method.
func (s *Server) forwardAuth() http.Handler {
	ok := s.authNoStore(func(w http.ResponseWriter, _ *http.Request, sess session.Session) {
		// The names are canonical already: assigned directly, without Set's canonicalisation,
		// and the five values share one allocation.
		h := w.Header()
		vals := [5]string{sess.UserID, sess.ID, sess.VaultID, wireTime(sess.ExpiresAt), wireTime(sess.IdleExpiresAt)}
		s := vals[:]
		h[HeaderUserID], h[HeaderSessionID], h[HeaderVaultID] = s[0:1:1], s[1:2:2], s[2:3:3]
		h[HeaderExpiresAt], h[HeaderIdleExpiresAt] = s[3:4:4], s[4:5:5]
		w.WriteHeader(http.StatusOK)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ok.ServeHTTP(w, s.originalRequest(r))
	})
}

// originalRequest is, for a sub-request from a trusted proxy, the request being authorised: the
// method and URI the proxy reports (X-Forwarded-Method / X-Original-Method, X-Forwarded-Uri /
// X-Original-URI), so that a proof of possession made for the application's URL verifies. The
// original body is not forwarded: such proofs sign an empty body.
func (s *Server) originalRequest(r *http.Request) *http.Request {
	if !s.trusted(s.peer(r)) {
		return r
	}
	method := firstHeader(r, "X-Forwarded-Method", "X-Original-Method")
	uri := firstHeader(r, "X-Forwarded-Uri", "X-Original-Uri")
	if method == "" && uri == "" {
		return r
	}
	o := r.Clone(r.Context())
	if method != "" {
		o.Method = method
	}
	if u, err := url.ParseRequestURI(uri); err == nil && uri != "" {
		o.URL = u
	}
	o.Body = http.NoBody
	return o
}

func firstHeader(r *http.Request, names ...string) string {
	for _, n := range names {
		if v := r.Header.Get(n); v != "" {
			return v
		}
	}
	return ""
}
