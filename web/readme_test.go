package web

import (
	"os"
	"strings"
	"testing"
)

// TestReadmeSnippetsAreCompiled: the React and Svelte snippets of the package README are the
// files the example's strict type check compiles (examples/spa/src/frameworks), word for word
// but their header comments, so a snippet that stops compiling fails CI there.
func TestReadmeSnippetsAreCompiled(t *testing.T) {
	readme, err := os.ReadFile("client/README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"react.ts", "svelte.ts"} {
		src, err := os.ReadFile("../examples/spa/src/frameworks/" + f)
		if err != nil {
			t.Fatal(err)
		}
		var code []string
		for _, line := range strings.Split(strings.TrimSpace(string(src)), "\n") {
			if len(code) == 0 && strings.HasPrefix(line, "//") {
				continue // the header comment
			}
			code = append(code, line)
		}
		if !strings.Contains(string(readme), strings.Join(code, "\n")) {
			t.Errorf("client/README.md does not show examples/spa/src/frameworks/%s as it is", f)
		}
	}
}
