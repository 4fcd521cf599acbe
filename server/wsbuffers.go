package server

import (
	"bufio"
	"net"
	"net/http"
)

// wsBufferSize is the size of a WebSocket connection's read buffer and of its write buffer.
// net/http hands a hijacked connection 4 KiB of each, which every idle device would keep for
// as long as it stays connected; with 512 bytes, 10,000 idle connections keep 70 MiB less. The
// protocol's client messages are small (a login step is a few hundred bytes); a larger message
// in either direction only takes a few more read or write calls.
const wsBufferSize = 512

// smallBuffers wraps the ResponseWriter of a WebSocket upgrade so that the hijacked connection
// gets wsBufferSize buffers instead of net/http's (coder/websocket uses the buffers Hijack
// returns).
type smallBuffers struct{ http.ResponseWriter }

// Unwrap gives http.ResponseController the wrapped writer.
func (w smallBuffers) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack implements http.Hijacker.
func (w smallBuffers) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	if brw.Reader.Buffered() > 0 || brw.Writer.Buffered() > 0 {
		// The client sent more right behind its upgrade request (or something is still to be
		// written): keep net/http's buffers, which hold it.
		return nc, brw, nil
	}
	return nc, bufio.NewReadWriter(bufio.NewReaderSize(nc, wsBufferSize), bufio.NewWriterSize(nc, wsBufferSize)), nil
}
