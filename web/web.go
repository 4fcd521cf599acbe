// Package web holds the demo page and the browser client package, embedded into the binary.
//
// static/ is the demo page; client/ is the npm package @sessiond/client, whose sessiond.js the
// page loads as it is (served at /sessiond.js), resolving the package names through an import
// map in index.html: "@sessiond/client" to ./sessiond.js and "@serenity-kit/opaque" to
// ./vendor/opaque.js. That bundle is built by `make web` from the lockfile and committed, so a
// plain `go build` or `go install` gives a working page; .ci/run rebuilds it and fails when it
// differs from the committed one.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"io/fs"
)

//go:embed static client/sessiond.js client/opaque-worker.js
var files embed.FS

// Static returns the page's file tree: static/, plus the client package's sessiond.js and
// opaque-worker.js.
func Static() fs.FS {
	sub, err := fs.Sub(files, "static")
	if err != nil {
		panic("web: embedded tree lacks static/: " + err.Error())
	}
	return overlay{FS: sub}
}

// overlay serves the client package's files next to the page's own.
type overlay struct{ fs.FS }

func (o overlay) Open(name string) (fs.File, error) {
	if name == "sessiond.js" || name == "opaque-worker.js" {
		return files.Open("client/" + name)
	}
	return o.FS.Open(name)
}

// InlineScriptHashes returns the CSP source expressions ('sha256-…') of the inline scripts of
// index.html (the import map), so the page's Content-Security-Policy can allow exactly them.
func InlineScriptHashes() []string {
	page, err := files.ReadFile("static/index.html")
	if err != nil {
		return nil
	}
	var out []string
	for {
		start := bytes.Index(page, []byte(`<script type="importmap">`))
		if start < 0 {
			return out
		}
		page = page[start+len(`<script type="importmap">`):]
		end := bytes.Index(page, []byte("</script>"))
		if end < 0 {
			return out
		}
		sum := sha256.Sum256(page[:end])
		out = append(out, "'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"'")
		page = page[end:]
	}
}
