package server

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/sessiond/sessiond/protocol"
	"github.com/sessiond/sessiond/session"
)

// TestSessionAnswerMatchesEncodingJSON: the hand-written answer of GET /api/v1/session is the
// same bytes encoding/json writes, for ordinary and hostile labels, with and without PoP.
func TestSessionAnswerMatchesEncodingJSON(t *testing.T) {
	at := time.Date(2026, 12, 4, 1, 2, 3, 456789000, time.FixedZone("X", 3600))
	for _, label := range []string{"", "Firefox on Linux", `quote " and \ backslash`, "<script>&amp;", "tab\there", "ünïcödé ✓", "\u2028\u2029", "\x7f", "bad \xff utf8"} {
		for _, pop := range []bool{false, true} {
			i := session.Info{ID: "sid_" + label, UserID: "u1", VaultID: "v1",
				CreatedAt: at, LastSeenAt: at.Add(time.Second), IdleExpiresAt: at.Add(time.Minute), ExpiresAt: at.Add(time.Hour)}
			i.Device.Label = label
			if pop {
				i.Device.PoPKey = []byte{1}
			}
			want, err := json.Marshal(struct {
				Session protocol.Session `json:"session"`
			}{sessionObject(i, "")})
			if err != nil {
				t.Fatal(err)
			}
			if got := appendSessionAnswer(nil, i); string(got) != string(want)+"\n" {
				t.Errorf("label %q pop %v:\n got %s\nwant %s", label, pop, got, want)
			}
		}
	}
}

func BenchmarkSessionAnswer(b *testing.B) {
	at := time.Now()
	i := session.Info{ID: "abcdefghijklmnopqrstuv", UserID: "u1", VaultID: "v1", CreatedAt: at, LastSeenAt: at, IdleExpiresAt: at, ExpiresAt: at}
	i.Device.Label = "Firefox on Linux"
	b.Run("hand", func(b *testing.B) {
		buf := make([]byte, 0, 512)
		for b.Loop() {
			buf = appendSessionAnswer(buf[:0], i)
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			_, _ = json.Marshal(struct {
				Session protocol.Session `json:"session"`
			}{sessionObject(i, "")})
		}
	})
}

// TestIntrospectionAnswerMatchesEncodingJSON: the same for the introspection answer, active
// and inactive, with empty and hostile fields.
func TestIntrospectionAnswerMatchesEncodingJSON(t *testing.T) {
	for _, in := range []Introspection{
		{Active: false},
		{Active: true, Sub: "u1", Sid: "s1", VaultID: "v1", Iat: 1, Exp: 1764810000, IdleExp: -5, TokenType: "sessiond"},
		{Active: true, Sub: `<"&>`, Sid: "\u2028", TokenType: "x\x00y"},
	} {
		want, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendIntrospection(nil, in); string(got) != string(want)+"\n" {
			t.Errorf("%+v:\n got %s\nwant %s", in, got, want)
		}
	}
}
