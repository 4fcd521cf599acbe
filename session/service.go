package session

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Service clients are the application's own servers. Each has a secret, shown once when it is
// created; only its SHA-256 is stored (a 256-bit random value needs no slow hash). A service
// introspects users' tokens without acting as the user: no fingerprint of its own client is
// compared, and it need not count as the user's activity.

// ServiceSecretPrefix starts every service secret, so that one found in a log is recognised.
const ServiceSecretPrefix = "sds_"

// serviceCache keeps authenticated service clients for serviceCacheTTL (or Policy.CacheTTL if
// shorter), so that a busy backend's introspections do not each read the store: a revocation
// takes effect at once on the node that made it, and within that bound on the others.
const serviceCacheTTL = 5 * time.Second

type serviceCache struct {
	mu sync.Mutex
	m  map[string]cachedService
}

type cachedService struct {
	c       ServiceClient
	fetched time.Time
}

// ErrNoServices: the store keeps no service clients.
var ErrNoServices = errors.New("session: this store keeps no service clients")

func (m *Manager) serviceStore() (ServiceStore, error) {
	ss, ok := m.store.(ServiceStore)
	if !ok {
		return nil, ErrNoServices
	}
	return ss, nil
}

func serviceSecretHash(secret string) []byte {
	h := sha256.Sum256([]byte("sessiond service secret v1\x00" + secret))
	return h[:]
}

// CreateServiceClient adds a service client and returns it with its secret, which is not
// kept anywhere.
func (m *Manager) CreateServiceClient(ctx context.Context, name string) (ServiceClient, string, error) {
	name = strings.TrimSpace(name)
	if err := checkText(name, "service name"); err != nil || name == "" || len([]rune(name)) > 64 {
		return ServiceClient{}, "", fmt.Errorf("%w: a service name is 1 to 64 characters of text", ErrBadInput)
	}
	ss, err := m.serviceStore()
	if err != nil {
		return ServiceClient{}, "", err
	}
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	secret := ServiceSecretPrefix + EncodeB64(raw)
	c := ServiceClient{ID: NewID(), Name: name, SecretHash: serviceSecretHash(secret), CreatedAt: m.now()}
	if err := ss.CreateServiceClient(ctx, c); err != nil {
		return ServiceClient{}, "", err
	}
	return c, secret, nil
}

// ListServiceClients returns every service client, revoked ones included.
func (m *Manager) ListServiceClients(ctx context.Context) ([]ServiceClient, error) {
	ss, err := m.serviceStore()
	if err != nil {
		return nil, err
	}
	return ss.ListServiceClients(ctx)
}

// RevokeServiceClient stops a service client's secret from working. Unknown or already
// revoked: ErrNotFound.
func (m *Manager) RevokeServiceClient(ctx context.Context, id string) error {
	ss, err := m.serviceStore()
	if err != nil {
		return err
	}
	if err := ss.RevokeServiceClient(ctx, id, m.now()); err != nil {
		return err
	}
	m.services.mu.Lock()
	for k, e := range m.services.m {
		if e.c.ID == id {
			delete(m.services.m, k)
		}
	}
	m.services.mu.Unlock()
	return nil
}

// AuthenticateService returns the live service client whose secret this is; anything else is
// ErrInvalid.
func (m *Manager) AuthenticateService(ctx context.Context, secret string) (ServiceClient, error) {
	if !strings.HasPrefix(secret, ServiceSecretPrefix) || len(secret) != len(ServiceSecretPrefix)+43 {
		return ServiceClient{}, fmt.Errorf("%w: not a service secret", ErrInvalid)
	}
	hash := serviceSecretHash(secret)
	now := m.now()
	m.services.mu.Lock()
	e, ok := m.services.m[string(hash)]
	m.services.mu.Unlock()
	if ok && now.Sub(e.fetched) < min(serviceCacheTTL, m.policy.CacheTTL) && !now.Before(e.fetched) {
		return e.c, nil
	}
	ss, err := m.serviceStore()
	if err != nil {
		return ServiceClient{}, err
	}
	c, err := ss.ServiceClientBySecret(ctx, hash)
	if errors.Is(err, ErrNotFound) || err == nil && !c.RevokedAt.IsZero() {
		return ServiceClient{}, fmt.Errorf("%w: unknown or revoked service client", ErrInvalid)
	}
	if err != nil {
		return ServiceClient{}, err
	}
	m.services.mu.Lock()
	if m.services.m == nil || len(m.services.m) > 10_000 {
		m.services.m = map[string]cachedService{}
	}
	m.services.m[string(hash)] = cachedService{c: c, fetched: now}
	m.services.mu.Unlock()
	return c, nil
}

// Introspect answers a service's question about a token: the live session it belongs to, or
// false for anything else (unknown, ended, malformed). With client set (the end user's address
// and User-Agent as the service saw them) the fingerprint policy applies as on the user's own
// requests; without it none. touch records the call as the user's activity.
func (m *Manager) Introspect(ctx context.Context, token string, client *Client, touch bool) (Session, bool, error) {
	s, err := m.Validate(ctx, token)
	if errors.Is(err, ErrInvalid) {
		return Session{}, false, nil
	}
	if err != nil {
		return Session{}, false, err
	}
	if client != nil {
		if err := m.CheckClient(ctx, s, *client); errors.Is(err, ErrInvalid) {
			return Session{}, false, nil
		} else if err != nil {
			return Session{}, false, err
		}
	}
	if touch {
		s = m.Touch(s)
	}
	return s, true, nil
}
