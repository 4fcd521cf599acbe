package server

import "github.com/prometheus/client_golang/prometheus"

// connStates exports sessiond_connections_by_state{state}: the node's WebSockets by where they
// are — "handshake" (open, not yet signed in), "signed_in", "closing" (a close is under way) —
// counted when scraped.
type connStates struct {
	s    *Server
	desc *prometheus.Desc
}

func newConnStates(s *Server) *connStates {
	return &connStates{s: s, desc: prometheus.NewDesc("sessiond_connections_by_state",
		"Open WebSocket connections by state: handshake (not signed in yet), signed_in, closing.", []string{"state"}, nil)}
}

func (c *connStates) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *connStates) Collect(ch chan<- prometheus.Metric) {
	c.s.mu.Lock()
	conns := make([]*conn, 0, len(c.s.conns))
	for cn := range c.s.conns {
		conns = append(conns, cn)
	}
	c.s.mu.Unlock()
	var handshake, signedIn, closing float64
	for _, cn := range conns {
		cn.mu.Lock()
		in := cn.st.sess != nil
		cn.mu.Unlock()
		switch {
		case cn.closing.Load():
			closing++
		case in:
			signedIn++
		default:
			handshake++
		}
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, handshake, "handshake")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, signedIn, "signed_in")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, closing, "closing")
}
