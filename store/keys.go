package store

import (
	"crypto/subtle"
	"fmt"

	"github.com/sessiond/sessiond/session"
)

// sealedColumn maps a name of session.SealedTables to its table and column.
func sealedColumn(name string) (table, column string, err error) {
	switch name {
	case session.SealedUserRecords:
		return "users", "record", nil
	case session.SealedDevices:
		return "sessions", "device", nil
	case session.SealedEventDetails:
		return "events", "detail", nil
	}
	return "", "", fmt.Errorf("%w: unknown sealed table %q", session.ErrBadInput, name)
}

// checkReseals rejects a batch that could not be applied as one: an empty new value (sealed
// values are never empty) or a row named twice (which replacement would win?).
func checkReseals(updates []session.Reseal) error {
	seen := make(map[string]bool, len(updates))
	for _, u := range updates {
		if len(u.New) == 0 || len(u.Old) == 0 {
			return fmt.Errorf("%w: a re-seal needs the old and the new value", session.ErrBadInput)
		}
		if seen[u.ID] {
			return fmt.Errorf("%w: row %q named twice", session.ErrBadInput, u.ID)
		}
		seen[u.ID] = true
	}
	return nil
}

func checkRehash(oldHash, newHash []byte) error {
	if len(oldHash) == 0 || len(newHash) == 0 || subtle.ConstantTimeCompare(oldHash, newHash) == 1 {
		return fmt.Errorf("%w: token hashes empty or unchanged", session.ErrBadInput)
	}
	return nil
}
