package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sessiond/sessiond/protocol"
	"github.com/sessiond/sessiond/session"
)

type ctxKey struct{}

// SessionFrom returns the session that the auth middleware put into the request context.
func SessionFrom(ctx context.Context) (session.Session, bool) {
	s, ok := ctx.Value(ctxKey{}).(session.Session)
	return s, ok
}

func (s *Server) routes() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", s.handleWS)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.handleReady)
	mux.HandleFunc("GET /api/v1/opaque/config", s.handleOPAQUEConfig)
	mux.Handle("GET /api/v1/session", s.authNoStore(s.handleGetSession))
	mux.Handle("POST /api/v1/session/refresh", s.auth(s.handleRefresh))
	mux.Handle("DELETE /api/v1/session", s.auth(s.handleLogout))
	mux.Handle("GET /api/v1/sessions", s.auth(s.handleListSessions))
	mux.Handle("DELETE /api/v1/sessions/{id}", s.auth(s.handleRevokeSession))
	mux.Handle("POST /api/v1/sessions/revoke-others", s.auth(s.handleRevokeOthers))
	mux.Handle("GET /api/v1/vault", s.auth(s.handleGetVault))
	mux.Handle("PUT /api/v1/vault", s.auth(s.handlePutVault))
	mux.Handle("GET /api/v1/activity", s.auth(s.handleActivity))
	mux.Handle("/api/v1/forward-auth", s.forwardAuth())
	mux.HandleFunc("POST "+introspectPath, s.handleIntrospect)
	mux.HandleFunc("GET "+eventsPath, s.handleEvents)
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		if allow := allowedMethods(mux, r, "/api/"); len(allow) > 0 {
			methodNotAllowed(s, w, r, allow)
			return
		}
		s.httpError(w, r, newWireError(protocol.CodeNotFound, http.StatusNotFound, "no such API endpoint"))
	})
	if s.cfg.Web != nil {
		files := http.FileServerFS(s.cfg.Web)
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				methodNotAllowed(s, w, r, []string{http.MethodGet, http.MethodHead})
				return
			}
			files.ServeHTTP(w, r)
		})
	}
	s.mux = s.withRequestLog(s.securityHeaders(s.cors(mux)))
}

// allowedMethods lists the methods that mux routes r's path to a handler other than the
// catch-all pattern (the methods a 405 answer names in Allow). Empty: no such path.
func allowedMethods(mux *http.ServeMux, r *http.Request, catchAll string) []string {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := mux.Handler(probe); pattern != "" && pattern != catchAll {
			allow = append(allow, m)
		}
	}
	return allow
}

// methodNotAllowed answers 405 method_not_allowed with the Allow header.
func methodNotAllowed(s *Server, w http.ResponseWriter, r *http.Request, allow []string) {
	w.Header().Set("Allow", strings.Join(allow, ", "))
	s.httpError(w, r, newWireError(protocol.CodeMethodNotAllowed, http.StatusMethodNotAllowed, r.Method+" is not allowed here"))
}

// bearerToken returns the token of an `Authorization: Bearer` header; the scheme name is
// case-insensitive (RFC 9110 §11.1), the token is not.
func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(token), true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) httpError(w http.ResponseWriter, r *http.Request, err error) {
	we, known := classify(err)
	if !known {
		l := s.requestLogger(w)
		l.Error().Err(err).Str("path", r.URL.Path).Msg("internal error")
	}
	s.metrics.errorAnswer(we.code)
	switch we.code {
	case protocol.CodeUnauthenticated:
		w.Header().Set("WWW-Authenticate", "Bearer")
	case protocol.CodeSessionInvalid:
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	case protocol.CodeProofInvalid:
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token", error_description="proof of possession required"`)
	}
	writeJSON(w, we.status, protocol.ErrorBody{Code: we.code, Message: we.msg})
}

// auth resolves the bearer token to a live session, records the activity and puts the session
// into the request context.
func (s *Server) auth(next http.HandlerFunc) http.Handler {
	return s.authWith(func(w http.ResponseWriter, r *http.Request, sess session.Session) {
		next(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, sess)))
	}, true)
}

// sessionHandler is a handler given the request's live session directly.
type sessionHandler func(w http.ResponseWriter, r *http.Request, sess session.Session)

// authNoStore is auth for handlers that do no store work of their own (the session answer,
// forward auth): no per-request timer (the validation bounds its own store work on a miss),
// and the session is handed over as an argument, not through a new request context.
func (s *Server) authNoStore(next sessionHandler) http.Handler { return s.authWith(next, false) }

// authWith validates the bearer token, the proof and the client, records activity, and calls
// next with the session (and requestDeadline on the request's context when deadline is set).
func (s *Server) authWith(next sessionHandler, deadline bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Get("Authorization")
		scheme, token, ok := strings.Cut(h, " ")
		if h == "" {
			s.httpError(w, r, newWireError(protocol.CodeUnauthenticated, http.StatusUnauthorized, "an Authorization: Bearer token is required"))
			return
		}
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			s.httpError(w, r, newWireError(protocol.CodeUnauthenticated, http.StatusUnauthorized, "the Authorization header must use the Bearer scheme"))
			return
		}
		ip := s.clientIP(r)
		if s.badTokens.over(ip, s.limits.BadTokensPerAddr) {
			s.metrics.rateLimited.WithLabelValues("bad_tokens_per_address").Inc()
			s.httpError(w, r, ErrRateLimited)
			return
		}
		ctx := r.Context()
		if deadline {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, requestDeadline)
			defer cancel()
			r = r.WithContext(ctx)
		}
		start := time.Now()
		sess, err := s.mgr.Validate(ctx, strings.TrimSpace(token))
		s.metrics.validation.Observe(time.Since(start).Seconds())
		if err != nil {
			if errors.Is(err, session.ErrInvalid) {
				s.badTokens.add(ip)
			}
			s.httpError(w, r, err)
			return
		}
		// The proof first: a request without one (a thief holding only the token) must not
		// get as far as the fingerprint check, whose mismatch ends the owner's session.
		if len(s.mgr.Device(sess).PoPKey) > 0 {
			// verifyProof reads the body and puts it back on the request it is given (r).
			if err := s.verifyProof(r, sess); err != nil {
				s.httpError(w, r, err)
				return
			}
		}
		if err := s.mgr.CheckClient(ctx, sess, session.Client{IP: ip, UserAgent: r.UserAgent()}); err != nil {
			s.httpError(w, r, err)
			return
		}
		next(w, r, s.mgr.Touch(sess))
	})
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	status := map[string]string{"store": "ok", "hub": "ok"}
	code := http.StatusOK
	if s.cfg.Ready != nil {
		if err := s.cfg.Ready(ctx); err != nil {
			status["store"] = "unavailable"
			code = http.StatusServiceUnavailable
		}
	}
	if !s.hub.Healthy() {
		// Degraded, still serving: the store enforces every revocation on next use.
		status["hub"] = "degraded"
	}
	s.mu.Lock()
	if s.draining {
		status["node"] = "draining"
		code = http.StatusServiceUnavailable
	}
	s.mu.Unlock()
	writeJSON(w, code, status)
}

func (s *Server) handleOPAQUEConfig(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"suite": session.Suite,
		"ksf": map[string]any{
			"name": session.KSFName, "t": session.KSFTime, "m_kib": session.KSFMemKiB, "p": session.KSFLanes,
			"salt": session.KSFSalt, "length": session.KSFLength,
		},
		"context":           "",
		"server_public_key": session.EncodeB64(s.mgr.ServerPublicKey()),
	})
}

func (s *Server) handleGetSession(w http.ResponseWriter, _ *http.Request, sess session.Session) {
	writeSessionAnswer(w, s.mgr.Info(sess))
}

func (s *Server) handleRefresh(w http.ResponseWriter, r *http.Request) {
	if !s.tokensAllowed(r) {
		s.httpError(w, r, errInsecure)
		return
	}
	token, ok := bearerToken(r)
	if !ok {
		s.httpError(w, r, newWireError(protocol.CodeUnauthenticated, http.StatusUnauthorized, "an Authorization: Bearer token is required"))
		return
	}
	info, newToken, err := s.mgr.Refresh(r.Context(), token)
	if err != nil {
		s.httpError(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]string{
		"token": newToken, "idle_expires_at": wireTime(info.IdleExpiresAt), "expires_at": wireTime(info.ExpiresAt),
	})
}

func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	sess, _ := SessionFrom(r.Context())
	if err := s.mgr.Logout(r.Context(), sess); err != nil {
		s.httpError(w, r, err)
		return
	}
	w.Header().Set("Clear-Site-Data", `"storage"`)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleListSessions(w http.ResponseWriter, r *http.Request) {
	sess, _ := SessionFrom(r.Context())
	list, err := s.mgr.List(r.Context(), sess.UserID)
	if err != nil {
		s.httpError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"sessions": deviceList(list, sess.ID)})
}

func (s *Server) handleRevokeSession(w http.ResponseWriter, r *http.Request) {
	sess, _ := SessionFrom(r.Context())
	if !session.ValidID(r.PathValue("id")) {
		s.httpError(w, r, errNoSuchSession)
		return
	}
	if _, err := s.mgr.Revoke(r.Context(), sess, r.PathValue("id")); err != nil {
		s.httpError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleRevokeOthers(w http.ResponseWriter, r *http.Request) {
	sess, _ := SessionFrom(r.Context())
	ids, err := s.mgr.RevokeOthers(r.Context(), sess)
	if err != nil {
		s.httpError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"session_ids": nonNil(ids)})
}

func etag(v string) string { return strconv.Quote(v) }

func (s *Server) handleGetVault(w http.ResponseWriter, r *http.Request) {
	sess, _ := SessionFrom(r.Context())
	v, err := s.mgr.GetVault(r.Context(), sess)
	if err != nil {
		s.httpError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("ETag", etag(v.ETag))
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(v.Data)
}

func (s *Server) handlePutVault(w http.ResponseWriter, r *http.Request) {
	sess, _ := SessionFrom(r.Context())
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, session.MaxVaultSize))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.httpError(w, r, newWireError(protocol.CodeTooLarge, http.StatusRequestEntityTooLarge, "the vault is limited to 1 MiB"))
			return
		}
		s.httpError(w, r, newWireError(protocol.CodeBadRequest, http.StatusBadRequest, "the request body could not be read"))
		return
	}
	ifMatch := strings.TrimSpace(r.Header.Get("If-Match"))
	if ifMatch != "" {
		unq, err := strconv.Unquote(strings.TrimPrefix(ifMatch, "W/"))
		if err != nil {
			s.httpError(w, r, newWireError(protocol.CodeBadRequest, http.StatusBadRequest, "If-Match must be a quoted ETag"))
			return
		}
		ifMatch = unq
	}
	ifNoneMatch := strings.TrimSpace(r.Header.Get("If-None-Match")) == "*"
	// The request's deadline also ran while a slow client sent the body: the store write gets
	// its own.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), requestDeadline)
	defer cancel()
	tag, err := s.mgr.PutVault(ctx, sess, body, ifMatch, ifNoneMatch)
	if err != nil {
		s.httpError(w, r, err)
		return
	}
	w.Header().Set("ETag", etag(tag))
	w.WriteHeader(http.StatusNoContent)
}

// activityLimit is how many recent security events the activity list shows.
const activityLimit = 50

func activityList(list []session.Activity, currentID string) []protocol.Activity {
	out := make([]protocol.Activity, 0, len(list))
	for _, a := range list {
		out = append(out, protocol.Activity{Kind: a.Kind, Reason: a.Reason, SessionID: a.SessionID,
			Current: a.SessionID != "" && a.SessionID == currentID, Device: a.Device, IP: a.IP, At: wireTime(a.At)})
	}
	return out
}

func (s *Server) handleActivity(w http.ResponseWriter, r *http.Request) {
	sess, _ := SessionFrom(r.Context())
	list, err := s.mgr.Activity(r.Context(), sess.UserID, activityLimit)
	if err != nil {
		s.httpError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": activityList(list, sess.ID)})
}

// ProofHeader carries a request's proof of possession (see docs/PROTOCOL.md).
const ProofHeader = "Sessiond-PoP"

// verifyProof checks the request's proof of possession. It reads the body (at most the vault
// limit) to hash it and puts it back for the handler.
func (s *Server) verifyProof(r *http.Request, sess session.Session) error {
	var body []byte
	if r.Body != nil {
		b, err := io.ReadAll(io.LimitReader(r.Body, session.MaxVaultSize+1))
		if err != nil {
			return newWireError(protocol.CodeBadRequest, http.StatusBadRequest, "the request body could not be read")
		}
		body = b
		r.Body = io.NopCloser(bytes.NewReader(b))
	}
	return s.mgr.VerifyProof(sess, r.Header.Get(ProofHeader), r.Method, r.URL.RequestURI(), body, s.proofSeen(r.Context()))
}

// proofSeen records a proof's MAC and reports whether it was used before, on any node. With a
// shared counter it never falls back to this node's memory: a replay on another node would go
// unseen, so an unreachable Redis refuses the proof (VerifyProof: ErrUnavailable).
func (s *Server) proofSeen(ctx context.Context) func([]byte) (bool, error) {
	add := s.counter.Add
	if sc, ok := s.counter.(interface {
		AddShared(context.Context, string, int64, time.Duration) (int64, error)
	}); ok {
		add = sc.AddShared
	}
	return func(sig []byte) (bool, error) {
		n, err := add(ctx, "pop:"+session.EncodeB64(sig), 1, 2*protocol.ProofWindow)
		return n > 1, err
	}
}
