package session

import (
	"crypto/hmac"
	"crypto/sha512"
	"testing"

	"github.com/bytemare/ecc"
	"github.com/bytemare/opaque"
)

func BenchmarkTmpParts(b *testing.B) {
	k := GenerateKeys()
	o, _ := newOPAQUE(k)
	c, _ := opaque.DefaultConfiguration().Client()
	req, _ := c.RegistrationInit([]byte("pw"))
	resp, _ := o.registrationResponse("uid", req.Serialize())
	rr, _ := c.Deserialize.RegistrationResponse(resp)
	rec, _, _ := c.RegistrationFinalize(rr, nil, nil, &opaque.ClientOptions{KSFSalt: make([]byte, 16), KSFLength: 64, KSFParameters: []uint64{1, 64, 1}})
	sealed := k.seal(rec.Serialize(), "record:uid")
	ke1, _ := c.GenerateKE1([]byte("pw"))
	ke1b := ke1.Serialize()
	b.Run("open", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			_, _ = k.open(sealed, "record:uid")
		}
	})
	b.Run("deserRecord", func(b *testing.B) {
		rb := rec.Serialize()
		for i := 0; i < b.N; i++ {
			_, _ = o.server.Deserialize.RegistrationRecord(rb)
		}
	})
	b.Run("fakeDerive", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			m := hmac.New(sha512.New, k.FakeKey)
			m.Write([]byte("public key"))
			x := m.Sum(nil)
			g := ecc.Ristretto255Sha512
			sk := g.HashToScalar(x, []byte("sessiond-fake-record-v1"))
			_ = g.Base().Multiply(sk)
		}
	})
	b.Run("hashToGroup", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			_ = ecc.Ristretto255Sha512.HashToGroup([]byte("x"), []byte("sessiond-fake-record-v1"))
		}
	})
	b.Run("ke2real", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			_, _, _ = o.ke2("uid", rec.Serialize(), ke1b)
		}
	})
	b.Run("ke2fake", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			_, _, _ = o.fakeKE2("nobody", ke1b)
		}
	})
}
