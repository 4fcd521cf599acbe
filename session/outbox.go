package session

import (
	"context"
	"errors"
	"time"
)

// The outbox records, for the application's servers, what happened to sessions: created,
// refreshed, ended (with the reason), and users deleted. It is written after the change itself
// is stored (a lost entry is logged), and read in order by the event stream, from any node.

// ChangesRetention is how long the outbox keeps changes for a stream to resume from.
const ChangesRetention = 7 * 24 * time.Hour

// ErrNoOutbox: the store keeps no outbox.
var ErrNoOutbox = errors.New("session: this store keeps no outbox")

func (m *Manager) record(ctx context.Context, changes ...Change) {
	ob, ok := m.store.(OutboxStore)
	if !ok || len(changes) == 0 {
		return
	}
	now := m.now()
	for i := range changes {
		if changes[i].At.IsZero() {
			changes[i].At = now
		}
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := ob.AppendChanges(wctx, changes); err != nil {
		m.log.Warn().Err(err).Int("changes", len(changes)).Msg("outbox changes not stored")
	}
}

// ChangesAfter returns at most limit changes after seq, in order.
func (m *Manager) ChangesAfter(ctx context.Context, seq int64, limit int) ([]Change, error) {
	ob, ok := m.store.(OutboxStore)
	if !ok {
		return nil, ErrNoOutbox
	}
	return ob.ChangesAfter(ctx, seq, limit)
}

// LastChangeSeq returns the newest change's sequence number (0 for none).
func (m *Manager) LastChangeSeq(ctx context.Context) (int64, error) {
	ob, ok := m.store.(OutboxStore)
	if !ok {
		return 0, ErrNoOutbox
	}
	return ob.LastChangeSeq(ctx)
}

func (m *Manager) sweepChanges(ctx context.Context) error {
	ob, ok := m.store.(OutboxStore)
	if !ok {
		return nil
	}
	_, err := ob.DeleteChangesBefore(ctx, m.now().Add(-ChangesRetention), m.policy.SweepBatch)
	return err
}
