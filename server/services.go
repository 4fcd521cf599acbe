package server

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/sessiond/sessiond/protocol"
	"github.com/sessiond/sessiond/session"
)

// services.go: the endpoints for the application's own servers (service clients) and their
// administration. Service endpoints take a service secret, never a user's token, and get no
// CORS: browsers do not call them.

const introspectPath = "/api/v1/introspect"

// Introspection is an RFC 7662 answer. Inactive answers carry only "active": false.
type Introspection struct {
	Active    bool   `json:"active"`
	Sub       string `json:"sub,omitempty"`
	Sid       string `json:"sid,omitempty"`
	VaultID   string `json:"vault_id,omitempty"`
	Iat       int64  `json:"iat,omitempty"`
	Exp       int64  `json:"exp,omitempty"`
	IdleExp   int64  `json:"idle_exp,omitempty"`
	TokenType string `json:"token_type,omitempty"`
}

var errServiceAuth = newWireError(protocol.CodeUnauthenticated, http.StatusUnauthorized, "a live service client secret is required (Authorization: Bearer or Basic)")

// serviceSecret is the secret of Authorization: Bearer <secret>, or the password of Basic.
func serviceSecret(r *http.Request) string {
	if t, ok := bearerToken(r); ok {
		return t
	}
	scheme, cred, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return ""
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
	if err != nil {
		return ""
	}
	_, pass, _ := strings.Cut(string(raw), ":")
	return pass
}

// handleIntrospect answers POST /api/v1/introspect (form: token, optional touch=false, and the
// end user's client_ip and user_agent to apply the fingerprint policy).
func (s *Server) handleIntrospect(w http.ResponseWriter, r *http.Request) {
	if _, err := s.mgr.AuthenticateService(r.Context(), serviceSecret(r)); err != nil {
		if errors.Is(err, session.ErrInvalid) {
			err = errServiceAuth
		}
		s.httpError(w, r, err)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if err := r.ParseForm(); err != nil {
		s.httpError(w, r, newWireError(protocol.CodeBadRequest, http.StatusBadRequest, "the body must be a form (token=…)"))
		return
	}
	var client *session.Client
	if ip, ua := r.PostForm.Get("client_ip"), r.PostForm.Get("user_agent"); ip != "" || ua != "" {
		client = &session.Client{IP: ip, UserAgent: ua}
	}
	sess, active, err := s.mgr.Introspect(r.Context(), r.PostForm.Get("token"), client, r.PostForm.Get("touch") != "false")
	if err != nil {
		s.httpError(w, r, err)
		return
	}
	if !active {
		writeAnswer(w, appendIntrospection, Introspection{Active: false})
		return
	}
	writeAnswer(w, appendIntrospection, Introspection{Active: true, Sub: sess.UserID, Sid: sess.ID, VaultID: sess.VaultID,
		Iat: sess.CreatedAt.Unix(), Exp: sess.ExpiresAt.Unix(), IdleExp: sess.IdleExpiresAt.Unix(), TokenType: "sessiond"})
}

// serviceEntry is a service client as the admin API lists it (never the hash).
type serviceEntry struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	CreatedAt string `json:"created_at"`
	RevokedAt string `json:"revoked_at,omitempty"`
	Secret    string `json:"secret,omitempty"` // at creation only
}

func serviceObject(c session.ServiceClient, secret string) serviceEntry {
	e := serviceEntry{ID: c.ID, Name: c.Name, CreatedAt: wireTime(c.CreatedAt), Secret: secret}
	if !c.RevokedAt.IsZero() {
		e.RevokedAt = wireTime(c.RevokedAt)
	}
	return e
}

// adminServices mounts the service-client administration on the admin API.
func (s *Server) adminServices(mux *http.ServeMux, guard func(http.HandlerFunc) http.Handler) {
	mux.Handle("POST /admin/v1/services", guard(func(w http.ResponseWriter, r *http.Request) {
		var in struct{ Name string }
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10)).Decode(&in); err != nil {
			s.httpError(w, r, newWireError(protocol.CodeBadRequest, http.StatusBadRequest, `the body must be {"name": "…"}`))
			return
		}
		c, secret, err := s.mgr.CreateServiceClient(r.Context(), in.Name)
		if err != nil {
			s.httpError(w, r, err)
			return
		}
		s.log.Info().Str("event", "service_client_created").Str("service", c.ID).Str("name", c.Name).Msg("admin action")
		writeJSON(w, http.StatusCreated, serviceObject(c, secret))
	}))
	mux.Handle("GET /admin/v1/services", guard(func(w http.ResponseWriter, r *http.Request) {
		list, err := s.mgr.ListServiceClients(r.Context())
		if err != nil {
			s.httpError(w, r, err)
			return
		}
		out := make([]serviceEntry, 0, len(list))
		for _, c := range list {
			out = append(out, serviceObject(c, ""))
		}
		writeJSON(w, http.StatusOK, map[string]any{"services": out})
	}))
	mux.Handle("DELETE /admin/v1/services/{id}", guard(func(w http.ResponseWriter, r *http.Request) {
		if err := s.mgr.RevokeServiceClient(r.Context(), r.PathValue("id")); err != nil {
			s.httpError(w, r, err)
			return
		}
		s.log.Info().Str("event", "service_client_revoked").Str("service", r.PathValue("id")).Msg("admin action")
		w.WriteHeader(http.StatusNoContent)
	}))
}
