// Package server is sessiond's HTTP handler: the /ws WebSocket endpoint speaking the
// sessiond.v1 protocol, the /api/v1 JSON API behind bearer-token authentication, health and
// readiness probes, and the embedded demo page.
//
// Concurrency: a Server is safe for concurrent use. Each WebSocket connection has exactly one
// reader goroutine (started by the upgrade handler, which then returns so that net/http frees
// the request) and at most one writer goroutine, which runs while the outgoing queue is not
// empty: an idle connection holds one goroutine. Either ending stops the other. The reader
// handles each message on a short-lived goroutine and waits for it, so messages are handled in
// order and the long-lived reader keeps a small stack. Notices reach a connection through the hub as a non-blocking Deliver that queues them; a
// connection whose queue is full is closed with 1013 (reconnect and resume) rather than lose a
// revocation or expiry notice. Lifecycle prompts are driven by one timer per connection set to
// the session's next deadline, never by polling all sessions.
//
// Files: conn.go is the connection (accept, read loop, write queue, close paths, coalescing);
// commands.go the table of message types with the state each needs and the one dispatcher that
// answers errors, counts bad messages and applies the message rate; flows.go (register, login,
// resume) and account.go (the signed-in commands) the handlers; lifecycle.go the deadline timer,
// prompts and endings. domain.go declares what the server needs of the session domain.
package server
