package server

import (
	"crypto/subtle"
	"net/http"

	"github.com/sessiond/sessiond/protocol"
	"github.com/sessiond/sessiond/session"
)

// AdminHandler is the admin API, meant for a separate listener (SESSIOND_ADMIN_ADDR, loopback
// by default). Every request needs `Authorization: Bearer <admin token>` (derived from the key
// file: `sessiond admin token`), gets a request id and an access line like the public API's.
//
//	GET    /admin/v1/users/{username}/sessions   the user's live sessions
//	DELETE /admin/v1/users/{username}/sessions   end all of them (reason admin)
//	DELETE /admin/v1/users/{username}            delete the user; all sessions end
//	DELETE /admin/v1/sessions/{id}               end one session (reason admin)
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	token := []byte("Bearer " + s.mgr.AdminToken())
	guard := func(h http.HandlerFunc) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "no-store")
			if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), token) != 1 {
				w.Header().Set("WWW-Authenticate", "Bearer")
				s.httpError(w, r, newWireError(protocol.CodeUnauthenticated, http.StatusUnauthorized, "the admin token is required"))
				return
			}
			h(w, r)
		})
	}
	mux.Handle("GET /admin/v1/users/{username}/sessions", guard(func(w http.ResponseWriter, r *http.Request) {
		u, list, err := s.mgr.UserSessions(r.Context(), r.PathValue("username"))
		if err != nil {
			s.httpError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"user_id": u.ID, "username": u.Username, "sessions": adminList(list)})
	}))
	mux.Handle("DELETE /admin/v1/users/{username}/sessions", guard(func(w http.ResponseWriter, r *http.Request) {
		ids, err := s.mgr.AdminRevokeUser(r.Context(), r.PathValue("username"))
		if err != nil {
			s.httpError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"session_ids": nonNil(ids)})
	}))
	mux.Handle("DELETE /admin/v1/users/{username}", guard(func(w http.ResponseWriter, r *http.Request) {
		ids, err := s.mgr.DeleteUser(r.Context(), r.PathValue("username"))
		if err != nil {
			s.httpError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"session_ids": nonNil(ids)})
	}))
	mux.Handle("DELETE /admin/v1/sessions/{id}", guard(func(w http.ResponseWriter, r *http.Request) {
		if !session.ValidID(r.PathValue("id")) {
			s.httpError(w, r, errNoSuchSession)
			return
		}
		if err := s.mgr.AdminRevoke(r.Context(), r.PathValue("id")); err != nil {
			s.httpError(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	s.adminServices(mux, guard)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if allow := allowedMethods(mux, r, "/"); len(allow) > 0 {
			methodNotAllowed(s, w, r, allow)
			return
		}
		s.httpError(w, r, newWireError(protocol.CodeNotFound, http.StatusNotFound, "no such admin endpoint"))
	})
	return s.withRequestLog(mux)
}

// adminEntry is a session as an administrator sees it: with the device's address and agent.
type adminEntry struct {
	protocol.Device
	IP        string `json:"ip,omitempty"`
	UserAgent string `json:"user_agent,omitempty"`
}

func adminList(list []session.Info) []adminEntry {
	rows := deviceList(list, "")
	out := make([]adminEntry, len(rows))
	for i := range rows {
		out[i] = adminEntry{Device: rows[i], IP: list[i].Device.IP, UserAgent: list[i].Device.UserAgent}
	}
	return out
}
