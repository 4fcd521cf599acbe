package server

import (
	"encoding/json"
	"net/http"
	"strconv"
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
	writeAnswer(w, appendSessionAnswer, i)
}

// writeAnswer writes 200 with the JSON that appendJSON makes of v, through a pooled buffer.
func writeAnswer[T any](w http.ResponseWriter, appendJSON func([]byte, T) []byte, v T) {
	bp := answerBufs.Get().(*[]byte)
	b := appendJSON((*bp)[:0], v)
	w.Header()["Content-Type"] = jsonContentType // canonical already: no Set, no allocation
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
	*bp = b
	answerBufs.Put(bp)
}

// appendIntrospection is encoding/json's output for an Introspection (omitempty included).
func appendIntrospection(b []byte, in Introspection) []byte {
	b = strconv.AppendBool(append(b, `{"active":`...), in.Active)
	for _, f := range [...]struct{ name, v string }{{"sub", in.Sub}, {"sid", in.Sid}, {"vault_id", in.VaultID}} {
		if f.v != "" {
			b = appendJSONString(append(append(append(b, ',', '"'), f.name...), '"', ':'), f.v)
		}
	}
	for _, f := range [...]struct {
		name string
		v    int64
	}{{"iat", in.Iat}, {"exp", in.Exp}, {"idle_exp", in.IdleExp}} {
		if f.v != 0 {
			b = strconv.AppendInt(append(append(append(b, ',', '"'), f.name...), '"', ':'), f.v, 10)
		}
	}
	if in.TokenType != "" {
		b = appendJSONString(append(b, `,"token_type":`...), in.TokenType)
	}
	return append(b, "}\n"...)
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
