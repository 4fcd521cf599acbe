package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/sessiond/sessiond/session"
)

const adminUsage = `usage: sessiond admin [-url URL] [-key-file FILE] COMMAND [ARG]

Talks to a running node's admin API (SESSIOND_ADMIN_ADDR), authenticated by a token derived
from the deployment's key file, so that revocations reach the devices at once.

commands:
  token                  print the admin API token
  sessions USERNAME      list the user's live sessions (with address and user agent)
  revoke SESSION_ID      end one session (reason "admin")
  revoke-user USERNAME   end every session of the user
  delete-user USERNAME   delete the user and its vault; every session ends
  service create NAME    add a service client (an app backend that introspects tokens); its
                         secret is printed once and stored only as a hash
  service list           list the service clients
  service revoke ID      revoke a service client's secret
  rotate-keys            re-seal stored values under the key file's current keys (works on the
                         store directly: -key-file, -data-dir or -database-url; see docs/KEYS.md)
`

func admin(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sessiond admin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, adminUsage) }
	defURL := "http://127.0.0.1:8081"
	if a := getenv("SESSIOND_ADMIN_ADDR"); a != "" {
		defURL = "http://" + a
	}
	defKeys := getenv("SESSIOND_KEY_FILE")
	if defKeys == "" {
		dir := getenv("SESSIOND_DATA_DIR")
		if dir == "" {
			dir = "data"
		}
		defKeys = filepath.Join(dir, "keys.json")
	}
	base := fs.String("url", defURL, "admin API base URL ($SESSIOND_ADMIN_ADDR)")
	keyFile := fs.String("key-file", defKeys, "the deployment's key file ($SESSIOND_KEY_FILE)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errUsage
	}
	keys, err := session.LoadKeys(*keyFile)
	if err != nil {
		return fmt.Errorf("admin: key file %s: %w", *keyFile, err)
	}
	if fs.Arg(0) == "token" {
		fmt.Fprintln(stdout, keys.AdminToken())
		return nil
	}
	method, path, body, ok := adminRequest(fs.Args())
	if !ok {
		fs.Usage()
		return errUsage
	}
	return adminDo(ctx, strings.TrimRight(*base, "/")+path, method, body, keys.AdminToken(), stdout)
}

// adminRequest maps a command line to its admin API request.
func adminRequest(args []string) (method, path string, body []byte, ok bool) {
	arg := func(i int) string { return url.PathEscape(args[i]) }
	switch {
	case len(args) == 2 && args[0] == "sessions":
		return http.MethodGet, "/admin/v1/users/" + arg(1) + "/sessions", nil, true
	case len(args) == 2 && args[0] == "revoke":
		return http.MethodDelete, "/admin/v1/sessions/" + arg(1), nil, true
	case len(args) == 2 && args[0] == "revoke-user":
		return http.MethodDelete, "/admin/v1/users/" + arg(1) + "/sessions", nil, true
	case len(args) == 2 && args[0] == "delete-user":
		return http.MethodDelete, "/admin/v1/users/" + arg(1), nil, true
	case len(args) == 3 && args[0] == "service" && args[1] == "create":
		b, _ := json.Marshal(map[string]string{"name": args[2]})
		return http.MethodPost, "/admin/v1/services", b, true
	case len(args) == 2 && args[0] == "service" && args[1] == "list":
		return http.MethodGet, "/admin/v1/services", nil, true
	case len(args) == 3 && args[0] == "service" && args[1] == "revoke":
		return http.MethodDelete, "/admin/v1/services/" + arg(2), nil, true
	}
	return "", "", nil, false
}

// adminDo sends one admin API request and prints the answer.
func adminDo(ctx context.Context, url, method string, body []byte, token string, stdout io.Writer) error {
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, method, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("admin: is the node's admin API listening? %w", err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return errors.New("admin: " + resp.Status + ": " + strings.TrimSpace(string(out)))
	}
	if len(out) == 0 {
		fmt.Fprintln(stdout, "done")
		return nil
	}
	_, err = stdout.Write(out)
	return err
}
