package hub

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waitFor bounds every wait for something that should happen promptly.
const waitFor = 10 * time.Second

type delivery struct {
	topic   string
	payload []byte
}

// testSink records deliveries on a channel. Deliver never blocks, as the Sink contract asks;
// a sink that overflows fails the test when it is next read.
type testSink struct {
	ch       chan delivery
	overflow atomic.Bool
}

func newSink() *testSink { return &testSink{ch: make(chan delivery, 256)} }

func (s *testSink) Deliver(topic string, payload []byte) {
	select {
	case s.ch <- delivery{topic, bytes.Clone(payload)}:
	default:
		s.overflow.Store(true)
	}
}

func (s *testSink) next(t *testing.T) delivery {
	t.Helper()
	if s.overflow.Load() {
		t.Fatal("sink overflowed")
	}
	select {
	case d := <-s.ch:
		return d
	case <-time.After(waitFor):
		t.Fatalf("no delivery within %v", waitFor)
		return delivery{}
	}
}

// expectEmpty checks that nothing was delivered so far. Callers make it meaningful with a
// barrier: a later message on the same path that has already arrived.
func (s *testSink) expectEmpty(t *testing.T) {
	t.Helper()
	select {
	case d := <-s.ch:
		t.Fatalf("unexpected delivery on %q: %q", d.topic, d.payload)
	default:
	}
}

func expectDelivery(t *testing.T, s *testSink, topic, payload string) {
	t.Helper()
	d := s.next(t)
	if d.topic != topic || string(d.payload) != payload {
		t.Fatalf("got %q on %q, want %q on %q", d.payload, d.topic, payload, topic)
	}
}

// waitUntil polls cond for conditions no channel announces.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// runHub runs h until the test ends, then checks Run returned nil, and waits for the link.
func runHub(t *testing.T, h *Hub) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v after ctx ended", err)
			}
		case <-time.After(waitFor):
			t.Errorf("Run did not return within %v after ctx ended", waitFor)
		}
	})
	waitUntil(t, "a healthy broker link", h.Healthy)
}

func startHub(t *testing.T, b Broker) *Hub {
	t.Helper()
	h := New(b)
	runHub(t, h)
	return h
}

func subscribe(t *testing.T, h *Hub, topic string, s Sink) {
	t.Helper()
	if err := h.Subscribe(t.Context(), topic, s); err != nil {
		t.Fatalf("Subscribe %q: %v", topic, err)
	}
}

func unsubscribe(t *testing.T, h *Hub, topic string, s Sink) {
	t.Helper()
	if err := h.Unsubscribe(t.Context(), topic, s); err != nil {
		t.Fatalf("Unsubscribe %q: %v", topic, err)
	}
}

func publish(t *testing.T, h *Hub, topic, payload string) {
	t.Helper()
	if err := h.Publish(t.Context(), topic, []byte(payload)); err != nil {
		t.Fatalf("Publish %q: %v", topic, err)
	}
}

// runBrokerConformance checks what every Broker must do under a Hub. newBrokers returns two
// fresh brokers, not yet running, standing for two nodes of one deployment (for Redis: same
// server and channel prefix, separate clients). A single-node broker (Loopback) returns b == nil:
// the cross-node subtests are then skipped, since with a == b they would only repeat the local
// ones. Subtests that need a publisher and a receiver use two nodes when there are two, and the
// one node otherwise, so they check cross-node delivery wherever it exists.
//
// Checks that something did NOT arrive use a barrier: a later message over the same path
// (Redis delivers one connection's messages in order) that has arrived.
// runBrokerConformance checks the Broker contract. acrossTopics says whether the broker keeps
// the order of a PublishAll across topics (one Redis, the loopback) or only within each topic
// (a cluster's shards deliver on separate links).
func runBrokerConformance(t *testing.T, acrossTopics bool, newBrokers func(t *testing.T) (a, b Broker)) {
	// pair returns a publishing and a receiving hub, both running: two nodes when the broker
	// has them.
	pair := func(t *testing.T) (pub, recv *Hub) {
		a, b := newBrokers(t)
		pub = startHub(t, a)
		if b == nil {
			return pub, pub
		}
		return pub, startHub(t, b)
	}

	t.Run("LocalTopicOnly", func(t *testing.T) {
		a, _ := newBrokers(t)
		h := startHub(t, a)
		s1, s1bis, s2 := newSink(), newSink(), newSink()
		subscribe(t, h, "t1", s1)
		subscribe(t, h, "t1", s1bis)
		subscribe(t, h, "t2", s2)

		publish(t, h, "nobody", "0")
		publish(t, h, "t1", "1")
		publish(t, h, "t2", "2")
		publish(t, h, "t1", "3")
		expectDelivery(t, s1, "t1", "1")
		expectDelivery(t, s1bis, "t1", "1")
		expectDelivery(t, s2, "t2", "2") // not "0" nor "1"
		expectDelivery(t, s1, "t1", "3") // not "2"
		expectDelivery(t, s1bis, "t1", "3")
	})

	t.Run("PublishAllInOrder", func(t *testing.T) {
		pub, recv := pair(t)
		s := newSink()
		subscribe(t, recv, "ta", s)
		subscribe(t, recv, "tb", s)
		msgs := []Message{{Topic: "ta", Payload: []byte("1")}, {Topic: "tb", Payload: []byte("2")}, {Topic: "ta", Payload: []byte("3")}}
		if err := pub.PublishAll(t.Context(), msgs); err != nil {
			t.Fatal(err)
		}
		if acrossTopics {
			expectDelivery(t, s, "ta", "1")
			expectDelivery(t, s, "tb", "2")
			expectDelivery(t, s, "ta", "3")
			return
		}
		var got []string
		for range 3 {
			d := s.next(t)
			got = append(got, d.topic+"="+string(d.payload))
		}
		if i, j := slices.Index(got, "ta=1"), slices.Index(got, "ta=3"); i < 0 || j < i || !slices.Contains(got, "tb=2") {
			t.Fatalf("got %v: every message, in order within each topic", got)
		}
	})

	t.Run("CrossNode", func(t *testing.T) {
		a, b := newBrokers(t)
		if b == nil {
			t.Skip("single-node broker")
		}
		ha, hb := startHub(t, a), startHub(t, b)
		sa, sb, both1, both2 := newSink(), newSink(), newSink(), newSink()
		subscribe(t, ha, "on-a", sa)
		subscribe(t, hb, "on-b", sb)
		subscribe(t, ha, "both", both1)
		subscribe(t, hb, "both", both2)

		publish(t, ha, "on-b", "a to b")
		expectDelivery(t, sb, "on-b", "a to b")
		publish(t, hb, "on-b", "b to b") // the publishing node is included
		expectDelivery(t, sb, "on-b", "b to b")
		publish(t, hb, "on-a", "b to a")
		expectDelivery(t, sa, "on-a", "b to a")
		publish(t, ha, "both", "a to all")
		expectDelivery(t, both1, "both", "a to all")
		expectDelivery(t, both2, "both", "a to all")
		publish(t, hb, "both", "b to all")
		expectDelivery(t, both1, "both", "b to all")
		expectDelivery(t, both2, "both", "b to all")
	})

	t.Run("UnsubscribeStopsDelivery", func(t *testing.T) {
		pub, recv := pair(t)
		s, other, barrier := newSink(), newSink(), newSink()
		subscribe(t, recv, "t", s)
		subscribe(t, recv, "t", other)
		subscribe(t, recv, "barrier", barrier)

		publish(t, pub, "t", "1")
		expectDelivery(t, s, "t", "1")
		expectDelivery(t, other, "t", "1")

		// Not the last sink: the topic keeps flowing to the others.
		unsubscribe(t, recv, "t", other)
		publish(t, pub, "t", "2")
		expectDelivery(t, s, "t", "2")

		// The last sink: nothing more for the topic.
		unsubscribe(t, recv, "t", s)
		publish(t, pub, "t", "3")
		publish(t, pub, "barrier", "b")
		expectDelivery(t, barrier, "barrier", "b")
		s.expectEmpty(t)
		other.expectEmpty(t)
		if got := recv.Topics(); !slices.Equal(got, []string{"barrier"}) {
			t.Fatalf("Topics = %q", got)
		}

		// And the topic can be joined again.
		subscribe(t, recv, "t", s)
		publish(t, pub, "t", "4")
		expectDelivery(t, s, "t", "4")
	})

	t.Run("ManyTopics", func(t *testing.T) {
		pub, recv := pair(t)
		const n = 300
		sinks := make([]*testSink, n)
		for i := range sinks {
			sinks[i] = newSink()
			subscribe(t, recv, "many:"+strconv.Itoa(i), sinks[i])
		}
		for i := range sinks {
			publish(t, pub, "many:"+strconv.Itoa(i), "p"+strconv.Itoa(i))
		}
		publish(t, pub, "many:0", "last")
		for i, s := range sinks {
			expectDelivery(t, s, "many:"+strconv.Itoa(i), "p"+strconv.Itoa(i))
		}
		expectDelivery(t, sinks[0], "many:0", "last")
		for _, s := range sinks[1:] {
			s.expectEmpty(t)
		}
	})

	// Sinks that subscribe before the link is up are subscribed when it comes up (with Redis:
	// in several batches), before the broker reports itself healthy.
	t.Run("SubscribeBeforeRun", func(t *testing.T) {
		a, b := newBrokers(t)
		pubB, recvB := a, b
		if b == nil {
			recvB = a
		}
		recv := New(recvB)
		const n = 2500
		sinks := make([]*testSink, n)
		for i := range sinks {
			sinks[i] = newSink()
			subscribe(t, recv, "early:"+strconv.Itoa(i), sinks[i])
		}
		runHub(t, recv)
		pub := recv
		if b != nil {
			pub = startHub(t, pubB)
		}
		for i := range sinks {
			publish(t, pub, "early:"+strconv.Itoa(i), strconv.Itoa(i))
		}
		for i, s := range sinks {
			expectDelivery(t, s, "early:"+strconv.Itoa(i), strconv.Itoa(i))
		}
	})

	t.Run("PayloadBytesUnchanged", func(t *testing.T) {
		pub, recv := pair(t)
		s := newSink()
		subscribe(t, recv, "bytes", s)
		all := make([]byte, 256)
		for i := range all {
			all[i] = byte(i)
		}
		big := make([]byte, 1<<20)
		_, _ = rand.Read(big)
		payloads := [][]byte{
			{},
			[]byte("plain"),
			all,
			[]byte("\r\n$-1\r\n*0\r\n"), // RESP framing inside a payload
			{0xff, 0xfe, 0x00, 0xc3},    // not UTF-8
			[]byte(`{"k":"revoked","ids":["x"]}`),
			big,
		}
		for _, p := range payloads {
			if err := pub.Publish(t.Context(), "bytes", p); err != nil {
				t.Fatal(err)
			}
		}
		for i, p := range payloads {
			if d := s.next(t); d.topic != "bytes" || !bytes.Equal(d.payload, p) {
				t.Fatalf("payload %d: got %d bytes on %q, want %d bytes", i, len(d.payload), d.topic, len(p))
			}
		}
	})

	// Meant for -race: sinks come and go on shared topics while messages flow; afterwards the
	// broker must still deliver to exactly the sinks that remain.
	t.Run("Concurrent", func(t *testing.T) {
		pub, recv := pair(t)
		ctx := t.Context()
		topics := []string{"c0", "c1", "c2", "c3"}
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				s := newSink()
				for i := range 25 {
					topic := topics[(g+i)%len(topics)]
					if err := recv.Subscribe(ctx, topic, s); err != nil {
						t.Error(err)
					}
					if err := pub.Publish(ctx, topic, []byte("noise")); err != nil {
						t.Error(err)
					}
					if err := recv.Unsubscribe(ctx, topic, s); err != nil {
						t.Error(err)
					}
				}
			})
			wg.Go(func() {
				for i := range 25 {
					if err := pub.Publish(ctx, topics[i%len(topics)], []byte("noise")); err != nil {
						t.Error(err)
					}
					_ = recv.Topics()
					recv.Sinks(func(Sink) {})
					_ = recv.Healthy()
				}
			})
		}
		wg.Wait()
		if got := recv.Topics(); len(got) != 0 {
			t.Fatalf("Topics after every sink left = %q", got)
		}

		final := map[string]*testSink{}
		for _, topic := range topics {
			final[topic] = newSink()
			subscribe(t, recv, topic, final[topic])
		}
		for _, topic := range topics {
			publish(t, pub, topic, "final "+topic)
		}
		for _, topic := range topics {
			s := final[topic]
			for { // noise still in flight may come first
				d := s.next(t)
				if d.topic != topic {
					t.Fatalf("sink of %q got a message of %q", topic, d.topic)
				}
				if string(d.payload) == "final "+topic {
					break
				}
			}
		}
	})
}

func TestLoopbackConformance(t *testing.T) {
	runBrokerConformance(t, true, func(*testing.T) (Broker, Broker) { return NewLoopback(), nil })
}

func TestRedisConformance(t *testing.T) {
	url := redisURL(t)
	runBrokerConformance(t, true, func(t *testing.T) (Broker, Broker) {
		prefix := randomPrefix()
		return newTestRedis(t, url, prefix, RedisConfig{}), newTestRedis(t, url, prefix, RedisConfig{})
	})
}

func randomPrefix() string { return fmt.Sprintf("sessiond-test:%s:", rand.Text()[:12]) }
