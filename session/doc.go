// Package session is the domain of sessiond: OPAQUE accounts, sessions and their lifecycle.
//
// It owns the rules (Policy), the secrets (Keys: OPAQUE key material, token-hashing and
// metadata-sealing keys) and the Manager that creates sessions after a successful OPAQUE login,
// validates tokens, records activity, rotates tokens, revokes and sweeps. It declares the small
// interfaces it consumes — Store (persistence; EventStore and KeyStore are optional
// extensions), Notifier (pushes to devices) and Clock — and imports only package protocol of
// the project's other packages.
//
// Concurrency: a Manager is safe for concurrent use by any number of goroutines. Its background
// work (coalesced activity writes, sweeping) runs only inside Run, which the caller starts once;
// constructors start no goroutines. The store is the authority: the Manager's validation cache
// is a hint bounded by a short TTL and invalidated by the Manager's own writes and by
// Invalidate (called when another node announces a change).
package session
