package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestLoginCeilingBackoff: a username's ceiling across addresses halves for every window that
// reached it within the hour, down to the per-address budget, and recovers after the hour.
func TestLoginCeilingBackoff(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mc := NewMemoryCounter()
	mc.now = func() time.Time { return now }
	s := &Server{limits: Limits{LoginFailuresPerUser: 2, LoginCeilingPerUser: 8}.withDefaults(), counter: mc,
		metrics: NewMetrics(), log: zerolog.Nop()}
	ctx := context.Background()
	addr := 0
	allowed := func() int { // attempts from ever new addresses until refused
		t.Helper()
		for n := 0; n < 100; n++ {
			addr++
			if s.spend(ctx, loginBudget{pair: fmt.Sprintf("u@%d", addr), user: "u"}) {
				return n
			}
		}
		t.Fatal("never refused")
		return 0
	}
	for i, want := range []int{8, 4, 2, 2} {
		if got := allowed(); got != want {
			t.Fatalf("window %d: %d attempts allowed, want %d", i+1, got, want)
		}
		now = now.Add(time.Minute)
	}
	now = now.Add(time.Hour)
	if got := allowed(); got != 8 {
		t.Fatalf("an hour later: %d attempts allowed, want the full ceiling 8", got)
	}
	// One pair's own budget is the smaller bound.
	now = now.Add(time.Minute)
	for i := 0; i < 2; i++ {
		if s.spend(ctx, loginBudget{pair: "u@home", user: "u"}) {
			t.Fatalf("attempt %d from one address refused", i+1)
		}
	}
	if !s.spend(ctx, loginBudget{pair: "u@home", user: "u"}) {
		t.Fatal("a third attempt from one address allowed")
	}
}
