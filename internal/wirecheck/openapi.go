package wirecheck

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// API checks HTTP answers against docs/openapi.yaml: the status must be one the operation
// documents, the headers it marks required must be there and match their schemas, the media
// type must be one it lists, and a JSON body must match its schema (a response without
// content must have no body). The document says which listener serves a path
// (x-sessiond-listener, default public) and what answers outside its paths
// (x-sessiond-fallback): another method is 405, an unknown API path 404.
type API struct {
	paths                []apiPath
	fallback             map[string][]string // listener → path prefixes whose unknown paths answer notFound
	notAllowed, notFound *apiResponse

	mu      sync.Mutex
	watched map[string]string // host:port → listener
	seen    map[string]int    // "METHOD path-template status" → answers checked
}

type apiPath struct {
	template string
	listener string
	segs     []string                           // "" stands for a {parameter}
	ops      map[string]map[string]*apiResponse // method → status → response
}

type apiResponse struct {
	where   string // the response's place in the document, for messages
	headers []apiHeader
	content map[string]*jsonschema.Schema // media type → schema (nil: the body is not checked)
}

type apiHeader struct {
	name     string
	required bool
	schema   *jsonschema.Schema
}

var httpMethods = []string{"get", "head", "post", "put", "patch", "delete", "options"}

// apiLoader compiles one document: node follows local $refs, keeping the JSON pointer of where
// each value really is, so that the schema compiler is pointed at the schema itself.
type apiLoader struct {
	root map[string]any
	c    *jsonschema.Compiler
	url  string
}

// LoadOpenAPI reads an OpenAPI 3.1 document and compiles every response of every operation.
func LoadOpenAPI(path string) (*API, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	l := &apiLoader{url: "urn:sessiond:openapi"}
	var doc any
	if l.c, doc, err = compilerFor(raw, l.url); err != nil {
		return nil, fmt.Errorf("wirecheck: %s: %w", path, err)
	}
	if l.root, _ = doc.(map[string]any); l.root == nil {
		return nil, fmt.Errorf("wirecheck: %s is not an object", path)
	}
	a := &API{fallback: map[string][]string{}, watched: map[string]string{}, seen: map[string]int{}}
	paths, _ := l.root["paths"].(map[string]any)
	for template := range paths {
		p, err := l.path(template)
		if err != nil {
			return nil, err
		}
		a.paths = append(a.paths, p)
	}
	if len(a.paths) == 0 {
		return nil, fmt.Errorf("wirecheck: %s has no paths", path)
	}
	fb, _ := l.root["x-sessiond-fallback"].(map[string]any)
	if fb == nil {
		return nil, fmt.Errorf("wirecheck: %s has no x-sessiond-fallback", path)
	}
	for listener, prefixes := range asMap(fb["unknownPaths"]) {
		for _, p := range asSlice(prefixes) {
			a.fallback[listener] = append(a.fallback[listener], fmt.Sprint(p))
		}
	}
	if a.notAllowed, err = l.response("#/x-sessiond-fallback/methodNotAllowed"); err != nil {
		return nil, err
	}
	if a.notFound, err = l.response("#/x-sessiond-fallback/notFound"); err != nil {
		return nil, err
	}
	return a, nil
}

func asMap(v any) map[string]any { m, _ := v.(map[string]any); return m }
func asSlice(v any) []any        { s, _ := v.([]any); return s }

// escape makes a JSON pointer token of s (RFC 6901).
func escape(s string) string { return strings.NewReplacer("~", "~0", "/", "~1").Replace(s) }

// node returns the value at pointer ptr ("#/a/b"), following $ref until it is not one, and
// the pointer where it was found.
func (l *apiLoader) node(ptr string) (map[string]any, string, error) {
	for range 10 {
		var cur any = l.root
		for _, tok := range strings.Split(strings.TrimPrefix(ptr, "#/"), "/") {
			tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
			m, ok := cur.(map[string]any)
			if !ok {
				return nil, "", fmt.Errorf("wirecheck: %s does not exist", ptr)
			}
			if cur, ok = m[tok]; !ok {
				return nil, "", fmt.Errorf("wirecheck: %s does not exist", ptr)
			}
		}
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, "", fmt.Errorf("wirecheck: %s is not an object", ptr)
		}
		ref, isRef := m["$ref"].(string)
		if !isRef {
			return m, ptr, nil
		}
		ptr = ref
	}
	return nil, "", fmt.Errorf("wirecheck: $ref chain too long at %s", ptr)
}

func (l *apiLoader) path(template string) (apiPath, error) {
	ptr := "#/paths/" + escape(template)
	node, _, err := l.node(ptr)
	if err != nil {
		return apiPath{}, err
	}
	p := apiPath{template: template, listener: "public", ops: map[string]map[string]*apiResponse{}}
	if v, ok := node["x-sessiond-listener"].(string); ok {
		p.listener = v
	}
	for _, seg := range strings.Split(strings.TrimPrefix(template, "/"), "/") {
		if strings.HasPrefix(seg, "{") {
			seg = ""
		}
		p.segs = append(p.segs, seg)
	}
	for _, m := range httpMethods {
		opNode, ok := node[m].(map[string]any)
		if !ok {
			continue
		}
		p.ops[m] = map[string]*apiResponse{}
		for status := range asMap(opNode["responses"]) {
			r, err := l.response(ptr + "/" + m + "/responses/" + status)
			if err != nil {
				return apiPath{}, err
			}
			p.ops[m][status] = r
		}
	}
	return p, nil
}

func (l *apiLoader) response(ptr string) (*apiResponse, error) {
	node, at, err := l.node(ptr)
	if err != nil {
		return nil, err
	}
	r := &apiResponse{where: at}
	for name := range asMap(node["headers"]) {
		h, hat, err := l.node(at + "/headers/" + escape(name))
		if err != nil {
			return nil, err
		}
		s, err := l.c.Compile(l.url + hat + "/schema")
		if err != nil {
			return nil, fmt.Errorf("wirecheck: header %s of %s: %w", name, at, err)
		}
		req, _ := h["required"].(bool)
		r.headers = append(r.headers, apiHeader{name: http.CanonicalHeaderKey(name), required: req, schema: s})
	}
	if content := asMap(node["content"]); content != nil {
		r.content = map[string]*jsonschema.Schema{}
		for media := range content {
			r.content[media] = nil
			if media != "application/json" {
				continue // only JSON bodies are parsed; the others' media type is checked
			}
			s, err := l.c.Compile(l.url + at + "/content/" + escape(media) + "/schema")
			if err != nil {
				return nil, fmt.Errorf("wirecheck: %s: %w", at, err)
			}
			r.content[media] = s
		}
	}
	return r, nil
}

// Watch marks base (an http:// or https:// URL, or host:port) as a listener of the server:
// only answers from watched listeners are checked. listener is "public", "admin" or "metrics".
func (a *API) Watch(base, listener string) {
	if u, err := url.Parse(base); err == nil && u.Host != "" {
		base = u.Host
	}
	a.mu.Lock()
	a.watched[base] = listener
	a.mu.Unlock()
}

// match finds the path template for path on listener: the one with the most literal segments
// wins (/api/v1/sessions/revoke-others over /api/v1/sessions/{id}).
func (a *API) match(listener, path string) *apiPath {
	segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	var best *apiPath
	bestLit := -1
	for i := range a.paths {
		p := &a.paths[i]
		if p.listener != listener || len(p.segs) != len(segs) {
			continue
		}
		lit, ok := 0, true
		for j, s := range p.segs {
			switch {
			case s == "" && segs[j] != "":
			case s == segs[j]:
				lit++
			default:
				ok = false
			}
			if !ok {
				break
			}
		}
		if ok && lit > bestLit {
			best, bestLit = p, lit
		}
	}
	return best
}

// Check validates one answer of listener to method on path (without the query). It reports
// false when the document does not cover the path (the page's static files).
func (a *API) Check(listener, method, path string, status int, header http.Header, body []byte) (bool, error) {
	p := a.match(listener, path)
	key := ""
	var want *apiResponse
	if p != nil {
		m := strings.ToLower(method)
		ops, ok := p.ops[m]
		if !ok && m == "head" {
			ops, ok = p.ops["get"]
		}
		if ok {
			key = strings.ToUpper(m) + " " + p.template
			want = ops[strconv.Itoa(status)]
			if want == nil {
				want = ops[strconv.Itoa(status/100)+"XX"]
			}
			if want == nil {
				return true, fmt.Errorf("%s: status %d is not documented (documented: %s)", key, status, statuses(ops))
			}
		} else {
			key, want = method+" "+p.template+" (not allowed)", a.notAllowed
		}
	} else {
		covered := false
		for _, prefix := range a.fallback[listener] {
			covered = covered || strings.HasPrefix(path, prefix)
		}
		if !covered {
			return false, nil
		}
		key, want = method+" unknown path on "+listener, a.notFound
		if status == http.StatusMethodNotAllowed {
			want = a.notAllowed
		}
	}
	a.mu.Lock()
	a.seen[key+" "+strconv.Itoa(status)]++
	a.mu.Unlock()
	if err := want.check(header, body, method == http.MethodHead); err != nil {
		return true, fmt.Errorf("%s %d (%s): %w", key, status, want.where, err)
	}
	return true, nil
}

func statuses(ops map[string]*apiResponse) string {
	var s []string
	for k := range ops {
		s = append(s, k)
	}
	slices.Sort(s)
	return strings.Join(s, ", ")
}

func (r *apiResponse) check(header http.Header, body []byte, head bool) error {
	for _, h := range r.headers {
		v, ok := header[h.name]
		if !ok {
			if h.required {
				return fmt.Errorf("header %s is missing", h.name)
			}
			continue
		}
		for _, one := range v {
			if err := h.schema.Validate(one); err != nil {
				return fmt.Errorf("header %s: %q: %w", h.name, one, err)
			}
		}
	}
	if r.content == nil {
		if len(body) > 0 {
			return fmt.Errorf("a body of %d bytes where none is documented", len(body))
		}
		return nil
	}
	media, _, err := mime.ParseMediaType(header.Get("Content-Type"))
	if err != nil {
		return fmt.Errorf("Content-Type %q: %w", header.Get("Content-Type"), err)
	}
	s, ok := r.content[media]
	if !ok {
		return fmt.Errorf("Content-Type %s is not documented", media)
	}
	if s == nil || head {
		return nil
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("the body is not JSON: %w", err)
	}
	return s.Validate(inst)
}

// Seen returns how many answers were checked, by "METHOD path-template status".
func (a *API) Seen() map[string]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.seen)
}

// Operations lists every documented "METHOD path-template" (for coverage reports).
func (a *API) Operations() []string {
	var out []string
	for _, p := range a.paths {
		for m := range p.ops {
			out = append(out, strings.ToUpper(m)+" "+p.template)
		}
	}
	slices.Sort(out)
	return out
}

// Transport wraps base so that every answer from a watched listener is checked and passed to
// report with the result. The body is read whole and handed on unchanged; an event stream's
// body is not read (it does not end), a WebSocket's answer (101) is left to Checker.Transport.
func (a *API) Transport(base http.RoundTripper, report func(what string, err error)) http.RoundTripper {
	return roundTrip(func(r *http.Request) (*http.Response, error) {
		resp, err := base.RoundTrip(r)
		if err != nil || resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, err
		}
		a.mu.Lock()
		listener, ok := a.watched[r.URL.Host]
		a.mu.Unlock()
		if !ok {
			return resp, nil
		}
		var body []byte
		if media, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); media != "text/event-stream" {
			var readErr error
			body, readErr = io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			resp.Body = &replay{r: bytes.NewReader(body), err: readErr}
			if readErr != nil {
				return resp, nil // cut off: nothing to judge
			}
		}
		what := r.Method + " " + r.URL.Path
		if covered, err := a.Check(listener, r.Method, r.URL.Path, resp.StatusCode, resp.Header, body); covered {
			report(what, err)
		}
		return resp, nil
	})
}

// replay hands on a body read in advance, then the error that ended the read, if any.
type replay struct {
	r   *bytes.Reader
	err error
}

func (b *replay) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF && b.err != nil {
		err = b.err
	}
	return n, err
}

func (b *replay) Close() error { return nil }
