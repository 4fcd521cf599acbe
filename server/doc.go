// Package server is sessiond's HTTP handler: the /ws WebSocket endpoint speaking the
// sessiond.v1 protocol, the /api/v1 JSON API behind bearer-token authentication, health and
// readiness probes, and the embedded demo page.
//
// Concurrency: a Server is safe for concurrent use. Each WebSocket connection has exactly one
// reader (the handler goroutine) and one writer goroutine; either ending stops the other.
// Notices reach a connection through the hub as a non-blocking Deliver that queues them; a
// connection whose queue is full is closed with 1013 (reconnect and resume) rather than lose a
// revocation or expiry notice. Lifecycle prompts are driven by one timer per connection set to
// the session's next deadline, never by polling all sessions.
package server
