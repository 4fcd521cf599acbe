package main

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"
)

// nginxConf is a complete nginx configuration: an application (upstream) behind nginx, every
// request authorised by sessiond's forward-auth endpoint first (auth_request), the user id passed
// on to the application. examples/nginx/sessiond.conf is the same for production.
const nginxConf = `daemon off;
worker_processes 1;
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/error.log warn;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path {{.Dir}}/body;
  proxy_temp_path {{.Dir}}/proxy;
  fastcgi_temp_path {{.Dir}}/fastcgi;
  uwsgi_temp_path {{.Dir}}/uwsgi;
  scgi_temp_path {{.Dir}}/scgi;
  server {
    listen 127.0.0.1:{{.Port}};
    location / {
      auth_request /_sessiond;
      auth_request_set $sessiond_user $upstream_http_x_sessiond_user_id;
      proxy_set_header X-User-Id $sessiond_user;
      proxy_pass http://{{.App}};
    }
    location = /_sessiond {
      internal;
      proxy_pass http://{{.Sessiond}}/api/v1/forward-auth;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }
  }
}
`

// startNginx runs nginx (Debian's package) with nginxConf on a free loopback port and returns
// its base URL. Without nginx the test fails in CI and is skipped elsewhere.
func startNginx(t *testing.T, sessiond, app string) string {
	t.Helper()
	bin := proxyBinary(t, "nginx", "nginx-light", "/usr/sbin/nginx", "/usr/local/sbin/nginx")
	dir := t.TempDir()
	port := freeAddr(t)[len("127.0.0.1:"):]
	var conf bytes.Buffer
	if err := template.Must(template.New("nginx").Parse(nginxConf)).Execute(&conf, map[string]string{
		"Dir": dir, "Port": port, "App": strings.TrimPrefix(app, "http://"), "Sessiond": strings.TrimPrefix(sessiond, "http://"),
	}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, conf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	// Output to a file, not a pipe: nginx's worker outlives a killed master and would hold a
	// pipe open. SIGTERM makes the master stop its workers.
	cmd := exec.Command(bin, "-c", path, "-p", dir, "-e", filepath.Join(dir, "error.log"))
	return runProxy(t, "nginx", cmd, dir, port)
}

// proxyBinary finds a proxy's executable on PATH or at one of paths (sbin is not always on
// PATH); without it the test fails in CI and is skipped elsewhere.
func proxyBinary(t *testing.T, name, pkg string, paths ...string) string {
	t.Helper()
	if bin, err := exec.LookPath(name); err == nil {
		return bin
	}
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("the forward-auth test needs %s (apt-get install %s)", name, pkg)
	}
	t.Skipf("%s not installed", name)
	return ""
}

// runProxy starts a proxy process with its output in dir/out.log, stops it with SIGTERM at
// cleanup, and waits until it answers on port.
func runProxy(t *testing.T, name string, cmd *exec.Cmd, dir, port string) string {
	t.Helper()
	logf, err := os.Create(filepath.Join(dir, "out.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
		}
	})
	base := "http://127.0.0.1:" + port
	if !waitFor(ctxT(t), func() bool {
		resp, err := http.Get(base + "/")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	}) {
		errLog, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		out, _ := os.ReadFile(filepath.Join(dir, "out.log"))
		t.Fatalf("%s did not start: %s %s", name, out, errLog)
	}
	return base
}

// TestForwardAuthNginx: a real nginx in front of an application asks sessiond about every
// request. A live token reaches the application with the user's id; no token, a garbage one, a
// logged-out, a revoked (within one request, no cache window) and an expired one get 401 from
// nginx.
func TestForwardAuthNginx(t *testing.T) {
	n, app := forwardAuthNode(t)
	forwardAuthFlow(t, n, startNginx(t, n.Base, app))
}

// TestForwardAuthCaddy: the same behind Caddy's forward_auth (examples/caddy).
func TestForwardAuthCaddy(t *testing.T) {
	n, app := forwardAuthNode(t)
	forwardAuthFlow(t, n, startCaddy(t, n.Base, app))
}

// forwardAuthNode is a node trusting the local proxy, with a 3 s idle timeout, and an
// application that answers with the user id the proxy passed on.
func forwardAuthNode(t *testing.T) (*node, string) {
	t.Helper()
	n := startNode(t, map[string]string{"SESSIOND_TRUSTED_PROXIES": "127.0.0.1",
		"SESSIOND_IDLE_TIMEOUT": "3s", "SESSIOND_REFRESH_LEAD": "1s"})
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-User-Id")
		if id == "" {
			id = r.Header.Get("X-Sessiond-User-Id")
		}
		fmt.Fprintf(w, "hello %s", id)
	}))
	t.Cleanup(app.Close)
	return n, app.URL
}

func forwardAuthFlow(t *testing.T, n *node, front string) {
	ctx := ctxT(t)
	get := func(token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, front+"/orders?page=2", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body bytes.Buffer
		_, _ = body.ReadFrom(resp.Body)
		return resp.StatusCode, body.String()
	}
	name, uid := account(t, n, "proxied", "pw")
	owner, own := loginOn(t, n, name, "pw", "owner")
	if code, body := get(own.Token); code != 200 || body != "hello "+uid {
		t.Fatalf("a live token through nginx: %d %q, want 200 with the user id", code, body)
	}
	for what, tok := range map[string]string{"no token": "", "a garbage token": "sdt_" + strings.Repeat("A", 43)} {
		if code, _ := get(tok); code != http.StatusUnauthorized {
			t.Fatalf("%s through nginx: %d, want 401", what, code)
		}
	}
	// Revoked from another device: refused by the very next request.
	_, other := loginOn(t, n, name, "pw", "other")
	if code, _ := get(other.Token); code != 200 {
		t.Fatalf("the other device before its revocation: %d", code)
	}
	if _, err := owner.Revoke(ctx, other.ID); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(other.Token); code != http.StatusUnauthorized {
		t.Fatalf("a token revoked from another device, next request: %d, want 401", code)
	}
	// Logged out.
	if err := owner.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(own.Token); code != http.StatusUnauthorized {
		t.Fatalf("a logged-out token: %d, want 401", code)
	}
	// Expired: idle past its deadline (3 s).
	_, idle := loginOn(t, n, name, "pw", "idle")
	time.Sleep(time.Until(wireT(t, idle.IdleExpiresAt).Add(200 * time.Millisecond)))
	if code, _ := get(idle.Token); code != http.StatusUnauthorized {
		t.Fatalf("an expired token: %d, want 401", code)
	}
}

// caddyConf is Caddy in front of the application with forward_auth (examples/caddy).
const caddyConf = `{
	admin off
	auto_https off
}
http://127.0.0.1:{{.Port}} {
	forward_auth {{.Sessiond}} {
		uri /api/v1/forward-auth
		copy_headers X-Sessiond-User-Id X-Sessiond-Session-Id
	}
	reverse_proxy {{.App}}
}
`

// startCaddy runs Caddy (Debian's package) with caddyConf on a free loopback port.
func startCaddy(t *testing.T, sessiond, app string) string {
	t.Helper()
	bin := proxyBinary(t, "caddy", "caddy")
	dir := t.TempDir()
	port := freeAddr(t)[len("127.0.0.1:"):]
	var conf bytes.Buffer
	_ = template.Must(template.New("caddy").Parse(caddyConf)).Execute(&conf, map[string]string{
		"Port": port, "App": strings.TrimPrefix(app, "http://"), "Sessiond": strings.TrimPrefix(sessiond, "http://")})
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, conf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", path, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir, "HOME="+dir)
	return runProxy(t, "caddy", cmd, dir, port)
}
