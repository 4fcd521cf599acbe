// Package archtest checks the shape of the code base: the dependency direction between our
// packages and the size of production functions and of the server's files.
package archtest

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/sessiond/sessiond"

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

// ourPackages lists every package of the module with its (non-test) imports and dependencies.
func ourPackages(t *testing.T) map[string]pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", "-deps=false", module+"/...")
	cmd.Dir = root(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string]pkg{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs[strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")] = p
	}
	return pkgs
}

// ours returns the module's packages among paths, relative to the module.
func ours(paths []string) []string {
	var out []string
	for _, p := range paths {
		if p == module || strings.HasPrefix(p, module+"/") {
			out = append(out, strings.TrimPrefix(strings.TrimPrefix(p, module), "/"))
		}
	}
	return out
}

func root(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestDependencyDirection: cmd → server → {session, hub, protocol}, cmd → store → session,
// client → protocol; protocol, hub and web import none of ours; server never imports store.
func TestDependencyDirection(t *testing.T) {
	allowed := map[string][]string{
		"protocol":            {},
		"hub":                 {},
		"web":                 {},
		"session":             {"protocol"},
		"store":               {"session"},
		"server":              {"protocol", "session", "hub"},
		"client":              {"protocol", "internal/clienthook"},
		"client/backend":      {},
		"internal/clienthook": {},
		"internal/clientx":    {"client", "internal/clienthook"},
		"internal/testclock":  {},
	}
	pkgs := ourPackages(t)
	for name, want := range allowed {
		p, ok := pkgs[name]
		if !ok {
			t.Errorf("package %s is missing", name)
			continue
		}
		for _, imp := range ours(p.Imports) {
			if !slices.Contains(want, imp) {
				t.Errorf("%s imports %s; it may import only %v of ours", name, imp, want)
			}
		}
	}
	// The Go client does not drag the domain in, not even indirectly.
	if deps := ours(pkgs["client"].Deps); slices.Contains(deps, "session") {
		t.Errorf("client depends on session: %v", deps)
	}
	for _, user := range []string{"server", "client"} {
		if !slices.Contains(ours(pkgs[user].Imports), "protocol") {
			t.Errorf("%s does not import protocol", user)
		}
	}
}

// TestFunctionAndFileSize: no production function over 80 lines (outside the load tool, the
// scripts and the settings table), and no file in server/ over 500 lines.
func TestFunctionAndFileSize(t *testing.T) {
	dir := root(t)
	exempt := map[string]bool{"cmd/sessiond/config.go settings": true} // a data table, one row per setting
	fset := token.NewFileSet()
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if d.IsDir() {
			if rel == "cmd/sessionbench" || rel == "scripts" || rel == "web" || (strings.HasPrefix(d.Name(), ".") && rel != ".") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.HasPrefix(rel, "server/") && strings.Count(string(data), "\n") > 500 {
			t.Errorf("%s has %d lines, over 500", rel, strings.Count(string(data), "\n"))
		}
		f, err := parser.ParseFile(fset, path, data, 0)
		if err != nil {
			return err
		}
		for _, decl := range f.Decls {
			fd, ok := decl.(*ast.FuncDecl)
			if !ok {
				continue
			}
			n := fset.Position(fd.End()).Line - fset.Position(fd.Pos()).Line + 1
			if n > 80 && !exempt[rel+" "+fd.Name.Name] {
				t.Errorf("%s: %s is %d lines, over 80", rel, fd.Name.Name, n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
