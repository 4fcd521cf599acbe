package hub

// Test-only views of a Hub's subscriptions.

// Topics returns the topics with local sinks, in no particular order.
func (h *Hub) Topics() []string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]string, 0, len(h.subs))
	for t := range h.subs {
		out = append(out, t)
	}
	return out
}

// Sinks calls f for every sink subscribed on this node, once per sink. f runs without the
// Hub's lock held, so it may subscribe or unsubscribe.
func (h *Hub) Sinks(f func(Sink)) {
	h.mu.RLock()
	seen := map[Sink]struct{}{}
	for _, set := range h.subs {
		for s := range set {
			seen[s] = struct{}{}
		}
	}
	h.mu.RUnlock()
	for s := range seen {
		f(s)
	}
}
