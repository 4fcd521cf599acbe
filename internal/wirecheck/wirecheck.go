// Package wirecheck validates what the server sends against its published contract: WebSocket
// frames against docs/asyncapi.yaml (Checker) and HTTP answers against docs/openapi.yaml (API).
// The end-to-end tests check everything they receive through the HTTP transport their clients
// use, so that neither document can drift from the server unnoticed.
package wirecheck

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"
)

// Checker holds the compiled payload schema of every message the server sends, by type.
type Checker struct {
	byType map[string]*jsonschema.Schema
}

// Load reads an AsyncAPI 3 document and compiles the messages of its operation with action
// "send" (the server's).
func Load(path string) (*Checker, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Operations map[string]struct {
			Action   string `yaml:"action"`
			Messages []struct {
				Ref string `yaml:"$ref"`
			} `yaml:"messages"`
		} `yaml:"operations"`
		Components struct {
			Messages map[string]struct {
				Name    string `yaml:"name"`
				Payload struct {
					Ref string `yaml:"$ref"`
				} `yaml:"payload"`
			} `yaml:"messages"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("wirecheck: %s: %w", path, err)
	}
	const url = "urn:sessiond:asyncapi"
	c, _, err := compilerFor(raw, url)
	if err != nil {
		return nil, fmt.Errorf("wirecheck: %s: %w", path, err)
	}
	ch := &Checker{byType: map[string]*jsonschema.Schema{}}
	for _, op := range doc.Operations {
		if op.Action != "send" {
			continue
		}
		for _, m := range op.Messages {
			key := m.Ref[len("#/channels/ws/messages/"):]
			msg, ok := doc.Components.Messages[key]
			if !ok {
				return nil, fmt.Errorf("wirecheck: message %q is not in components.messages", key)
			}
			s, err := c.Compile(url + msg.Payload.Ref)
			if err != nil {
				return nil, fmt.Errorf("wirecheck: %s: %w", msg.Name, err)
			}
			ch.byType[msg.Name] = s
		}
	}
	if len(ch.byType) == 0 {
		return nil, fmt.Errorf("wirecheck: %s names no message the server sends", path)
	}
	return ch, nil
}

// compilerFor loads a YAML document as a resource of a schema compiler at url (with format
// assertions: a time must be one), so that schemas inside it can be compiled by JSON pointer;
// it also returns the document as the compiler sees it.
func compilerFor(raw []byte, url string) (*jsonschema.Compiler, any, error) {
	var tree any
	if err := yaml.Unmarshal(raw, &tree); err != nil {
		return nil, nil, err
	}
	js, err := json.Marshal(tree)
	if err != nil {
		return nil, nil, err
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
	if err != nil {
		return nil, nil, err
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource(url, inst); err != nil {
		return nil, nil, err
	}
	return c, inst, nil
}

// Check validates one frame the server sent.
func (c *Checker) Check(frame []byte) error {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(frame))
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	obj, _ := inst.(map[string]any)
	typ, _ := obj["type"].(string)
	s, ok := c.byType[typ]
	if !ok {
		return fmt.Errorf("type %q is not a message the server sends in docs/asyncapi.yaml", typ)
	}
	if err := s.Validate(inst); err != nil {
		return fmt.Errorf("%s: %w", typ, err)
	}
	return nil
}

// Transport wraps base so that every WebSocket opened through it is watched: the body of a 101
// answer is the connection itself (coder/websocket reads and writes through it), and each text
// message the server sends on it is checked, then passed to report with the result.
func (c *Checker) Transport(base http.RoundTripper, report func(frame []byte, err error)) http.RoundTripper {
	return roundTrip(func(r *http.Request) (*http.Response, error) {
		resp, err := base.RoundTrip(r)
		if err == nil && resp.StatusCode == http.StatusSwitchingProtocols {
			if rwc, ok := resp.Body.(io.ReadWriteCloser); ok {
				resp.Body = &tap{ReadWriteCloser: rwc, onMessage: func(m []byte) { report(m, c.Check(m)) }}
			}
		}
		return resp, err
	})
}

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// tap reads the server's side of a WebSocket as it goes by: frames (RFC 6455 §5.2; the
// server's are never masked, but a mask is skipped all the same), text messages reassembled
// from their continuation frames.
type tap struct {
	io.ReadWriteCloser
	onMessage func([]byte)
	buf       []byte // bytes of the frame not complete yet
	msg       []byte // the text message being reassembled
	inText    bool
}

func (t *tap) Read(p []byte) (int, error) {
	n, err := t.ReadWriteCloser.Read(p)
	t.buf = append(t.buf, p[:n]...)
	for t.frame() {
	}
	return n, err
}

// frame consumes one complete frame from buf, if there is one.
func (t *tap) frame() bool {
	b := t.buf
	if len(b) < 2 {
		return false
	}
	fin, op, masked := b[0]&0x80 != 0, b[0]&0x0f, b[1]&0x80 != 0
	n, hdr := uint64(b[1]&0x7f), 2
	switch n {
	case 126:
		if len(b) < 4 {
			return false
		}
		n, hdr = uint64(binary.BigEndian.Uint16(b[2:4])), 4
	case 127:
		if len(b) < 10 {
			return false
		}
		n, hdr = binary.BigEndian.Uint64(b[2:10]), 10
	}
	if masked {
		hdr += 4
	}
	if uint64(len(b)-hdr) < n {
		return false
	}
	payload := b[hdr : hdr+int(n)]
	switch {
	case op == 1: // text
		t.msg, t.inText = append(t.msg[:0], payload...), true
	case op == 0 && t.inText: // continuation
		t.msg = append(t.msg, payload...)
	}
	if fin && (op == 1 || op == 0) && t.inText {
		t.onMessage(append([]byte(nil), t.msg...))
		t.inText = false
	}
	t.buf = append(t.buf[:0], b[hdr+int(n):]...)
	return true
}
