package server

import (
	"encoding/json"
	"testing"

	"github.com/sessiond/sessiond/protocol"
)

// FuzzDecodeInbound: any frame decodes to a message or a bad_request error, never a panic, and
// an id is only reported when the frame carried a string id.
func FuzzDecodeInbound(f *testing.F) {
	for _, s := range []string{
		`{"type":"login.start","id":"c1","username":"alice","ke1":"AAAA"}`,
		`{"type":"ping"}`, `{"id":5}`, `[]`, `null`, `"x"`, `{`, `{"type":"a","id":"b","username":7}`,
		`{"type":"session.resume","token":"sdt_x","extra":{"deep":[1,2,3]}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := DecodeInbound(data)
		if in.HasID {
			var probe struct {
				ID json.RawMessage `json:"id"`
			}
			if json.Unmarshal(data, &probe) != nil || len(probe.ID) == 0 || probe.ID[0] != '"' {
				t.Fatalf("id reported for a frame without a string id: %q", data)
			}
		}
		if err == nil && !json.Valid(data) {
			t.Fatalf("invalid JSON accepted: %q", data)
		}
		we, known := classify(err)
		if err != nil && (!known || we.code != protocol.CodeBadRequest) {
			t.Fatalf("decode error is not bad_request: %v", err)
		}
		// Every reply we could build for it is valid JSON.
		if out := encode("error", in.ID, protocol.ErrorBody{Code: "bad_request", Message: "x"}); !json.Valid(out) {
			t.Fatalf("encoded reply is not JSON: %q", out)
		}
	})
}
