// Package clientx is what the tests and the load tool need of the Go client beyond its public
// API: cheap key stretching (an account registered with it logs in only with it; the server's
// work is the same either way), connections without the subprotocol, and raw frames.
package clientx

import (
	"context"

	"github.com/coder/websocket"

	"github.com/sessiond/sessiond/client"
	"github.com/sessiond/sessiond/internal/clienthook"
)

// Cheap returns opts with minimal Argon2id parameters: for tests and load generation only.
func Cheap(opts client.Options) client.Options { return clienthook.Cheap(opts).(client.Options) }

// NoSubprotocol returns opts for a dial that does not offer the subprotocol.
func NoSubprotocol(opts client.Options) client.Options {
	return clienthook.NoSubprotocol(opts).(client.Options)
}

// SendRaw writes a raw frame on c (for tests of malformed input).
func SendRaw(ctx context.Context, c *client.Conn, typ websocket.MessageType, data []byte) error {
	return clienthook.SendRaw(c, ctx, typ == websocket.MessageBinary, data)
}
