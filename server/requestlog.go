package server

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"time"

	"github.com/rs/zerolog"
)

// requestlog.go: a request id on every HTTP request (and so on every WebSocket, whose upgrade
// is one), carried by the log lines it causes, and the access log. Neither ever holds a token
// nor device metadata (address, user agent: those rest only sealed, docs/SECURITY.md): the
// access log has the method, the path without its query, the status, the size and the time.

// maxRequestIDLen bounds an X-Request-Id taken from a trusted proxy.
const maxRequestIDLen = 64

// requestID returns the request's id: the X-Request-Id a trusted proxy set (letters, digits,
// '-', '_', '.', at most 64), else a new random one.
func (s *Server) requestID(r *http.Request) string {
	if v := r.Header.Get("X-Request-Id"); v != "" && len(v) <= maxRequestIDLen && validRequestID(v) && s.trusted(s.peer(r)) {
		return v
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func validRequestID(v string) bool {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// withRequestLog gives every request an id, answered in X-Request-Id (where requestLogger finds
// it: the hot path pays for no logger and no copy of the request), and writes the access line
// when it is done.
func (s *Server) withRequestLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := s.requestID(r)
		w.Header().Set("X-Request-Id", id)
		if !s.cfg.AccessLog {
			next.ServeHTTP(w, r)
			return
		}
		rec := &statusRecorder{ResponseWriter: w}
		start := time.Now()
		next.ServeHTTP(rec, r)
		status := rec.status
		if status == 0 {
			status = http.StatusOK
			if r.Header.Get("Upgrade") != "" {
				status = http.StatusSwitchingProtocols // hijacked by the WebSocket
			}
		}
		s.log.Info().Str("request_id", id).Str("method", r.Method).Str("path", r.URL.Path).Int("status", status).Int64("bytes", rec.bytes).
			Dur("took", time.Since(start)).Msg("request")
	})
}

// requestLogger is the server's logger with the id of the request w answers, for the lines
// the request causes.
func (s *Server) requestLogger(w http.ResponseWriter) zerolog.Logger {
	return s.log.With().Str("request_id", w.Header().Get("X-Request-Id")).Logger()
}

// statusRecorder notes the status and the size of an answer. ResponseController reaches the
// writer under it (Flush for the event stream, Hijack for WebSockets) through Unwrap.
type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusRecorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *statusRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }
