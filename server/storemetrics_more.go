package server

import (
	"context"
	"time"

	"github.com/sessiond/sessiond/session"
)

// The KeyStore and ServiceStore methods, counted like the others (see storemetrics.go).

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

// CreateServiceClient implements session.ServiceStore.
func (st instrumentedStore) CreateServiceClient(ctx context.Context, c session.ServiceClient) error {
	err := st.next.CreateServiceClient(ctx, c)
	st.observe("CreateServiceClient", err)
	return err
}

// ServiceClientBySecret implements session.ServiceStore.
func (st instrumentedStore) ServiceClientBySecret(ctx context.Context, hash []byte) (session.ServiceClient, error) {
	r0, err := st.next.ServiceClientBySecret(ctx, hash)
	st.observe("ServiceClientBySecret", err)
	return r0, err
}

// ListServiceClients implements session.ServiceStore.
func (st instrumentedStore) ListServiceClients(ctx context.Context) ([]session.ServiceClient, error) {
	r0, err := st.next.ListServiceClients(ctx)
	st.observe("ListServiceClients", err)
	return r0, err
}

// RevokeServiceClient implements session.ServiceStore.
func (st instrumentedStore) RevokeServiceClient(ctx context.Context, id string, at time.Time) error {
	err := st.next.RevokeServiceClient(ctx, id, at)
	st.observe("RevokeServiceClient", err)
	return err
}

// AppendChanges implements session.OutboxStore.
func (st instrumentedStore) AppendChanges(ctx context.Context, c []session.Change) error {
	err := st.next.AppendChanges(ctx, c)
	st.observe("AppendChanges", err)
	return err
}

// ChangesAfter implements session.OutboxStore.
func (st instrumentedStore) ChangesAfter(ctx context.Context, seq int64, limit int) ([]session.Change, error) {
	r0, err := st.next.ChangesAfter(ctx, seq, limit)
	st.observe("ChangesAfter", err)
	return r0, err
}

// LastChangeSeq implements session.OutboxStore.
func (st instrumentedStore) LastChangeSeq(ctx context.Context) (int64, error) {
	r0, err := st.next.LastChangeSeq(ctx)
	st.observe("LastChangeSeq", err)
	return r0, err
}

// DeleteChangesBefore implements session.OutboxStore.
func (st instrumentedStore) DeleteChangesBefore(ctx context.Context, before time.Time, limit int) (int, error) {
	r0, err := st.next.DeleteChangesBefore(ctx, before, limit)
	st.observe("DeleteChangesBefore", err)
	return r0, err
}
