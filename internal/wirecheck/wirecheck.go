// Package wirecheck validates WebSocket frames against docs/asyncapi.yaml: the end-to-end tests
// check every frame the server sends them, so that the published contract cannot drift from
// the server unnoticed.
package wirecheck

import (
	"bytes"
	"encoding/json"
	"fmt"
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
	// The whole document as JSON, for the schema compiler.
	var tree any
	if err := yaml.Unmarshal(raw, &tree); err != nil {
		return nil, err
	}
	js, err := json.Marshal(tree)
	if err != nil {
		return nil, err
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
	if err != nil {
		return nil, err
	}
	const url = "urn:sessiond:asyncapi"
	c := jsonschema.NewCompiler()
	if err := c.AddResource(url, inst); err != nil {
		return nil, err
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
