package main

import (
	"context"
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
	cmd, arg := fs.Arg(0), fs.Arg(1)
	if cmd == "token" {
		fmt.Fprintln(stdout, keys.AdminToken())
		return nil
	}
	if arg == "" || fs.NArg() > 2 {
		fs.Usage()
		return errUsage
	}
	var method, path string
	switch cmd {
	case "sessions":
		method, path = http.MethodGet, "/admin/v1/users/"+url.PathEscape(arg)+"/sessions"
	case "revoke":
		method, path = http.MethodDelete, "/admin/v1/sessions/"+url.PathEscape(arg)
	case "revoke-user":
		method, path = http.MethodDelete, "/admin/v1/users/"+url.PathEscape(arg)+"/sessions"
	case "delete-user":
		method, path = http.MethodDelete, "/admin/v1/users/"+url.PathEscape(arg)
	default:
		fs.Usage()
		return errUsage
	}
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, method, strings.TrimRight(*base, "/")+path, nil)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+keys.AdminToken())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("admin: is the node's admin API listening at %s? %w", *base, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return errors.New("admin: " + resp.Status + ": " + strings.TrimSpace(string(body)))
	}
	if len(body) == 0 {
		fmt.Fprintln(stdout, "done")
		return nil
	}
	_, err = stdout.Write(body)
	return err
}
