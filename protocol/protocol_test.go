package protocol

import (
	"bytes"
	"testing"
	"time"
)

func TestDisconnects(t *testing.T) {
	for code, reconnect := range map[int]bool{
		CloseGoingAway: true, CloseTryAgainLater: true, 1006: true, // abnormal closure: unknown, reconnect
		CloseNormal: false, CloseExpired: false, CloseRevoked: false, CloseProtocolViolation: false, CloseRateLimited: false,
	} {
		if got := DisconnectFor(code); got.Reconnect != reconnect || got.Reason == "" {
			t.Errorf("DisconnectFor(%d) = %+v, want reconnect %v", code, got, reconnect)
		}
	}
	seen := map[int]bool{}
	for _, d := range Disconnects {
		if seen[d.Code] {
			t.Errorf("close code %d listed twice", d.Code)
		}
		seen[d.Code] = true
	}
}

func TestProofRoundTrip(t *testing.T) {
	key := DerivePoPKey([]byte("an OPAQUE session key"), "sid")
	if len(key) != 32 || bytes.Equal(key, DerivePoPKey([]byte("an OPAQUE session key"), "other")) {
		t.Fatal("the key does not depend on the session id")
	}
	ts := time.Now().UnixMilli()
	h := SignProof(key, "GET", "/api/v1/session", ts, nil)
	gotTS, sig, err := ParseProof(h)
	if err != nil || gotTS != ts || !bytes.Equal(sig, ProofMAC(key, "GET", "/api/v1/session", ts, nil)) {
		t.Fatalf("ParseProof(%q) = %d %x %v", h, gotTS, sig, err)
	}
	for _, bad := range []string{"", "t=1", "sig=AAAA", "t=x, sig=AAAA", "t=1, sig=!!", "garbage"} {
		if _, _, err := ParseProof(bad); err != ErrMalformedProof {
			t.Errorf("ParseProof(%q): %v", bad, err)
		}
	}
}

func TestKSFMatchesTheBrowserClient(t *testing.T) {
	o := KSF.ClientOptions()
	if len(o.KSFSalt) != 16 || o.KSFLength != 64 || len(o.KSFParameters) != 3 || o.KSFParameters[0] != 3 || o.KSFParameters[1] != 65536 || o.KSFParameters[2] != 4 {
		t.Fatalf("KSF options %+v differ from @serenity-kit/opaque's", o)
	}
}
