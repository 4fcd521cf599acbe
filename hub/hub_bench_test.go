package hub

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
)

// countSink counts what it is given, as a connection's non-blocking Deliver would queue it.
type countSink struct{ n atomic.Int64 }

func (s *countSink) Deliver(string, []byte) { s.n.Add(1) }

// BenchmarkPublish is one message to a topic with n local sinks through the Loopback broker:
// the node's fan-out, without the network.
func BenchmarkPublish(b *testing.B) {
	ctx := context.Background()
	payload := []byte(`{"k":"revoked","ids":["Yc9MzQ3c2FtcGxlLWlkLTE"],"reason":"revoked_by_user"}`)
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("sinks=%d", n), func(b *testing.B) {
			h := New(NewLoopback())
			sinks := make([]*countSink, n)
			for i := range sinks {
				sinks[i] = &countSink{}
				if err := h.Subscribe(ctx, "user:bench", sinks[i]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := h.Publish(ctx, "user:bench", payload); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if got := sinks[n-1].n.Load(); got == 0 {
				b.Fatal("the last sink got nothing")
			}
		})
	}
}
