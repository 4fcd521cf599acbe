package main

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sessiond/sessiond/client"
	"github.com/sessiond/sessiond/internal/clientx"
)

// reverseProxy is a real reverse proxy in front of base, reaching it from the address from. It
// appends X-Forwarded-For and passes every other header through, as nginx, cloud load
// balancers and Go's ReverseProxy do; with proto set it also sets X-Forwarded-Proto, as
// nginx's `proxy_set_header X-Forwarded-Proto $scheme` does.
func reverseProxy(t *testing.T, base, from, proto string) string {
	t.Helper()
	target, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	direct := rp.Director
	rp.Director = func(r *http.Request) {
		direct(r)
		if proto != "" {
			r.Header.Set("X-Forwarded-Proto", proto)
		}
	}
	rp.Transport = &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}).DialContext}
	front := httptest.NewServer(rp)
	t.Cleanup(front.Close)
	return front.URL
}

// TestProxyForwardedHeaderSpoof: behind a trusted proxy that appends X-Forwarded-For and passes
// Forwarded through, a client that forges Forwarded and X-Forwarded-For still gets the address
// the proxy saw: for its device record, for the per-address limit, and for the scheme.
func TestProxyForwardedHeaderSpoof(t *testing.T) {
	adminAddr := freeAddr(t)
	n := startNode(t, map[string]string{"SESSIOND_TRUSTED_PROXIES": "127.0.0.2", "SESSIOND_ADMIN_ADDR": adminAddr,
		"SESSIOND_LOGIN_LIMIT_PER_ADDRESS": "3"})
	ctx := ctxT(t)
	front := reverseProxy(t, n.Base, "127.0.0.2", "")
	forging := func(i int) client.Options {
		return clientx.Cheap(client.Options{HTTPClient: httpFrom("127.0.0.5"), Header: http.Header{
			"Forwarded":       {"for=198.51.100." + string(rune('1'+i)) + ";proto=https"},
			"X-Forwarded-For": {"203.0.113." + string(rune('1'+i))},
		}})
	}
	dialVia := func(opts client.Options) *client.Conn {
		t.Helper()
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		c, err := client.Dial(dctx, front, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	name := uniqueName("spoof")
	c := dialVia(forging(0))
	if _, _, err := c.Register(ctx, name, "pw"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Login(ctx, name, "pw", "forger"); err != nil {
		t.Fatal(err)
	}
	out := adminSessions(t, adminAddr, filepath.Join(n.DataDir, "keys.json"), name)
	if !strings.Contains(out, `"ip":"127.0.0.5"`) || strings.Contains(out, "198.51.100.") || strings.Contains(out, "203.0.113.") {
		t.Fatalf("the recorded address is not the one the proxy saw: %s", out)
	}
	// Every login.start claims another address; all are the proxy-seen one, so the per-address
	// limit (3 a minute, one spent above) holds.
	var err error
	for i := 1; i <= 3 && err == nil; i++ {
		_, err = dialVia(forging(i)).Login(ctx, name, "pw", "")
	}
	if !client.IsCode(err, "rate_limited") {
		t.Fatalf("the fourth login from one address under forged headers: %v, want rate_limited", err)
	}
}

// TestProxyForwardedProtoSpoof: the scheme comes from what the trusted proxy set, never from a
// client-written Forwarded proto.
func TestProxyForwardedProtoSpoof(t *testing.T) {
	n := startNode(t, map[string]string{"SESSIOND_ADDR": "0.0.0.0:0", "SESSIOND_TRUSTED_PROXIES": "127.0.0.2"})
	ctx := ctxT(t)
	port := n.Base[strings.LastIndex(n.Base, ":")+1:]
	loginVia := func(front string, h http.Header) error {
		t.Helper()
		c, err := client.Dial(ctx, front, clientx.Cheap(client.Options{Header: h}))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, err = c.Login(ctx, uniqueName("nobody"), "pw", "")
		return err
	}
	plain := reverseProxy(t, "http://127.0.0.1:"+port, "127.0.0.2", "http")
	err := loginVia(plain, http.Header{"Forwarded": {"for=198.51.100.1;proto=https"}, "X-Forwarded-Proto": {"https"}})
	if !client.IsCode(err, "forbidden") {
		t.Fatalf("plain HTTP at the proxy with a forged https: %v, want forbidden", err)
	}
	tls := reverseProxy(t, "http://127.0.0.1:"+port, "127.0.0.2", "https")
	if err := loginVia(tls, nil); !client.IsCode(err, "auth_failed") {
		t.Fatalf("https at the proxy: %v, want to get as far as auth_failed", err)
	}
}

// TestLimitPerAddressIPv6Prefix: per-address limits count an IPv6 /64 as one address (one
// subscriber commonly holds a whole /64 and can pick any address in it).
func TestLimitPerAddressIPv6Prefix(t *testing.T) {
	// The test client is its own trusted proxy, so it can speak for IPv6 clients.
	n := startNode(t, map[string]string{"SESSIOND_TRUSTED_PROXIES": "127.0.0.1", "SESSIOND_LOGIN_LIMIT_PER_ADDRESS": "2"})
	ctx := ctxT(t)
	from := func(addr string) error {
		c := dial(t, n, clientx.Cheap(client.Options{Header: http.Header{"X-Forwarded-For": {addr}}}))
		_, err := c.Login(ctx, uniqueName("nobody"), "pw", "")
		return err
	}
	for _, a := range []string{"2001:db8:1:2::1", "2001:db8:1:2::2"} {
		if err := from(a); !client.IsCode(err, "auth_failed") {
			t.Fatalf("login from %s: %v", a, err)
		}
	}
	if err := from("2001:db8:1:2:ffff::3"); !client.IsCode(err, "rate_limited") {
		t.Fatalf("a third address of the same /64: %v, want rate_limited", err)
	}
	if err := from("2001:db8:1:3::1"); !client.IsCode(err, "auth_failed") {
		t.Fatalf("another /64: %v, want its own budget", err)
	}
}
