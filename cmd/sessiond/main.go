// Command sessiond is the sessiond server: OPAQUE logins over a WebSocket, sessions with pushed
// lifecycle notices, on an embedded store (default) or PostgreSQL.
//
//	sessiond                 start the server (flags and SESSIOND_* variables: see -h)
//	sessiond version         print the version, VCS revision and Go version (also -version)
//	sessiond keygen -o FILE  write a new key file (mode 0600; -if-missing: keep an existing one)
//	sessiond keygen -rotate [-stage] -i IN -o OUT / -retire ID -i IN -o OUT   rotate keys
//	sessiond admin COMMAND   sessions, revoke, revoke-user, delete-user, rotate-keys, token
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr, nil)
	if err != nil && !errors.Is(err, errUsage) {
		fmt.Fprintln(os.Stderr, "sessiond:", err)
	}
	if err != nil {
		os.Exit(1)
	}
}
