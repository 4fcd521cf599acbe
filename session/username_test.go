package session

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalizeUsername(t *testing.T) {
	tests := []struct {
		in, want string
		bad      bool
	}{
		{in: "alice", want: "alice"},
		// Cherokee folds to its capitals (CaseFolding.txt), whichever case was typed.
		{in: "ꮌ", want: "Ꮌ"},
		{in: "Ꮌ", want: "Ꮌ"},
		{in: "ᏸᏰ", want: "ᏰᏰ"},
		{in: "Alice", want: "alice"},
		{in: "STRASSE", want: "strasse"},
		{in: "Straße", want: "strasse"},           // full case folding
		{in: "e\u0301clair", want: "\u00e9clair"}, // NFC
		{in: "\u00c9CLAIR", want: "\u00e9clair"},  // fold then NFC
		{in: "ΣΊΣΥΦΟΣ", want: "σίσυφοσ"},          // final sigma folds like any sigma
		{in: strings.Repeat("ж", 64), want: strings.Repeat("ж", 64)},
		{in: strings.Repeat("ж", 65), bad: true},
		{in: "", bad: true},
		{in: "a\tb", bad: true},
		{in: "a\u0000b", bad: true},
		{in: "a\u2028b", bad: true},
		{in: "\xff", bad: true},
		{in: "with space", want: "with space"},
	}
	for _, tt := range tests {
		got, err := NormalizeUsername(tt.in)
		if tt.bad {
			if !errors.Is(err, ErrBadInput) {
				t.Errorf("NormalizeUsername(%q) = %q, %v; want ErrBadInput", tt.in, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("NormalizeUsername(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestTokenShape(t *testing.T) {
	tok, raw := NewToken()
	if !strings.HasPrefix(tok, TokenPrefix) || len(raw) != 32 {
		t.Fatalf("token %q…, %d random bytes", tok[:6], len(raw))
	}
	back, err := ParseToken(tok)
	if err != nil || string(back) != string(raw) {
		t.Fatalf("ParseToken round trip: %v", err)
	}
	other, _ := NewToken()
	if other == tok {
		t.Fatal("two tokens are equal")
	}
	for _, bad := range []string{"", tok[:len(tok)-1], tok + "A", "xyz_" + tok[4:], tok[:10] + "=" + tok[11:], tok[:10] + "+" + tok[11:], tok[:10] + "\n" + tok[11:]} {
		if _, err := ParseToken(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseToken(%q) accepted", bad)
		}
	}
}

func TestDecodeB64Strict(t *testing.T) {
	for _, bad := range []string{"AAAA=", "AA AA", "AA\nAA", "AA+/", "A", "AB"} {
		if _, err := DecodeB64(bad); !errors.Is(err, ErrBadInput) {
			t.Errorf("DecodeB64(%q) accepted", bad)
		}
	}
	if b, err := DecodeB64("AQID"); err != nil || len(b) != 3 {
		t.Errorf("DecodeB64(AQID) = %v, %v", b, err)
	}
}

func TestKeysRoundTripAndSeal(t *testing.T) {
	k := GenerateKeys()
	data, err := k.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	k2, err := ParseKeys(data)
	if err != nil {
		t.Fatal(err)
	}
	if k.Fingerprint() != k2.Fingerprint() || k.Fingerprint() == GenerateKeys().Fingerprint() {
		t.Fatal("fingerprints do not identify key material")
	}
	sealed := k.seal([]byte("secret label"), "device:1")
	if strings.Contains(string(sealed), "secret label") {
		t.Fatal("sealed value contains the plaintext")
	}
	if pt, err := k2.open(sealed, "device:1"); err != nil || string(pt) != "secret label" {
		t.Fatalf("open: %q %v", pt, err)
	}
	if _, err := k2.open(sealed, "device:2"); err == nil {
		t.Fatal("a sealed value opened under another row's associated data")
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := k2.open(sealed, "device:1"); err == nil {
		t.Fatal("a tampered value opened")
	}
	for _, bad := range []string{`{}`, `{"version":1}`, `not json`} {
		if _, err := ParseKeys([]byte(bad)); err == nil {
			t.Errorf("ParseKeys(%s) accepted", bad)
		}
	}
}
