// Package web holds the demo page and the browser client module, embedded into the binary.
//
// The files under static/ are served as they are. The OPAQUE library for the browser
// (@serenity-kit/opaque) is bundled by `npm run build` (`make web`) into static/vendor/opaque.js,
// which is not committed: only static/vendor/README.md is. Without the bundle the binary still
// builds and the page says how to build it.
package web

import (
	"embed"
	"io/fs"
)

//go:embed static
var files embed.FS

// Static returns the page's file tree, rooted at static/.
func Static() fs.FS {
	sub, err := fs.Sub(files, "static")
	if err != nil {
		panic("web: embedded tree lacks static/: " + err.Error())
	}
	return sub
}
