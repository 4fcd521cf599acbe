package session

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"
)

// seal encrypts plaintext with AES-256-GCM under the current seal key. The associated data binds
// the ciphertext to its row (e.g. "device:"+sessionID), so a value cannot be moved to another
// row. Layout: len(keyID) | keyID | nonce | ciphertext+tag.
func (k *Keys) seal(plaintext []byte, ad string) []byte {
	id := k.CurrentSealKey
	aead := mustGCM(k.SealKeys[id])
	out := make([]byte, 0, 1+len(id)+aead.NonceSize()+len(plaintext)+aead.Overhead())
	out = append(out, byte(len(id)))
	out = append(out, id...)
	nonce := random(aead.NonceSize())
	out = append(out, nonce...)
	return aead.Seal(out, nonce, plaintext, []byte(ad))
}

// open decrypts a value made by seal, with whichever known key sealed it.
func (k *Keys) open(sealed []byte, ad string) ([]byte, error) {
	if len(sealed) < 1 || len(sealed) < 1+int(sealed[0]) {
		return nil, fmt.Errorf("session: sealed value is truncated")
	}
	id := string(sealed[1 : 1+int(sealed[0])])
	key, ok := k.SealKeys[id]
	if !ok {
		return nil, fmt.Errorf("session: sealed under unknown key %q", id)
	}
	aead := mustGCM(key)
	rest := sealed[1+len(id):]
	if len(rest) < aead.NonceSize()+aead.Overhead() {
		return nil, fmt.Errorf("session: sealed value is truncated")
	}
	pt, err := aead.Open(nil, rest[:aead.NonceSize()], rest[aead.NonceSize():], []byte(ad))
	if err != nil {
		return nil, fmt.Errorf("session: sealed value does not authenticate")
	}
	return pt, nil
}

// SealKeyID returns the id of the key that sealed a value ("" when malformed).
func SealKeyID(sealed []byte) string {
	if len(sealed) < 1 || len(sealed) < 1+int(sealed[0]) {
		return ""
	}
	return string(sealed[1 : 1+int(sealed[0])])
}

func mustGCM(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic("session: bad seal key length") // ParseKeys checked every key's length
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic("session: " + err.Error())
	}
	return aead
}

// reseal seals the value again under the current seal key with the same associated data, for
// a key rotation. It returns nil, nil when the value is already under the current key, and the
// error of open when it cannot be opened.
func (k *Keys) reseal(sealed []byte, ad string) ([]byte, error) {
	if SealKeyID(sealed) == k.CurrentSealKey {
		return nil, nil
	}
	pt, err := k.open(sealed, ad)
	if err != nil {
		return nil, err
	}
	return k.seal(pt, ad), nil
}
