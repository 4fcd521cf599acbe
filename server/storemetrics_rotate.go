package server

import (
	"context"

	"github.com/sessiond/sessiond/session"
)

// The key-rotation methods of session.Store, counted like the others (see storemetrics.go).

// SetKeyFingerprint implements session.Store.
func (st instrumentedStore) SetKeyFingerprint(ctx context.Context, fp string) error {
	err := st.next.SetKeyFingerprint(ctx, fp)
	st.observe("SetKeyFingerprint", err)
	return err
}

// SealedValues implements session.Store.
func (st instrumentedStore) SealedValues(ctx context.Context, table, afterID string, limit int) ([]session.SealedValue, error) {
	r0, err := st.next.SealedValues(ctx, table, afterID, limit)
	st.observe("SealedValues", err)
	return r0, err
}

// ResealValues implements session.Store.
func (st instrumentedStore) ResealValues(ctx context.Context, table string, updates []session.Reseal) (int, error) {
	r0, err := st.next.ResealValues(ctx, table, updates)
	st.observe("ResealValues", err)
	return r0, err
}

// RehashToken implements session.Store.
func (st instrumentedStore) RehashToken(ctx context.Context, id string, oldHash, newHash []byte) error {
	err := st.next.RehashToken(ctx, id, oldHash, newHash)
	st.observe("RehashToken", err)
	return err
}
