package session

import (
	"context"
	"errors"
	"testing"
)

// FuzzParseToken: the parser accepts exactly prefix + 43 canonical base64url characters.
func FuzzParseToken(f *testing.F) {
	tok, _ := NewToken()
	f.Add(tok)
	f.Add("sdt_")
	f.Add("sdt_" + "A=")
	f.Fuzz(func(t *testing.T, s string) {
		raw, err := ParseToken(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error is not ErrInvalid: %v", err)
			}
			return
		}
		if len(raw) != 32 || TokenPrefix+EncodeB64(raw) != s {
			t.Fatalf("accepted a non-canonical token %q", s)
		}
	})
}

// FuzzNormalizeUsername: normalisation never panics and is idempotent.
func FuzzNormalizeUsername(f *testing.F) {
	for _, s := range []string{"alice", "Straße", "ΣΊΣΥΦΟΣ", "e\u0301", "\xff", "", "ꮌ", "Ꮌ", "ᏸ"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := NormalizeUsername(s)
		if err != nil {
			if !errors.Is(err, ErrBadInput) {
				t.Fatalf("error is not ErrBadInput: %v", err)
			}
			return
		}
		n2, err := NormalizeUsername(n)
		if err != nil || n2 != n {
			t.Fatalf("not idempotent: %q -> %q -> %q (%v)", s, n, n2, err)
		}
	})
}

// fuzzServer is an OPAQUE server with fresh keys for the message fuzzers.
func fuzzServer(f *testing.F) *opaqueServer {
	o, err := newOPAQUE(GenerateKeys())
	if err != nil {
		f.Fatal(err)
	}
	return o
}

// FuzzOPAQUEMessages feeds arbitrary bytes to every OPAQUE message the server decodes:
// registration requests and records, KE1 (real and fake records) and KE3. Each is either
// answered or refused with ErrBadInput / ErrAuthFailed; nothing panics.
func FuzzOPAQUEMessages(f *testing.F) {
	o := fuzzServer(f)
	f.Add([]byte{}, uint8(0))
	f.Add(make([]byte, 32), uint8(1))
	f.Add(make([]byte, 96), uint8(2))
	f.Add(make([]byte, 192), uint8(3))
	f.Add(make([]byte, 64), uint8(4))
	_ = context.Background()
	f.Fuzz(func(t *testing.T, data []byte, which uint8) {
		var err error
		switch which % 5 {
		case 0:
			_, err = o.registrationResponse("user", data)
		case 1:
			_, err = o.checkRecord(data)
		case 2:
			_, _, err = o.fakeKE2("someone", data)
		case 3:
			_, err = o.checkRecord(data)
			if err == nil {
				_, _, err = o.ke2("user", data, data)
			}
		case 4:
			err = o.finish(loginOutput{clientMAC: make([]byte, 64)}, data)
		}
		if err != nil && !errors.Is(err, ErrBadInput) && !errors.Is(err, ErrAuthFailed) {
			t.Fatalf("unexpected error kind: %v", err)
		}
	})
}
