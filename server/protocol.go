package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/sessiond/sessiond/protocol"
	"github.com/sessiond/sessiond/session"
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

// wireTime formats a time for the wire.
func wireTime(t time.Time) string { return protocol.Time(t) }

func sessionObject(i session.Info, token string) protocol.Session {
	return protocol.Session{
		ID: i.ID, Token: token, UserID: i.UserID, VaultID: i.VaultID, Device: i.Device.Label, PoP: len(i.Device.PoPKey) > 0,
		CreatedAt: wireTime(i.CreatedAt), LastSeenAt: wireTime(i.LastSeenAt),
		IdleExpiresAt: wireTime(i.IdleExpiresAt), ExpiresAt: wireTime(i.ExpiresAt),
	}
}

func deviceList(infos []session.Info, currentID string) []protocol.Device {
	out := make([]protocol.Device, 0, len(infos))
	for _, i := range infos {
		out = append(out, protocol.Device{
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
