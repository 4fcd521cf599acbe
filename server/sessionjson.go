package server

import (
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/sessiond/sessiond/protocol"
	"github.com/sessiond/sessiond/session"
)

// The answer of GET /api/v1/session is the hot path of validation load; it is written without
// reflection into a pooled buffer, byte for byte what encoding/json writes for
// {"session": protocol.Session} (TestSessionAnswerMatchesEncodingJSON).

var jsonContentType = []string{"application/json"}

var answerBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// writeSessionAnswer writes 200 {"session": …} for the session i.
func writeSessionAnswer(w http.ResponseWriter, i session.Info) {
	bp := answerBufs.Get().(*[]byte)
	b := appendSessionAnswer((*bp)[:0], i)
	w.Header()["Content-Type"] = jsonContentType // canonical already: no Set, no allocation
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
	*bp = b
	answerBufs.Put(bp)
}

func appendSessionAnswer(b []byte, i session.Info) []byte {
	b = append(b, `{"session":{"id":`...)
	b = appendJSONString(b, i.ID)
	b = append(b, `,"user_id":`...)
	b = appendJSONString(b, i.UserID)
	b = append(b, `,"vault_id":`...)
	b = appendJSONString(b, i.VaultID)
	b = append(b, `,"device":`...)
	b = appendJSONString(b, i.Device.Label)
	b = appendJSONTime(append(b, `,"created_at":`...), i.CreatedAt)
	b = appendJSONTime(append(b, `,"last_seen_at":`...), i.LastSeenAt)
	b = appendJSONTime(append(b, `,"idle_expires_at":`...), i.IdleExpiresAt)
	b = appendJSONTime(append(b, `,"expires_at":`...), i.ExpiresAt)
	if len(i.Device.PoPKey) > 0 {
		b = append(b, `,"pop":true`...)
	}
	return append(b, "}}\n"...)
}

func appendJSONTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, protocol.TimeLayout)
	return append(b, '"')
}

// appendJSONString quotes s as encoding/json does: printable ASCII other than the characters it
// escapes is copied; anything else takes encoding/json's own path.
func appendJSONString(b []byte, s string) []byte {
	for k := 0; k < len(s); k++ {
		if c := s[k]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
