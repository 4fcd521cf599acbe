package session

// Internals for the external tests of key rotation (rotate_test.go).

// RewrapBatched is Rewrap with a chosen batch size.
var RewrapBatched = rewrap

// SealWith seals plaintext under k's current seal key with associated data ad.
func SealWith(k *Keys, plaintext []byte, ad string) []byte { return k.seal(plaintext, ad) }

// OpenWith opens a sealed value with k.
func OpenWith(k *Keys, sealed []byte, ad string) ([]byte, error) { return k.open(sealed, ad) }

// TokenHashUnder is the stored hash of token under k's token key keyID.
func TokenHashUnder(k *Keys, keyID, token string) []byte {
	raw, err := ParseToken(token)
	if err != nil {
		panic(err)
	}
	h := hashToken(k.TokenKeys[keyID], raw)
	return h[:]
}
