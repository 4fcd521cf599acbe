package session

import (
	"context"
	"errors"
	"fmt"

	"github.com/rs/zerolog"
)

// Key rotation. Token keys and seal keys rotate (Keys.Rotate); the OPAQUE material does not
// (see Keys.Rotate for why). After a rotation two things still depend on the older keys, and
// each is moved off them without stopping the service:
//
//   - sealed values (registration records, device records, event details) are re-sealed under
//     the current seal key by Rewrap, run by `sessiond admin rotate-keys`;
//   - token hashes cannot be recomputed without the token, which the server never keeps, so a
//     session found through an older token key is re-hashed under the current one when its
//     token is next used (Manager.rehashToken). Sessions never used again end by themselves,
//     at the latest one absolute timeout after the rotation.

// RewrapBatch is how many sealed values Rewrap reads, and re-seals in one transaction, at a time.
const RewrapBatch = 500

// RewrapCount is what Rewrap did to one column of sealed values.
type RewrapCount struct {
	Scanned  int // sealed values read
	Current  int // already under the current seal key
	Resealed int // re-sealed under the current seal key
	// Changed values were written by someone else between the read and the re-seal and were
	// left alone; another run re-seals them if they are still under an older key.
	Changed int
	// Unreadable counts, by the id of the key that sealed them ("" for malformed values), the
	// values that could not be opened (a key missing from the key file, or a value that does
	// not authenticate). They are left as they are.
	Unreadable map[string]int
}

// sealedAD is the associated data prefix of each column's values; the row id follows it.
var sealedAD = map[string]string{
	SealedUserRecords:  "record:",
	SealedDevices:      "device:",
	SealedEventDetails: "event:",
}

// Rewrap re-seals under keys.CurrentSealKey every sealed value of the store that another key
// sealed, in batches of RewrapBatch, and returns what it did per column (SealedTables). It is
// idempotent, and safe while nodes are serving: each re-seal is conditional on the value being
// unchanged, so a concurrent write is never overwritten (it is counted as Changed instead). On
// an error it returns the counts so far; running it again continues where it matters.
//
// Every node must be able to open values sealed under the current key before Rewrap runs (see
// Keys.Stage), or nodes still running the older key file cannot read what it re-sealed.
func Rewrap(ctx context.Context, st KeyStore, keys *Keys, log zerolog.Logger) (map[string]RewrapCount, error) {
	return rewrap(ctx, st, keys, log, RewrapBatch)
}

func rewrap(ctx context.Context, st KeyStore, keys *Keys, log zerolog.Logger, batch int) (map[string]RewrapCount, error) {
	out := make(map[string]RewrapCount, len(SealedTables))
	for _, table := range SealedTables {
		c, err := rewrapTable(ctx, st, keys, table, batch)
		out[table] = c
		if err != nil {
			return out, fmt.Errorf("session: rewrap %s: %w", table, err)
		}
		l := log.Info()
		if len(c.Unreadable) > 0 {
			l = log.Warn().Interface("unreadable", c.Unreadable)
		}
		l.Str("event", "rewrap").Str("table", table).Str("seal_key", keys.CurrentSealKey).
			Int("scanned", c.Scanned).Int("resealed", c.Resealed).Int("changed", c.Changed).
			Msg("sealed values re-sealed under the current key")
	}
	return out, nil
}

func rewrapTable(ctx context.Context, st KeyStore, keys *Keys, table string, batch int) (RewrapCount, error) {
	c := RewrapCount{Unreadable: map[string]int{}}
	ad := sealedAD[table]
	after := ""
	for {
		vals, err := st.SealedValues(ctx, table, after, batch)
		if err != nil {
			return c, err
		}
		var updates []Reseal
		for _, v := range vals {
			c.Scanned++
			nv, err := keys.reseal(v.Value, ad+v.ID)
			switch {
			case err != nil:
				c.Unreadable[SealKeyID(v.Value)]++
			case nv == nil:
				c.Current++
			default:
				updates = append(updates, Reseal{ID: v.ID, Old: v.Value, New: nv})
			}
		}
		if len(updates) > 0 {
			n, err := st.ResealValues(ctx, table, updates)
			if err != nil {
				return c, err
			}
			c.Resealed += n
			c.Changed += len(updates) - n
		}
		if len(vals) < batch {
			return c, nil
		}
		after = vals[len(vals)-1].ID
	}
}

// rehashToken moves session s, whose current token was found hashed under the older token key
// keyID (old), to the current token key (cur), so that the older key can be retired without
// ending the session. It returns s as it now is. A retired (rotated-away) token is not moved:
// it is no longer the session's token, and its row only detects reuse. Nor is a token found
// under the staged next key: that key is about to become current, and nodes already running
// it would only move the token back. A failed re-hash changes nothing (the token keeps
// working under the older key) and is tried again on the next use.
func (m *Manager) rehashToken(ctx context.Context, s Session, match TokenMatch, keyID string, old, cur TokenHash) Session {
	if match.Retired || keyID == m.keys.NextTokenKey {
		return s
	}
	err := m.store.RehashToken(ctx, s.ID, old[:], cur[:])
	switch {
	case err == nil:
		s.TokenHash = cur[:]
		m.log.Debug().Str("event", "token_rehashed").Str("session", m.keys.LogID(s.ID)).
			Str("from", keyID).Str("to", m.keys.CurrentTokenKey).Msg("token re-hashed under the current token key")
	case errors.Is(err, ErrConflict), errors.Is(err, ErrNotFound):
		// A refresh or another node's re-hash got there first: nothing left to do.
	default:
		m.log.Warn().Err(err).Str("session", m.keys.LogID(s.ID)).Msg("token re-hash failed; will retry on next use")
	}
	return s
}
