package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/sessiond/sessiond/session"
)

// Subprotocol is the WebSocket subprotocol a client must offer.
const Subprotocol = "sessiond.v1"

// MaxMessageBytes is the largest client message.
const MaxMessageBytes = 64 << 10

// WebSocket close codes of the protocol beyond RFC 6455's.
const (
	CloseProtocolViolation = 4400
	CloseExpired           = 4401
	CloseRevoked           = 4403
	CloseHandshakeTimeout  = 4408
	CloseRateLimited       = 4429
)

// Inbound is a decoded client message. Fields not used by its type are ignored.
type Inbound struct {
	Type      string `json:"type"`
	ID        string `json:"-"`
	HasID     bool   `json:"-"`
	Username  string `json:"username,omitempty"`
	Request   string `json:"request,omitempty"`
	Record    string `json:"record,omitempty"`
	KE1       string `json:"ke1,omitempty"`
	KE3       string `json:"ke3,omitempty"`
	Device    string `json:"device,omitempty"`
	Token     string `json:"token,omitempty"`
	SessionID string `json:"session_id,omitempty"`
	Proof     string `json:"proof,omitempty"`
}

// DecodeInbound parses one client frame. It returns the message and, when the frame is not a
// valid message, an error whose id (if any could be read) is already set in the message.
func DecodeInbound(data []byte) (Inbound, error) {
	var in Inbound
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil || raw == nil {
		return in, fmt.Errorf("%w: a message must be one JSON object", session.ErrBadInput)
	}
	if idRaw, ok := raw["id"]; ok {
		if err := json.Unmarshal(idRaw, &in.ID); err == nil && len(idRaw) > 0 && idRaw[0] == '"' {
			in.HasID = true
		} else {
			in.ID = ""
			return in, fmt.Errorf("%w: id must be a string", session.ErrBadInput)
		}
	}
	typRaw, ok := raw["type"]
	if !ok || len(typRaw) == 0 || typRaw[0] != '"' {
		return in, fmt.Errorf("%w: type must be a string", session.ErrBadInput)
	}
	if err := json.Unmarshal(data, &in); err != nil {
		return in, fmt.Errorf("%w: a field has the wrong type", session.ErrBadInput)
	}
	return in, nil
}

// wireTime formats a time as RFC 3339 in UTC with milliseconds.
func wireTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }

// SessionObject is the wire form of a session.
type SessionObject struct {
	ID            string `json:"id"`
	Token         string `json:"token,omitempty"`
	UserID        string `json:"user_id"`
	VaultID       string `json:"vault_id"`
	Device        string `json:"device"`
	CreatedAt     string `json:"created_at"`
	LastSeenAt    string `json:"last_seen_at"`
	IdleExpiresAt string `json:"idle_expires_at"`
	ExpiresAt     string `json:"expires_at"`
	// PoP is true when the session requires a proof of possession (addition).
	PoP bool `json:"pop,omitempty"`
}

func sessionObject(i session.Info, token string) SessionObject {
	return SessionObject{
		ID: i.ID, Token: token, UserID: i.UserID, VaultID: i.VaultID, Device: i.Device.Label, PoP: len(i.Device.PoPKey) > 0,
		CreatedAt: wireTime(i.CreatedAt), LastSeenAt: wireTime(i.LastSeenAt),
		IdleExpiresAt: wireTime(i.IdleExpiresAt), ExpiresAt: wireTime(i.ExpiresAt),
	}
}

// DeviceEntry is one row of sessions.list and notice.sessions_changed.
type DeviceEntry struct {
	ID            string `json:"id"`
	Current       bool   `json:"current"`
	Device        string `json:"device"`
	CreatedAt     string `json:"created_at"`
	LastSeenAt    string `json:"last_seen_at"`
	IdleExpiresAt string `json:"idle_expires_at"`
	ExpiresAt     string `json:"expires_at"`
}

func deviceList(infos []session.Info, currentID string) []DeviceEntry {
	out := make([]DeviceEntry, 0, len(infos))
	for _, i := range infos {
		out = append(out, DeviceEntry{
			ID: i.ID, Current: i.ID == currentID, Device: i.Device.Label, CreatedAt: wireTime(i.CreatedAt),
			LastSeenAt: wireTime(i.LastSeenAt), IdleExpiresAt: wireTime(i.IdleExpiresAt), ExpiresAt: wireTime(i.ExpiresAt),
		})
	}
	return out
}

// encode marshals a server message: msg's own fields plus type and (when set) id.
func encode(typ, id string, fields any) []byte {
	var buf bytes.Buffer
	buf.WriteString(`{"type":`)
	t, _ := json.Marshal(typ)
	buf.Write(t)
	if id != "" {
		i, _ := json.Marshal(id)
		buf.WriteString(`,"id":`)
		buf.Write(i)
	}
	if fields != nil {
		f, err := json.Marshal(fields)
		if err != nil {
			panic("server: unencodable message: " + err.Error()) // our own types always encode
		}
		if len(f) > 2 { // not "{}"
			buf.WriteByte(',')
			buf.Write(f[1:])
			return buf.Bytes()
		}
	}
	buf.WriteByte('}')
	return buf.Bytes()
}

type errorFields struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}
