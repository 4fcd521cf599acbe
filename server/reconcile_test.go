package server

import (
	"context"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/sessiond/sessiond/hub"
	"github.com/sessiond/sessiond/session"
	"github.com/sessiond/sessiond/store"
)

// TestReconcileSoonCoalesces: hub re-connections that come while a re-check runs (a link that
// keeps flapping while the store is down, so that each re-check keeps trying) queue at most
// one more re-check, not one goroutine each.
func TestReconcileSoonCoalesces(t *testing.T) {
	st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	m, err := session.NewManager(session.Config{Store: st, Keys: session.GenerateKeys(), Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Manager: m, Hub: hub.New(hub.NewLoopback()), Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	s.reconciling.Lock() // a re-check is running
	before := runtime.NumGoroutine()
	for range 100 {
		s.reconcileSoon()
	}
	if grew := runtime.NumGoroutine() - before; grew > 1 {
		t.Fatalf("100 re-connections during a re-check left %d goroutines waiting, want at most 1", grew)
	}
	if !s.recheckDue.Load() {
		t.Fatal("no re-check queued behind the running one")
	}
	s.reconciling.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for s.recheckDue.Load() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if s.recheckDue.Load() {
		t.Fatal("the queued re-check never began")
	}
	s.reconciling.Lock() // and it finished
	s.reconciling.Unlock()
}
