package server

import (
	"strings"
	"testing"
	"time"

	"github.com/sessiond/sessiond/session"
)

// BenchmarkDecodeInbound decodes client frames of the protocol.
func BenchmarkDecodeInbound(b *testing.B) {
	frames := map[string]string{
		"login.start":    `{"type":"login.start","id":"c1","username":"alice","device":"Firefox on Linux","ke1":"` + strings.Repeat("A", 128) + `"}`,
		"session.resume": `{"type":"session.resume","id":"c2","token":"sdt_` + strings.Repeat("x", 43) + `"}`,
		"ping":           `{"type":"ping","id":"c3"}`,
	}
	for name, f := range frames {
		data := []byte(f)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := DecodeInbound(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEncode encodes server messages of the protocol.
func BenchmarkEncode(b *testing.B) {
	now := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
	info := session.Info{
		ID: session.NewID(), UserID: session.NewID(), VaultID: session.NewID(), Device: session.DeviceInfo{Label: "Firefox on Linux"},
		CreatedAt: now, LastSeenAt: now, IdleExpiresAt: now.Add(30 * time.Minute), ExpiresAt: now.Add(12 * time.Hour),
	}
	list := make([]session.Info, 5)
	for i := range list {
		list[i] = info
		list[i].ID = session.NewID()
	}
	token, _ := session.NewToken()
	cases := map[string]func() []byte{
		"login.ok": func() []byte { return encode("login.ok", "c2", map[string]any{"session": sessionObject(info, token)}) },
		"notice.revoked": func() []byte {
			return encode("notice.revoked", "", map[string]string{"reason": session.ReasonRevokedByUser})
		},
		"notice.sessions_changed": func() []byte {
			return encode("notice.sessions_changed", "", map[string]any{"sessions": deviceList(list, info.ID)})
		},
	}
	for name, f := range cases {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = f()
			}
		})
	}
}
