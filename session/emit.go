package session

import (
	"context"
	"encoding/json"
	"time"
)

// emit records security events in one place: one structured log line each (stable `event`
// name, keyed hash of the session id, user id, reason — never a token or metadata), the
// observer's counters, and the user's activity list for the kinds a person would want to see.
func (m *Manager) emit(ctx context.Context, evs ...Event) {
	var keep []Event
	for _, ev := range evs {
		if ev.At.IsZero() {
			ev.At = m.now()
		}
		l := m.log.Info()
		if ev.Kind == EventTokenReuse || ev.Kind == EventFingerprint || ev.Kind == EventUserDeleted || ev.Kind == EventLoginFailed {
			l = m.log.Warn()
		}
		l = l.Str("event", ev.Kind).Str("user_id", ev.UserID)
		if ev.SessionID != "" {
			l = l.Str("session", m.keys.LogID(ev.SessionID))
		}
		if ev.Reason != "" {
			l = l.Str("reason", ev.Reason)
		}
		l.Msg("security event")
		m.observer.SecurityEvent(ev.Kind, ev.Reason)
		if persisted[ev.Kind] && ev.UserID != "" {
			if ev.ID == "" {
				ev.ID = NewID()
			}
			keep = append(keep, ev)
		}
	}
	if len(keep) == 0 {
		return
	}
	// The change itself is already stored; a lost activity row is logged, not fatal.
	// Detached from the request (the change happened; its record should land) but bounded, so
	// a stalled store cannot hold the caller.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := m.events.AddEvents(wctx, keep); err != nil {
		m.log.Warn().Err(err).Msg("security events not stored")
	}
}

// eventWithDetail gives ev an id and seals the device detail bound to it.
func (m *Manager) eventWithDetail(ev Event, dev DeviceInfo) Event {
	ev.ID = NewID()
	b, _ := json.Marshal(EventDetail{Device: dev.Label, IP: dev.IP})
	ev.Detail = m.keys.seal(b, "event:"+ev.ID)
	return ev
}

// Activity is one entry of a user's recent security activity, opened for its owner.
type Activity struct {
	Kind      string
	Reason    string
	SessionID string
	Device    string
	IP        string
	At        time.Time
}

// RecordExpiry records that a device watched its session reach a deadline (reason idle or
// absolute).
func (m *Manager) RecordExpiry(ctx context.Context, s Session, reason string) {
	m.emit(ctx, Event{Kind: EventExpired, UserID: s.UserID, SessionID: s.ID, Reason: reason})
	m.record(ctx, Change{Kind: ChangeSessionEnded, UserID: s.UserID, SessionID: s.ID, Reason: reason})
}

// Activity returns the user's most recent security events, newest first.
func (m *Manager) Activity(ctx context.Context, userID string, limit int) ([]Activity, error) {
	evs, err := m.events.ListEvents(ctx, userID, limit)
	if err != nil {
		return nil, err
	}
	out := make([]Activity, 0, len(evs))
	for _, e := range evs {
		a := Activity{Kind: e.Kind, Reason: e.Reason, SessionID: e.SessionID, At: e.At}
		if len(e.Detail) > 0 {
			if pt, err := m.keys.open(e.Detail, "event:"+e.ID); err == nil {
				var d EventDetail
				if json.Unmarshal(pt, &d) == nil {
					a.Device, a.IP = d.Device, d.IP
				}
			}
		}
		out = append(out, a)
	}
	return out, nil
}

// nopEvents is the EventStore of a store that keeps no events: they are only logged.
type nopEvents struct{}

func (nopEvents) AddEvents(context.Context, []Event) error                        { return nil }
func (nopEvents) ListEvents(context.Context, string, int) ([]Event, error)        { return nil, nil }
func (nopEvents) DeleteEventsBefore(context.Context, time.Time, int) (int, error) { return 0, nil }
