// Package store holds the implementations of [session.Backend] (session.Store with its
// EventStore and KeyStore extensions), the authority on users, sessions
// and vaults:
//
//   - [SQLite], the embedded default: one file in the data directory, opened with the pure-Go
//     modernc.org/sqlite driver (no cgo), in WAL mode.
//   - [Postgres], for deployments of several nodes sharing one database, over a pgx pool the
//     caller owns.
//
// Both apply their embedded SQL migrations (goose) when constructed, keep the same schema and
// pass the same conformance suite, so the rest of the program cannot tell them apart. Times are
// stored as unix milliseconds (BIGINT), so they come back truncated to the millisecond and in UTC;
// a zero [time.Time] is stored as NULL where the column allows it. Each session row also keeps its
// end_at, the earliest of its deadlines and its revocation, which is what the sweeper scans.
//
// Concurrency: both types are safe for concurrent use, and several processes may share one
// PostgreSQL database. Every method that changes more than one row does so in one transaction.
// SQLite serialises writers (each write transaction takes the write lock at BEGIN and waits up to
// a busy timeout for it); Postgres serialises the per-user operations that must not interleave
// (the session limit, revoke-all, record change, deletion) with a transaction-scoped advisory
// lock on the user id, and lets sweepers on several nodes skip each other's rows. A database that
// cannot be reached, or a lock that cannot be had in time, is reported as an error wrapping
// [session.ErrUnavailable]. Close never closes a pool it did not open.
//
// Files are split by concern and mirrored per backend, so that a pair can be diffed:
// sqlite.go / postgres.go (opening, transactions, errors), *_users.go, *_sessions.go,
// *_vaults.go, *_events.go ([session.EventStore]) and *_keys.go ([session.KeyStore]); what both
// share is in row.go (scanning, conversions, checks), events.go and keys.go.
package store
