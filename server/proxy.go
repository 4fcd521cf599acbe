package server

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// The client's address and scheme come from the TCP peer, or — only when the peer is one of
// the trusted proxies — from the one header the proxies are configured to set (ProxyHeader).
// Rate limits, fingerprints and device metadata use this address and no other.
//
// Every proxy appends to the header what it saw, so only the right end of it is trustworthy:
// the chain is walked from the right, over our own proxies, to the first address that is not
// one of them. Anything to its left was written by the client. An entry that does not parse
// stops the walk and the TCP peer is used: a client-written entry is never taken for lack of a
// better one.

// The headers a trusted proxy's client address can be read from.
const (
	ProxyHeaderXForwardedFor = "x-forwarded-for" // nginx, HAProxy, cloud load balancers, Go's ReverseProxy
	ProxyHeaderForwarded     = "forwarded"       // RFC 7239
	ProxyHeaderXRealIP       = "x-real-ip"       // one address, set (not appended) by the proxy
)

// ValidProxyHeader reports whether h names a header ProxyHeader can be set to.
func ValidProxyHeader(h string) bool {
	switch h {
	case ProxyHeaderXForwardedFor, ProxyHeaderForwarded, ProxyHeaderXRealIP:
		return true
	}
	return false
}

// hop is one entry of the forwarding chain: the address a proxy saw and, where the header
// says, the scheme of that connection.
type hop struct {
	addr  netip.Addr // invalid when the entry does not parse ("unknown", an obfuscated name, junk)
	proto string
}

func (s *Server) peer(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}

func (s *Server) trusted(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// client returns the client's hop: from the configured header when the peer is a trusted
// proxy, else the peer itself (with no forwarded scheme).
func (s *Server) client(r *http.Request) hop {
	p := hop{addr: s.peer(r)}
	if !s.trusted(p.addr) {
		return p
	}
	chain := s.chain(r)
	for i := len(chain) - 1; i >= 0; i-- {
		h := chain[i]
		if !h.addr.IsValid() {
			// Written by one of our proxies (every hop right of it is ours), which did not
			// know or would not say the address; the scheme it reports stands.
			return hop{addr: p.addr, proto: h.proto}
		}
		if !s.trusted(h.addr) || i == 0 {
			// The first address that is not ours, or the leftmost of an all-internal chain
			// (a client inside the trusted networks, as our own proxy reports it).
			return h
		}
	}
	// No address header: the proxy's own address stands; so does the scheme it reports.
	if s.cfg.ProxyHeader != ProxyHeaderForwarded {
		p.proto = proxyProto(r)
	}
	return p
}

// chain returns the hops of the configured header, client side first.
func (s *Server) chain(r *http.Request) []hop {
	switch s.cfg.ProxyHeader {
	case ProxyHeaderForwarded:
		return forwardedChain(r.Header.Values("Forwarded"))
	case ProxyHeaderXRealIP:
		v := r.Header.Values("X-Real-Ip")
		if len(v) == 0 {
			return nil
		}
		// Set, not appended: only the last value can be the proxy's.
		return []hop{{addr: parseHopAddr(v[len(v)-1]), proto: proxyProto(r)}}
	default:
		var out []hop
		for _, v := range r.Header.Values("X-Forwarded-For") {
			for _, a := range strings.Split(v, ",") {
				out = append(out, hop{addr: parseHopAddr(a)})
			}
		}
		if len(out) > 0 {
			out[len(out)-1].proto = proxyProto(r)
			// The scheme the nearest proxy reports is that of the connection it received; for
			// a client further out it is only known when that proxy is the client's.
			for i := range out[:len(out)-1] {
				out[i].proto = out[len(out)-1].proto
			}
		}
		return out
	}
}

// proxyProto is X-Forwarded-Proto as the nearest proxy set it: its last entry.
func proxyProto(r *http.Request) string {
	v := r.Header.Values("X-Forwarded-Proto")
	if len(v) == 0 {
		return ""
	}
	parts := strings.Split(v[len(v)-1], ",")
	return strings.TrimSpace(parts[len(parts)-1])
}

// forwardedChain parses RFC 7239 Forwarded header values into hops, one per element, each
// with the for= address and proto= scheme of that same element.
func forwardedChain(values []string) []hop {
	var out []hop
	for _, v := range values {
		for _, elem := range strings.Split(v, ",") {
			h := hop{}
			for _, pair := range strings.Split(elem, ";") {
				k, val, ok := strings.Cut(strings.TrimSpace(pair), "=")
				if !ok {
					continue
				}
				switch strings.ToLower(strings.TrimSpace(k)) {
				case "for":
					h.addr = parseHopAddr(strings.Trim(val, `"`))
				case "proto":
					h.proto = strings.Trim(val, `"`)
				}
			}
			out = append(out, h)
		}
	}
	return out
}

// parseHopAddr parses an address as proxies write it: bare, with a port, or bracketed IPv6
// with or without a port. Anything else is the invalid address.
func parseHopAddr(v string) netip.Addr {
	v = strings.TrimSpace(v)
	if strings.HasPrefix(v, "[") {
		end := strings.Index(v, "]")
		if end < 0 {
			return netip.Addr{}
		}
		v = v[1:end]
	} else if h, _, err := net.SplitHostPort(v); err == nil {
		v = h
	}
	a, err := netip.ParseAddr(v)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}
	}
	return a.Unmap()
}

// clientIP is the address of the client that made the request.
func (s *Server) clientIP(r *http.Request) string {
	if a := s.client(r).addr; a.IsValid() {
		return a.String()
	}
	return r.RemoteAddr
}

// secure reports whether the request reached us over TLS, directly or through a trusted proxy
// that says the client's connection was.
func (s *Server) secure(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	proto := s.client(r).proto
	return strings.EqualFold(proto, "https") || strings.EqualFold(proto, "wss")
}

// tokensAllowed reports whether a session token may be issued over this request.
func (s *Server) tokensAllowed(r *http.Request) bool {
	return s.cfg.AllowInsecure || s.secure(r)
}

// limitKey is the key of an address's per-address limits: the address itself for IPv4, its
// /64 for IPv6, since one subscriber commonly holds a whole /64.
func limitKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil || !a.Is6() {
		return ip
	}
	p, _ := a.Prefix(64)
	return p.String()
}
