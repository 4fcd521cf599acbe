package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// needNode returns the absolute path of web/, failing in CI and skipping locally when node or
// web/node_modules (npm ci in web/) is missing.
func needNode(t *testing.T) string {
	t.Helper()
	web, _ := filepath.Abs("../../web")
	_, nodeErr := exec.LookPath("node")
	if _, err := os.Stat(filepath.Join(web, "node_modules", "@serenity-kit", "opaque")); err != nil || nodeErr != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("node and web/node_modules are required in CI (npm ci in web/)")
		}
		t.Skip("node or web/node_modules missing; run `npm ci` in web/")
	}
	return web
}

// TestClientPackage runs the npm package's own tests (web/client/test, Node's test runner)
// against two real nodes: one with the default settings, one with proof of possession.
func TestClientPackage(t *testing.T) {
	web := needNode(t)
	plain := startNode(t, nil)
	pop := startNode(t, map[string]string{"SESSIOND_PROOF_OF_POSSESSION": "true"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// --test-force-exit: a failed assertion must not leave the run waiting on an open socket.
	cmd := exec.CommandContext(ctx, "node", "--test", "--test-force-exit", "--test-reporter=spec", "test/")
	cmd.Dir = filepath.Join(web, "client")
	cmd.Env = append(os.Environ(), "SESSIOND_URL="+plain.Base, "SESSIOND_POP_URL="+pop.Base, "NO_COLOR=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test web/client/test: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
