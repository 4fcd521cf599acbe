package protocol

import "github.com/bytemare/opaque"

// OPAQUE is the protocol's OPAQUE configuration (RFC 9807): ristretto255, SHA-512, and on the
// client Argon2id key stretching with KSF's parameters. The server never runs the KSF.
func OPAQUE() *opaque.Configuration { return opaque.DefaultConfiguration() }

// KSF are the Argon2id parameters clients stretch the password with: those of
// @serenity-kit/opaque 1.1.0 (t=3, 64 MiB, p=4, 16 zero bytes of salt, 64-byte output), so that
// accounts made in one client log in from any other.
var KSF = KSFParams{Time: 3, MemoryKiB: 65536, Threads: 4, SaltLen: 16, KeyLen: 64}

// KSFParams are Argon2id parameters.
type KSFParams struct {
	Time, MemoryKiB, Threads uint64
	SaltLen, KeyLen          int
}

// ClientOptions are bytemare/opaque's client options for these parameters.
func (p KSFParams) ClientOptions() *opaque.ClientOptions {
	return &opaque.ClientOptions{KSFSalt: make([]byte, p.SaltLen), KSFLength: p.KeyLen,
		KSFParameters: []uint64{p.Time, p.MemoryKiB, p.Threads}}
}
