package session_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/bytemare/opaque"
	"github.com/rs/zerolog"

	"github.com/sessiond/sessiond/session"
	"github.com/sessiond/sessiond/store"
)

var benchKSF = &opaque.ClientOptions{KSFSalt: make([]byte, 16), KSFLength: 64, KSFParameters: []uint64{1, 64, 1}}

// benchManager is a manager over SQLite in a temporary directory, with a long cache TTL.
func benchManager(b *testing.B) *session.Manager {
	b.Helper()
	st, err := store.OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	m, err := session.NewManager(session.Config{Store: st, Keys: session.GenerateKeys(), Logger: zerolog.Nop(),
		Policy: session.Policy{CacheTTL: time.Hour}})
	if err != nil {
		b.Fatal(err)
	}
	return m
}

func benchRegister(b *testing.B, m *session.Manager, name string) {
	b.Helper()
	ctx := context.Background()
	c, _ := opaque.DefaultConfiguration().Client()
	req, _ := c.RegistrationInit([]byte("pw"))
	resp, reg, err := m.RegisterStart(ctx, name, req.Serialize())
	if err != nil {
		b.Fatal(err)
	}
	r, _ := c.Deserialize.RegistrationResponse(resp)
	rec, _, err := c.RegistrationFinalize(r, nil, nil, benchKSF)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := m.RegisterFinish(ctx, reg, rec.Serialize()); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkLoginServerSteps is the server's side of one OPAQUE login, in process: LoginStart
// (user lookup, record opening, KE2) and LoginFinish (KE3 check, session creation in SQLite,
// security event). The client's steps run with the timer stopped. Each user logs in at most
// 8 times, so no login evicts a session.
func BenchmarkLoginServerSteps(b *testing.B) {
	m := benchManager(b)
	ctx := context.Background()
	user := ""
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if i%8 == 0 {
			user = fmt.Sprintf("bench-%d", i/8)
			benchRegister(b, m, user)
		}
		c, _ := opaque.DefaultConfiguration().Client()
		ke1, _ := c.GenerateKE1([]byte("pw"))
		ke1b := ke1.Serialize()
		b.StartTimer()
		ke2b, l, err := m.LoginStart(ctx, user, ke1b)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		ke2, _ := c.Deserialize.KE2(ke2b)
		ke3, _, _, err := c.GenerateKE3(ke2, nil, nil, benchKSF)
		if err != nil {
			b.Fatal(err)
		}
		ke3b := ke3.Serialize()
		b.StartTimer()
		if _, _, err := m.LoginFinish(ctx, l, ke3b, session.DeviceInfo{Label: "bench", IP: "127.0.0.1", UserAgent: "Go-http-client/1.1"}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkManagerValidate is Manager.Validate of a live token served from the cache: parse,
// keyed hash, cache lookup, the node's unwritten activity, the deadline checks.
func BenchmarkManagerValidate(b *testing.B) {
	m := benchManager(b)
	ctx := context.Background()
	benchRegister(b, m, "bench")
	c, _ := opaque.DefaultConfiguration().Client()
	ke1, _ := c.GenerateKE1([]byte("pw"))
	ke2b, l, err := m.LoginStart(ctx, "bench", ke1.Serialize())
	if err != nil {
		b.Fatal(err)
	}
	ke2, _ := c.Deserialize.KE2(ke2b)
	ke3, _, _, _ := c.GenerateKE3(ke2, nil, nil, benchKSF)
	_, token, err := m.LoginFinish(ctx, l, ke3.Serialize(), session.DeviceInfo{Label: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := m.Validate(ctx, token); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := m.Validate(ctx, token); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
