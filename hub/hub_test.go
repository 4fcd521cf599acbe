package hub

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeBroker records what the Hub asks of a broker, and fails when told to.
type fakeBroker struct {
	mu         sync.Mutex
	calls      []string // "sub t" / "unsub t", in order
	subscribed map[string]bool
	inFlight   map[string]bool
	overlap    error // set when two calls for one topic ran at once
	fail       error
	// yield makes calls give way to other goroutines mid-call, to shake out orderings.
	yield bool
	// hold, when set, blocks Subscribe until it is closed.
	hold chan struct{}

	deliver func(string, []byte)
}

var _ Broker = (*fakeBroker)(nil)

func newFakeBroker() *fakeBroker {
	return &fakeBroker{subscribed: map[string]bool{}, inFlight: map[string]bool{}}
}

func (f *fakeBroker) Handle(d func(string, []byte)) { f.deliver = d }
func (f *fakeBroker) Publish(_ context.Context, t string, p []byte) error {
	f.deliver(t, p)
	return nil
}
func (f *fakeBroker) Run(ctx context.Context) error { <-ctx.Done(); return nil }
func (f *fakeBroker) Healthy() bool                 { return true }

func (f *fakeBroker) Subscribe(_ context.Context, topic string) error {
	return f.call("sub", topic, true)
}

func (f *fakeBroker) Unsubscribe(_ context.Context, topic string) error {
	return f.call("unsub", topic, false)
}

func (f *fakeBroker) call(op, topic string, sub bool) error {
	f.mu.Lock()
	f.calls = append(f.calls, op+" "+topic)
	if f.inFlight[topic] && f.overlap == nil {
		f.overlap = fmt.Errorf("two broker calls for %q at once", topic)
	}
	f.inFlight[topic] = true
	hold, fail := f.hold, f.fail
	f.mu.Unlock()

	if sub && hold != nil {
		<-hold
	}
	if f.yield {
		runtime.Gosched()
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	f.inFlight[topic] = false
	if fail != nil {
		return fail
	}
	if sub {
		f.subscribed[topic] = true
	} else {
		delete(f.subscribed, topic)
	}
	return nil
}

func (f *fakeBroker) callLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeBroker) subscribedTopics() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for t := range f.subscribed {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

func sortedTopics(h *Hub) []string {
	out := h.Topics()
	slices.Sort(out)
	return out
}

func TestHubBrokerSubscriptionFollowsSinks(t *testing.T) {
	ctx := t.Context()
	type step struct {
		sub   bool
		sink  int
		topic string
		calls []string // broker calls this step must add
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"first sink subscribes, last unsubscribes", []step{
			{true, 1, "a", []string{"sub a"}},
			{true, 2, "a", nil},
			{false, 1, "a", nil},
			{false, 2, "a", []string{"unsub a"}},
		}},
		{"topics are independent", []step{
			{true, 1, "a", []string{"sub a"}},
			{true, 1, "b", []string{"sub b"}},
			{false, 1, "a", []string{"unsub a"}},
			{false, 1, "b", []string{"unsub b"}},
		}},
		{"subscribing a sink twice is one subscription", []step{
			{true, 1, "a", []string{"sub a"}},
			{true, 1, "a", nil},
			{false, 1, "a", []string{"unsub a"}},
		}},
		{"unknown sink or topic is a no-op", []step{
			{false, 1, "a", nil},
			{true, 1, "a", []string{"sub a"}},
			{false, 2, "a", nil},
			{false, 1, "b", nil},
		}},
		{"resubscribing after the last sink left", []step{
			{true, 1, "a", []string{"sub a"}},
			{false, 1, "a", []string{"unsub a"}},
			{true, 2, "a", []string{"sub a"}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newFakeBroker()
			h := New(b)
			sinks := map[int]*testSink{1: newSink(), 2: newSink()}
			var want []string
			for i, s := range tt.steps {
				var err error
				if s.sub {
					err = h.Subscribe(ctx, s.topic, sinks[s.sink])
				} else {
					err = h.Unsubscribe(ctx, s.topic, sinks[s.sink])
				}
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				want = append(want, s.calls...)
				if got := b.callLog(); !slices.Equal(got, want) {
					t.Fatalf("step %d: broker calls %q, want %q", i, got, want)
				}
			}
		})
	}
}

func TestHubTopicsAndSinks(t *testing.T) {
	ctx := t.Context()
	h := New(newFakeBroker())
	s1, s2 := newSink(), newSink()
	for _, sub := range []struct {
		topic string
		s     Sink
	}{{"a", s1}, {"b", s1}, {"b", s2}} {
		if err := h.Subscribe(ctx, sub.topic, sub.s); err != nil {
			t.Fatal(err)
		}
	}
	if got := sortedTopics(h); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("Topics = %q", got)
	}

	seen := map[Sink]int{}
	h.Sinks(func(s Sink) { seen[s]++ })
	if len(seen) != 2 || seen[s1] != 1 || seen[s2] != 1 {
		t.Fatalf("Sinks visited %v, want s1 and s2 once each", seen)
	}

	// Sinks runs f without the lock: a server closing every connection unsubscribes from it.
	h.Sinks(func(s Sink) {
		for _, topic := range []string{"a", "b"} {
			if err := h.Unsubscribe(ctx, topic, s); err != nil {
				t.Error(err)
			}
		}
	})
	if got := h.Topics(); len(got) != 0 {
		t.Fatalf("Topics after unsubscribing everything = %q", got)
	}
	h.Sinks(func(Sink) { t.Fatal("Sinks visited a sink after all unsubscribed") })
}

func TestHubDeliversToTopicSinksOnly(t *testing.T) {
	ctx := t.Context()
	b := newFakeBroker()
	h := New(b)
	sa, sb, sab := newSink(), newSink(), newSink()
	for _, sub := range []struct {
		topic string
		s     Sink
	}{{"a", sa}, {"b", sb}, {"a", sab}, {"b", sab}} {
		if err := h.Subscribe(ctx, sub.topic, sub.s); err != nil {
			t.Fatal(err)
		}
	}
	b.deliver("a", []byte("1"))
	b.deliver("nobody", []byte("2"))
	expectDelivery(t, sa, "a", "1")
	expectDelivery(t, sab, "a", "1")
	sb.expectEmpty(t)
	sa.expectEmpty(t)
	sab.expectEmpty(t)
}

func TestHubBrokerErrorIsRetried(t *testing.T) {
	ctx := t.Context()
	b := newFakeBroker()
	h := New(b)
	boom := errors.New("boom")
	s1, s2 := newSink(), newSink()

	b.fail = boom
	if err := h.Subscribe(ctx, "a", s1); !errors.Is(err, boom) {
		t.Fatalf("Subscribe = %v, want the broker's error", err)
	}
	if got := h.Topics(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("a sink whose broker subscription failed stays registered; Topics = %q", got)
	}

	// The next sink retries the broker even though it is not the first.
	b.fail = nil
	if err := h.Subscribe(ctx, "a", s2); err != nil {
		t.Fatal(err)
	}
	if got, want := b.callLog(), []string{"sub a", "sub a"}; !slices.Equal(got, want) {
		t.Fatalf("broker calls %q, want %q", got, want)
	}

	// A failed Unsubscribe is retried by the next change too.
	_ = h.Unsubscribe(ctx, "a", s1)
	b.fail = boom
	if err := h.Unsubscribe(ctx, "a", s2); !errors.Is(err, boom) {
		t.Fatalf("Unsubscribe = %v, want the broker's error", err)
	}
	b.fail = nil
	if err := h.Unsubscribe(ctx, "a", s2); err != nil {
		t.Fatal(err)
	}
	if got := b.subscribedTopics(); len(got) != 0 {
		t.Fatalf("broker still subscribed to %q", got)
	}
}

// A sink joining a topic whose first sink is still waiting for the broker must not return
// before the broker confirmed: a notice published right after would be missed.
func TestHubSubscribeWaitsForFirstSinksBrokerCall(t *testing.T) {
	ctx := t.Context()
	b := newFakeBroker()
	b.hold = make(chan struct{})
	h := New(b)

	first := make(chan error, 1)
	go func() { first <- h.Subscribe(ctx, "a", newSink()) }()
	waitUntil(t, "first broker call", func() bool { return len(b.callLog()) == 1 })

	second := make(chan bool, 1)
	go func() {
		_ = h.Subscribe(ctx, "a", newSink())
		second <- slices.Equal(b.subscribedTopics(), []string{"a"})
	}()
	// Release the broker only once the second Subscribe is provably waiting: its goroutine is
	// parked on the topic's ordering lock inside reconcile. Returning early fails here.
	deadline := time.Now().Add(waitFor)
	for !waitingInReconcile() {
		select {
		case <-second:
			t.Fatal("second sink's Subscribe returned while the first one's broker call was held")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for the second Subscribe to wait on the first one's broker call")
		}
		time.Sleep(time.Millisecond)
	}
	close(b.hold)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if confirmed := <-second; !confirmed {
		t.Fatal("second sink's Subscribe returned before the broker confirmed the topic")
	}
}

// waitingInReconcile reports whether some goroutine is parked on a mutex inside Hub.reconcile.
func waitingInReconcile() bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		header, _, _ := strings.Cut(g, "\n")
		if strings.Contains(header, "[sync.Mutex.Lock") && strings.Contains(g, "(*Hub).reconcile") {
			return true
		}
	}
	return false
}

// Sinks coming and going concurrently on few topics must leave the broker subscribed to exactly
// the topics that still have sinks, with never two calls for one topic at once.
func TestHubConcurrentChurnConverges(t *testing.T) {
	ctx := t.Context()
	b := newFakeBroker()
	b.yield = true
	h := New(b)
	topics := []string{"a", "b", "c"}

	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			s := newSink()
			for i := range 200 {
				topic := topics[(g+i)%len(topics)]
				if err := h.Subscribe(ctx, topic, s); err != nil {
					t.Error(err)
				}
				// Odd goroutines end subscribed to their last topic.
				if i < 199 || g%2 == 0 {
					if err := h.Unsubscribe(ctx, topic, s); err != nil {
						t.Error(err)
					}
				}
				_ = h.Topics()
			}
		})
	}
	wg.Wait()

	if b.overlap != nil {
		t.Fatal(b.overlap)
	}
	want := sortedTopics(h)
	if got := b.subscribedTopics(); !slices.Equal(got, want) {
		t.Fatalf("broker subscribed to %q, hub has sinks on %q", got, want)
	}
	if len(want) == 0 {
		t.Fatal("expected some sinks to remain subscribed")
	}
}
