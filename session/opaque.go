package session

import (
	"crypto/hmac"
	"crypto/sha512"
	"fmt"

	"github.com/bytemare/ecc"
	"github.com/bytemare/opaque"

	"github.com/bytemare/opaque/message"
	"github.com/sessiond/sessiond/protocol"
)

// Argon2id parameters of the client-side key stretching (those of @serenity-kit/opaque 1.1.0).
// The server never runs them; it publishes them so clients can check and pin.
const (
	KSFName   = "argon2id"
	KSFTime   = 3
	KSFMemKiB = 65536
	KSFLanes  = 4
	KSFLength = 64
	KSFSalt   = "AAAAAAAAAAAAAAAAAAAAAA" // 16 zero bytes, base64url
	Suite     = "ristretto255-sha512"
)

// opaqueServer runs the server side of RFC 9807 with the protocol's fixed configuration:
// ristretto255/SHA-512, empty context, no explicit identities, credential id = user id.
type opaqueServer struct {
	conf     *opaque.Configuration
	server   *opaque.Server
	fakeKey  []byte
	fakePKs  [][]byte                   // encoded fake client public keys (see fakeKE2)
	fakeSize message.RegistrationRecord // sizes of a record, for fakes
}

// fakePublicKeys is how many fake client public keys are made at start. A fake record picks
// one by a keyed hash of the username, so that answering an unknown name costs no scalar
// multiplication more than a known one (that would time apart the two). The client public key
// never reaches the client; it only enters the server's half of the key exchange, which
// nobody without its private key can check, so sharing one among names reveals nothing.
const fakePublicKeys = 16

func newOPAQUE(k *Keys) (*opaqueServer, error) {
	conf := protocol.OPAQUE()
	srv, err := conf.Server()
	if err != nil {
		return nil, err
	}
	sk := ecc.Ristretto255Sha512.NewScalar()
	if err := sk.Decode(k.AKEPrivateKey); err != nil {
		return nil, fmt.Errorf("AKE private key: %w", err)
	}
	if !ecc.Ristretto255Sha512.Base().Multiply(sk).Equal(mustElement(k.AKEPublicKey)) {
		return nil, fmt.Errorf("AKE public key does not match the private key")
	}
	// The identity stays empty: both sides then use the public keys (serenity-kit's default).
	if err := srv.SetKeyMaterial(&opaque.ServerKeyMaterial{
		PrivateKey:     sk,
		PublicKeyBytes: k.AKEPublicKey,
		OPRFGlobalSeed: k.OPRFSeed,
	}); err != nil {
		return nil, err
	}
	fake, err := conf.GetFakeRecord([]byte("size probe"))
	if err != nil {
		return nil, err
	}
	g := ecc.Ristretto255Sha512
	pks := make([][]byte, fakePublicKeys)
	for i := range pks {
		m := hmac.New(sha512.New, k.FakeKey)
		m.Write([]byte("public key"))
		m.Write([]byte{0, byte(i)})
		pks[i] = g.Base().Multiply(g.HashToScalar(m.Sum(nil), []byte("sessiond-fake-record-v1"))).Encode()
	}
	return &opaqueServer{conf: conf, server: srv, fakeKey: k.FakeKey, fakePKs: pks, fakeSize: *fake.RegistrationRecord}, nil
}

func mustElement(b []byte) *ecc.Element {
	e := ecc.Ristretto255Sha512.NewElement()
	if err := e.Decode(b); err != nil {
		return ecc.Ristretto255Sha512.NewElement() // identity: never equal to a real public key
	}
	return e
}

// registrationResponse answers a client's registration request for credential id userID.
func (o *opaqueServer) registrationResponse(userID string, request []byte) ([]byte, error) {
	req, err := o.server.Deserialize.RegistrationRequest(request)
	if err != nil {
		return nil, fmt.Errorf("%w: invalid registration request", ErrBadInput)
	}
	resp, err := o.server.RegistrationResponse(req, []byte(userID), nil)
	if err != nil {
		return nil, fmt.Errorf("%w: invalid registration request", ErrBadInput)
	}
	return resp.Serialize(), nil
}

// checkRecord validates a registration record and returns its canonical encoding.
func (o *opaqueServer) checkRecord(record []byte) ([]byte, error) {
	rec, err := o.server.Deserialize.RegistrationRecord(record)
	if err != nil {
		return nil, fmt.Errorf("%w: invalid registration record", ErrBadInput)
	}
	return rec.Serialize(), nil
}

// loginOutput is what the server keeps between KE2 and KE3.
type loginOutput struct {
	clientMAC     []byte
	sessionSecret []byte
}

// ke2 answers KE1 for a stored record (credential id = userID).
func (o *opaqueServer) ke2(userID string, record []byte, ke1 []byte) ([]byte, loginOutput, error) {
	k1, err := o.server.Deserialize.KE1(ke1)
	if err != nil {
		return nil, loginOutput{}, fmt.Errorf("%w: invalid ke1", ErrBadInput)
	}
	rec, err := o.server.Deserialize.RegistrationRecord(record)
	if err != nil {
		return nil, loginOutput{}, fmt.Errorf("session: stored registration record is corrupt: %w", err)
	}
	return o.generateKE2(k1, &opaque.ClientRecord{RegistrationRecord: rec, CredentialIdentifier: []byte(userID)})
}

// fakeKE2 answers KE1 for an unknown username with a record derived from the username under the
// fake key, so repeated probes of one name meet the same OPRF key and record, as a real user's do.
// It does the work of a known username's answer: the record goes through the same decoding as
// a stored one, and its public key comes from the precomputed set (no scalar multiplication).
func (o *opaqueServer) fakeKE2(username string, ke1 []byte) ([]byte, loginOutput, error) {
	k1, err := o.server.Deserialize.KE1(ke1)
	if err != nil {
		return nil, loginOutput{}, fmt.Errorf("%w: invalid ke1", ErrBadInput)
	}
	derive := func(label string) []byte {
		m := hmac.New(sha512.New, o.fakeKey)
		m.Write([]byte(label))
		m.Write([]byte{0})
		m.Write([]byte(username))
		return m.Sum(nil)
	}
	pk := o.fakePKs[int(derive("public key")[0])%len(o.fakePKs)]
	record := make([]byte, 0, len(pk)+len(o.fakeSize.MaskingKey)+len(o.fakeSize.Envelope))
	record = append(record, pk...)
	record = append(record, derive("masking key")[:len(o.fakeSize.MaskingKey)]...)
	record = append(record, make([]byte, len(o.fakeSize.Envelope))...)
	rec, err := o.server.Deserialize.RegistrationRecord(record)
	if err != nil {
		return nil, loginOutput{}, fmt.Errorf("session: fake record: %w", err)
	}
	credID := derive("credential id")[:16]
	return o.generateKE2(k1, &opaque.ClientRecord{RegistrationRecord: rec, CredentialIdentifier: credID})
}

func (o *opaqueServer) generateKE2(k1 *message.KE1, rec *opaque.ClientRecord) ([]byte, loginOutput, error) {
	ke2, out, err := o.server.GenerateKE2(k1, rec)
	if err != nil {
		return nil, loginOutput{}, fmt.Errorf("%w: invalid ke1", ErrBadInput)
	}
	return ke2.Serialize(), loginOutput{clientMAC: out.ClientMAC, sessionSecret: out.SessionSecret}, nil
}

// finish verifies KE3 against the expected client MAC (constant time inside bytemare).
func (o *opaqueServer) finish(out loginOutput, ke3 []byte) error {
	k3, err := o.server.Deserialize.KE3(ke3)
	if err != nil {
		return fmt.Errorf("%w: invalid ke3", ErrBadInput)
	}
	if err := o.server.LoginFinish(k3, out.clientMAC); err != nil {
		return ErrAuthFailed
	}
	return nil
}
