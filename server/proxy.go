package server

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// The client's address and scheme come from the TCP peer, or — only when the peer is one of
// the trusted proxies — from the Forwarded / X-Forwarded-For / X-Forwarded-Proto headers it
// set. Rate limits, fingerprints and device metadata use this address and no other.

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

// clientIP is the address of the client that made the request.
func (s *Server) clientIP(r *http.Request) string {
	p := s.peer(r)
	if !s.trusted(p) {
		if p.IsValid() {
			return p.String()
		}
		return r.RemoteAddr
	}
	chain := forwardedFor(r)
	// Walk from the nearest hop outwards: the first address that is not one of our proxies is
	// the client. Entries further left were written by the client itself and prove nothing.
	for i := len(chain) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(chain[i])
		if err != nil {
			break
		}
		a = a.Unmap()
		if !s.trusted(a) {
			return a.String()
		}
	}
	if len(chain) > 0 {
		if a, err := netip.ParseAddr(chain[0]); err == nil {
			return a.Unmap().String()
		}
	}
	return p.String()
}

// secure reports whether the request reached us over TLS, directly or through a trusted proxy
// that says so.
func (s *Server) secure(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	if !s.trusted(s.peer(r)) {
		return false
	}
	if proto := forwardedProto(r); proto != "" {
		return strings.EqualFold(proto, "https") || strings.EqualFold(proto, "wss")
	}
	return false
}

// tokensAllowed reports whether a session token may be issued over this request.
func (s *Server) tokensAllowed(r *http.Request) bool {
	return s.cfg.AllowInsecure || s.secure(r)
}

// forwardedFor returns the client chain of the Forwarded header (RFC 7239), else of
// X-Forwarded-For, in order (client first).
func forwardedFor(r *http.Request) []string {
	var out []string
	if fwd := r.Header.Values("Forwarded"); len(fwd) > 0 {
		for _, v := range fwd {
			for _, elem := range strings.Split(v, ",") {
				for _, pair := range strings.Split(elem, ";") {
					k, val, ok := strings.Cut(strings.TrimSpace(pair), "=")
					if ok && strings.EqualFold(k, "for") {
						val = strings.Trim(val, `"`)
						if strings.HasPrefix(val, "[") { // [2001:db8::1]:4711
							if end := strings.Index(val, "]"); end > 0 {
								val = val[1:end]
							}
						} else if h, _, err := net.SplitHostPort(val); err == nil {
							val = h
						}
						out = append(out, val)
					}
				}
			}
		}
		return out
	}
	for _, v := range r.Header.Values("X-Forwarded-For") {
		for _, a := range strings.Split(v, ",") {
			if a = strings.TrimSpace(a); a != "" {
				out = append(out, a)
			}
		}
	}
	return out
}

func forwardedProto(r *http.Request) string {
	for _, v := range r.Header.Values("Forwarded") {
		for _, elem := range strings.Split(v, ",") {
			for _, pair := range strings.Split(elem, ";") {
				if k, val, ok := strings.Cut(strings.TrimSpace(pair), "="); ok && strings.EqualFold(k, "proto") {
					return strings.Trim(val, `"`)
				}
			}
		}
	}
	// The nearest proxy appends last.
	if v := r.Header.Values("X-Forwarded-Proto"); len(v) > 0 {
		parts := strings.Split(v[len(v)-1], ",")
		return strings.TrimSpace(parts[len(parts)-1])
	}
	return ""
}
