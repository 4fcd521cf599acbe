package server

import (
	"context"
	"time"

	"github.com/sessiond/sessiond/session"
)

// The KeyStore and ServiceStore methods, counted like the others (see storemetrics.go).

// SetKeyFingerprint implements session.Store.
func (st instrumentedStore) SetKeyFingerprint(ctx context.Context, fp string) error {
	start := time.Now()
	err := st.next.SetKeyFingerprint(ctx, fp)
	st.observe(start, "SetKeyFingerprint", err)
	return err
}

// SealedValues implements session.Store.
func (st instrumentedStore) SealedValues(ctx context.Context, table, afterID string, limit int) ([]session.SealedValue, error) {
	start := time.Now()
	r0, err := st.next.SealedValues(ctx, table, afterID, limit)
	st.observe(start, "SealedValues", err)
	return r0, err
}

// ResealValues implements session.Store.
func (st instrumentedStore) ResealValues(ctx context.Context, table string, updates []session.Reseal) (int, error) {
	start := time.Now()
	r0, err := st.next.ResealValues(ctx, table, updates)
	st.observe(start, "ResealValues", err)
	return r0, err
}

// RehashToken implements session.Store.
func (st instrumentedStore) RehashToken(ctx context.Context, id string, oldHash, newHash []byte) error {
	start := time.Now()
	err := st.next.RehashToken(ctx, id, oldHash, newHash)
	st.observe(start, "RehashToken", err)
	return err
}

// CreateServiceClient implements session.ServiceStore.
func (st instrumentedStore) CreateServiceClient(ctx context.Context, c session.ServiceClient) error {
	start := time.Now()
	err := st.next.CreateServiceClient(ctx, c)
	st.observe(start, "CreateServiceClient", err)
	return err
}

// ServiceClientBySecret implements session.ServiceStore.
func (st instrumentedStore) ServiceClientBySecret(ctx context.Context, hash []byte) (session.ServiceClient, error) {
	start := time.Now()
	r0, err := st.next.ServiceClientBySecret(ctx, hash)
	st.observe(start, "ServiceClientBySecret", err)
	return r0, err
}

// ListServiceClients implements session.ServiceStore.
func (st instrumentedStore) ListServiceClients(ctx context.Context) ([]session.ServiceClient, error) {
	start := time.Now()
	r0, err := st.next.ListServiceClients(ctx)
	st.observe(start, "ListServiceClients", err)
	return r0, err
}

// RevokeServiceClient implements session.ServiceStore.
func (st instrumentedStore) RevokeServiceClient(ctx context.Context, id string, at time.Time) error {
	start := time.Now()
	err := st.next.RevokeServiceClient(ctx, id, at)
	st.observe(start, "RevokeServiceClient", err)
	return err
}

// AppendChanges implements session.OutboxStore.
func (st instrumentedStore) AppendChanges(ctx context.Context, c []session.Change) error {
	start := time.Now()
	err := st.next.AppendChanges(ctx, c)
	st.observe(start, "AppendChanges", err)
	return err
}

// ChangesAfter implements session.OutboxStore.
func (st instrumentedStore) ChangesAfter(ctx context.Context, seq int64, limit int) ([]session.Change, error) {
	start := time.Now()
	r0, err := st.next.ChangesAfter(ctx, seq, limit)
	st.observe(start, "ChangesAfter", err)
	return r0, err
}

// LastChangeSeq implements session.OutboxStore.
func (st instrumentedStore) LastChangeSeq(ctx context.Context) (int64, error) {
	start := time.Now()
	r0, err := st.next.LastChangeSeq(ctx)
	st.observe(start, "LastChangeSeq", err)
	return r0, err
}

// DeleteChangesBefore implements session.OutboxStore.
func (st instrumentedStore) DeleteChangesBefore(ctx context.Context, before time.Time, limit int) (int, error) {
	start := time.Now()
	r0, err := st.next.DeleteChangesBefore(ctx, before, limit)
	st.observe(start, "DeleteChangesBefore", err)
	return r0, err
}
