package client_test

import (
	"context"
	"fmt"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"github.com/sessiond/sessiond/client"
	"github.com/sessiond/sessiond/hub"
	"github.com/sessiond/sessiond/server"
	"github.com/sessiond/sessiond/session"
	"github.com/sessiond/sessiond/store"
)

// exampleServer runs a real sessiond (SQLite, one node) on a loopback port for the examples.
func exampleServer() (base string, stop func()) {
	dir, err := os.MkdirTemp("", "sessiond-example")
	if err != nil {
		log.Fatal(err)
	}
	st, err := store.OpenSQLite(context.Background(), filepath.Join(dir, "s.db"))
	if err != nil {
		log.Fatal(err)
	}
	h := hub.New(hub.NewLoopback())
	m, err := session.NewManager(session.Config{Store: st, Keys: session.GenerateKeys(), Logger: zerolog.Nop(),
		Notifier: server.NewNotifier(h, zerolog.Nop())})
	if err != nil {
		log.Fatal(err)
	}
	srv, err := server.New(server.Config{Manager: m, Hub: h, Logger: zerolog.Nop(), AllowInsecure: true})
	if err != nil {
		log.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	return ts.URL, func() { ts.Close(); st.Close(); os.RemoveAll(dir) }
}

// A laptop and a phone signed in as one user; the laptop signs the phone out, and the phone is
// told the moment it happens.
func ExampleClient() {
	base, stop := exampleServer()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	laptop := client.NewClient(base, client.Options{})
	defer laptop.Close()
	if _, _, err := laptop.Register(ctx, "alice", "correct horse battery staple"); err != nil {
		log.Fatal(err)
	}
	s, _, err := laptop.Login(ctx, "alice", "correct horse battery staple", "laptop")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("signed in on the", s.Device, "for at most", s.ExpiresAt.Sub(s.CreatedAt))

	phone := client.NewClient(base, client.Options{})
	if _, _, err := phone.Login(ctx, "alice", "correct horse battery staple", "phone"); err != nil {
		log.Fatal(err)
	}
	devices, err := laptop.Devices(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(devices), "devices")

	p, _ := phone.Session()
	if err := laptop.Revoke(ctx, p.ID); err != nil {
		log.Fatal(err)
	}
	for ev := range phone.Events() { // closed after EventEnded
		if ev.Type == client.EventEnded {
			fmt.Println("the phone was signed out:", ev.Reason)
		}
	}
	// Output:
	// signed in on the laptop for at most 12h0m0s
	// 2 devices
	// the phone was signed out: revoked_by_user
}

// The wait before each reconnect: exponential, capped, and jittered between half and all of it.
func ExampleBackoff() {
	for n := range 5 {
		d := client.Backoff(n, 250*time.Millisecond, 2*time.Second)
		ceiling := min(250*time.Millisecond<<n, 2*time.Second)
		fmt.Printf("attempt %d: within [%v, %v]: %v\n", n, ceiling/2, ceiling, d >= ceiling/2 && d <= ceiling)
	}
	// Output:
	// attempt 0: within [125ms, 250ms]: true
	// attempt 1: within [250ms, 500ms]: true
	// attempt 2: within [500ms, 1s]: true
	// attempt 3: within [1s, 2s]: true
	// attempt 4: within [1s, 2s]: true
}
