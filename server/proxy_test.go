package server

import (
	"net/http"
	"net/netip"
	"testing"
)

// TestClientAddress walks each supported header with forged entries on the client's side.
func TestClientAddress(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	tests := []struct {
		name, header, peer string
		h                  http.Header
		want               string
		secure             bool
	}{
		{"untrusted peer, forged headers", "", "192.0.2.1:5", http.Header{
			"X-Forwarded-For": {"203.0.113.9"}, "Forwarded": {"for=203.0.113.8;proto=https"}, "X-Forwarded-Proto": {"https"}},
			"192.0.2.1", false},
		{"xff: appended by our proxy", "", "10.0.0.2:5", http.Header{"X-Forwarded-For": {"198.51.100.7"}, "X-Forwarded-Proto": {"https"}},
			"198.51.100.7", true},
		{"xff: client forges the left", "", "10.0.0.2:5", http.Header{"X-Forwarded-For": {"203.0.113.9, 198.51.100.7"}},
			"198.51.100.7", false},
		{"xff: two of our proxies", "", "10.0.0.2:5", http.Header{"X-Forwarded-For": {"203.0.113.9", "198.51.100.7, 10.0.0.3"}},
			"198.51.100.7", false},
		{"xff: forged Forwarded is not read", "", "10.0.0.2:5", http.Header{
			"X-Forwarded-For": {"198.51.100.7"}, "Forwarded": {"for=203.0.113.8;proto=https"}},
			"198.51.100.7", false},
		{"xff: unparseable hop stops at the peer", "", "10.0.0.2:5", http.Header{"X-Forwarded-For": {"203.0.113.9, junk"}},
			"10.0.0.2", false},
		{"xff: a client inside our networks", "", "10.0.0.2:5", http.Header{"X-Forwarded-For": {"10.1.2.3"}},
			"10.1.2.3", false},
		{"xff: ipv6 with port", "", "[fd00::2]:5", http.Header{"X-Forwarded-For": {"[2001:db8::1]:443"}},
			"2001:db8::1", false},
		{"xff: proto of the nearest proxy", "", "10.0.0.2:5", http.Header{
			"X-Forwarded-For": {"198.51.100.7"}, "X-Forwarded-Proto": {"https", "http"}},
			"198.51.100.7", false},
		{"forwarded: the client's element", ProxyHeaderForwarded, "10.0.0.2:5", http.Header{
			"Forwarded": {`for=203.0.113.9;proto=https, for="198.51.100.7:1234";proto=http`}},
			"198.51.100.7", false},
		{"forwarded: proto from the same hop", ProxyHeaderForwarded, "10.0.0.2:5", http.Header{
			"Forwarded": {`for=203.0.113.9;proto=http`, `for=198.51.100.7;proto=https`}, "X-Forwarded-Proto": {"http"}},
			"198.51.100.7", true},
		{"forwarded: ipv6", ProxyHeaderForwarded, "10.0.0.2:5", http.Header{"Forwarded": {`for="[2001:db8::1]:4711";proto=https`}},
			"2001:db8::1", true},
		{"forwarded: X-Forwarded-For is not read", ProxyHeaderForwarded, "10.0.0.2:5", http.Header{
			"X-Forwarded-For": {"203.0.113.9"}, "Forwarded": {"for=198.51.100.7"}},
			"198.51.100.7", false},
		{"forwarded: unknown", ProxyHeaderForwarded, "10.0.0.2:5", http.Header{"Forwarded": {"for=198.51.100.7, for=unknown;proto=https"}},
			"10.0.0.2", true},
		{"x-real-ip", ProxyHeaderXRealIP, "10.0.0.2:5", http.Header{
			"X-Real-Ip": {"198.51.100.7"}, "X-Forwarded-For": {"203.0.113.9"}, "X-Forwarded-Proto": {"https"}},
			"198.51.100.7", true},
		{"x-real-ip: junk", ProxyHeaderXRealIP, "10.0.0.2:5", http.Header{"X-Real-Ip": {"nonsense"}},
			"10.0.0.2", false},
		{"no header from our proxy", "", "10.0.0.2:5", http.Header{"X-Forwarded-Proto": {"https"}},
			"10.0.0.2", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{cfg: Config{TrustedProxies: trusted, ProxyHeader: tc.header}}
			r := &http.Request{RemoteAddr: tc.peer, Header: tc.h}
			if got := s.clientIP(r); got != tc.want {
				t.Errorf("client address %s, want %s", got, tc.want)
			}
			if got := s.secure(r); got != tc.secure {
				t.Errorf("secure %v, want %v", got, tc.secure)
			}
		})
	}
}

func TestLimitKeyIPv6Prefix(t *testing.T) {
	for in, want := range map[string]string{
		"198.51.100.7":                 "198.51.100.7",
		"2001:db8:1:2:aaaa::1":         "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff:ffff::ffff": "2001:db8:1:2::/64",
		"2001:db8:1:3::1":              "2001:db8:1:3::/64",
	} {
		if got := limitKey(in); got != want {
			t.Errorf("limitKey(%s) = %s, want %s", in, got, want)
		}
	}
}
