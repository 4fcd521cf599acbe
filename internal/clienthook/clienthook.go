// Package clienthook carries the Go client's test hooks: package client fills these in when it
// initialises, and internal/clientx gives them types. They stay out of the client's public API.
package clienthook

import (
	"context"
)

// Set by package client.
var (
	// Cheap returns a copy of a client.Options with minimal key stretching.
	Cheap func(opts any) any
	// NoSubprotocol returns a copy of a client.Options that omits the subprotocol.
	NoSubprotocol func(opts any) any
	// SendRaw writes a raw frame (text when binary is false) on a *client.Conn.
	SendRaw func(conn any, ctx context.Context, binary bool, data []byte) error
)
