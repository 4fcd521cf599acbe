package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sessiond/sessiond/client"
	"github.com/sessiond/sessiond/internal/clientx"
)

// adminSessions lists a user's sessions through the admin API (it shows the recorded address).
func adminSessions(t *testing.T, adminAddr, keyFile, user string) string {
	t.Helper()
	var out syncBuffer
	if err := run(context.Background(), []string{"admin", "-url", "http://" + adminAddr, "-key-file", keyFile, "sessions", user},
		func(string) string { return "" }, &out, &out, nil); err != nil {
		t.Fatalf("admin sessions: %v %s", err, out.String())
	}
	return out.String()
}

// TestTrustedProxy: the client address comes from the forwarding headers only when the peer
// is a trusted proxy; a forged header from anyone else is ignored.
func TestTrustedProxy(t *testing.T) {
	adminAddr := freeAddr(t)
	n := startNode(t, map[string]string{"SESSIOND_TRUSTED_PROXIES": "127.0.0.2/32", "SESSIOND_ADMIN_ADDR": adminAddr})
	keyFile := filepath.Join(n.DataDir, "keys.json")
	ctx := ctxT(t)
	target, _ := url.Parse(n.Base)
	// A reverse proxy that reaches the node from 127.0.0.2 and appends X-Forwarded-For.
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext}
	front := httptest.NewServer(rp)
	defer front.Close()

	name := uniqueName("proxied")
	from := func(ip string) client.Options {
		return clientx.Cheap(client.Options{HTTPClient: httpFrom(ip)})
	}
	ctxDial, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	viaProxy, err := client.Dial(ctxDial, front.URL, from("127.0.0.5"))
	if err != nil {
		t.Fatal(err)
	}
	defer viaProxy.Close()
	if _, _, err := viaProxy.Register(ctx, name, "pw"); err != nil {
		t.Fatal(err)
	}
	if _, err := viaProxy.Login(ctx, name, "pw", "through the proxy"); err != nil {
		t.Fatal(err)
	}
	// Directly, from an untrusted peer, with forged headers.
	forged := clientx.Cheap(client.Options{HTTPClient: httpFrom("127.0.0.9"),
		Header: http.Header{"X-Forwarded-For": {"203.0.113.66"}, "Forwarded": {"for=198.51.100.77"}}})
	direct, err := client.Dial(ctxDial, n.Base, forged)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	if _, err := direct.Login(ctx, name, "pw", "direct"); err != nil {
		t.Fatal(err)
	}
	out := adminSessions(t, adminAddr, keyFile, name)
	if !strings.Contains(out, `"ip":"127.0.0.5"`) {
		t.Fatalf("the proxied client's address was not taken from the trusted proxy: %s", out)
	}
	if !strings.Contains(out, `"ip":"127.0.0.9"`) || strings.Contains(out, "203.0.113.66") || strings.Contains(out, "198.51.100.77") {
		t.Fatalf("a forged header from an untrusted peer was believed: %s", out)
	}
}

// TestPlainHTTPRefusesTokens: a node on a non-loopback address without TLS issues no token,
// unless SESSIOND_INSECURE_HTTP says so or a trusted proxy forwards an https request.
func TestPlainHTTPRefusesTokens(t *testing.T) {
	ctx := ctxT(t)
	loginAt := func(n *node, opts client.Options) error {
		t.Helper()
		port := n.Base[strings.LastIndex(n.Base, ":")+1:]
		c, err := client.Dial(ctx, "http://127.0.0.1:"+port, opts)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		name := uniqueName("plain")
		if _, _, err := c.Register(ctx, name, "pw"); err != nil {
			return err // registration is a password exchange too: TLS only
		}
		_, err = c.Login(ctx, name, "pw", "")
		return err
	}
	refuse := startNode(t, map[string]string{"SESSIOND_ADDR": "0.0.0.0:0"})
	err := loginAt(refuse, cheap)
	if !client.IsCode(err, "forbidden") || !strings.Contains(err.Error(), "TLS") {
		t.Fatalf("plain-HTTP registration on a non-loopback listener: %v", err)
	}
	// Registration is refused by itself, before any login is tried.
	port := refuse.Base[strings.LastIndex(refuse.Base, ":")+1:]
	rc, err := client.Dial(ctx, "http://127.0.0.1:"+port, cheap)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, _, err := rc.Register(ctx, uniqueName("plain"), "pw"); !client.IsCode(err, "forbidden") {
		t.Fatalf("plain-HTTP register.start on a non-loopback listener: %v, want forbidden", err)
	}
	if !strings.Contains(refuse.logs.String(), "tokens are refused until TLS is configured") {
		t.Fatal("the start-up log does not say the transport mode")
	}
	allow := startNode(t, map[string]string{"SESSIOND_ADDR": "0.0.0.0:0", "SESSIOND_INSECURE_HTTP": "true"})
	if err := loginAt(allow, cheap); err != nil {
		t.Fatalf("with SESSIOND_INSECURE_HTTP: %v", err)
	}
	proxied := startNode(t, map[string]string{"SESSIOND_ADDR": "0.0.0.0:0", "SESSIOND_TRUSTED_PROXIES": "127.0.0.1"})
	if err := loginAt(proxied, clientx.Cheap(client.Options{Header: http.Header{"X-Forwarded-Proto": {"https"}}})); err != nil {
		t.Fatalf("https forwarded by a trusted proxy: %v", err)
	}
	if err := loginAt(proxied, cheap); !client.IsCode(err, "forbidden") {
		t.Fatalf("plain http through the trusted proxy: %v", err)
	}
}

// selfSigned writes a certificate for 127.0.0.1 and returns the cert and key paths and a pool.
func selfSigned(t *testing.T) (string, string, *x509.CertPool) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sessiond test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	kder, _ := x509.MarshalECPrivateKey(key)
	_ = os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	pool := x509.NewCertPool()
	cert, _ := x509.ParseCertificate(der)
	pool.AddCert(cert)
	return certPath, keyPath, pool
}

// TestTLS: with a certificate the node serves HTTPS/WSS on any address, issues tokens, and
// the page carries HSTS.
func TestTLS(t *testing.T) {
	certPath, keyPath, pool := selfSigned(t)
	n := startNode(t, map[string]string{"SESSIOND_ADDR": "0.0.0.0:0", "SESSIOND_TLS_CERT": certPath, "SESSIOND_TLS_KEY": keyPath})
	ctx := ctxT(t)
	port := n.Base[strings.LastIndex(n.Base, ":")+1:]
	base := "https://127.0.0.1:" + port
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	c, err := client.Dial(ctx, base, clientx.Cheap(client.Options{HTTPClient: hc}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	name := uniqueName("tls")
	if _, _, err := c.Register(ctx, name, "pw"); err != nil {
		t.Fatal(err)
	}
	res, err := c.Login(ctx, name, "pw", "")
	if err != nil {
		t.Fatalf("login over WSS: %v", err)
	}
	api := client.NewAPI(base, res.Session.Token)
	api.HTTP = hc
	if _, err := api.Session(ctx); err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !strings.Contains(resp.Header.Get("Strict-Transport-Security"), "max-age=") {
		t.Fatalf("no HSTS under TLS: %v", resp.Header)
	}
	// Bad configuration stops the node with one line naming the setting.
	err = run(ctx, nil, func(k string) string {
		return map[string]string{"SESSIOND_TLS_CERT": certPath, "SESSIOND_DATA_DIR": t.TempDir(), "SESSIOND_ADDR": "127.0.0.1:0"}[k]
	}, &syncBuffer{}, &syncBuffer{}, nil)
	if err == nil || !strings.Contains(err.Error(), "SESSIOND_TLS_KEY") {
		t.Fatalf("cert without key: %v", err)
	}
}

// TestSharedLimits: with Redis, the login limit per username is one budget across nodes.
func TestSharedLimits(t *testing.T) {
	c := startCluster(t, map[string]string{"SESSIOND_LOGIN_LIMIT_PER_USER": "4"})
	ctx := ctxT(t)
	name := uniqueName("shared-limit")
	r := dialBase(t, c.n1.Base)
	if _, _, err := r.Register(ctx, name, "pw"); err != nil {
		t.Fatal(err)
	}
	nodes := []string{c.n1.Base, c.n2.Base}
	for i := 0; i < 4; i++ { // alternate nodes: 2 failures on each
		d := dialBase(t, nodes[i%2])
		if _, err := d.Login(ctx, name, "wrong", ""); !client.IsCode(err, "auth_failed") {
			t.Fatalf("failure %d: %v", i+1, err)
		}
	}
	for _, base := range nodes {
		d := dialBase(t, base)
		if _, err := d.Login(ctx, name, "pw", ""); !client.IsCode(err, "rate_limited") {
			t.Fatalf("after 4 failures across two nodes, %s: %v", base, err)
		}
	}
}
