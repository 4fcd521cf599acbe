package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/sessiond/sessiond/protocol"
	"github.com/sessiond/sessiond/session"
)

// events.go: GET /api/v1/events, a Server-Sent Events stream of the outbox for the application's
// servers (service clients): session.created, session.refreshed, session.ended (with reason) and
// user.deleted, each with its sequence number as the event id. Last-Event-ID resumes after that
// id, from the store: across node restarts and on any node. A stream polls the outbox, so an
// ending on any node reaches every node's streams.

const eventsPath = "/api/v1/events"

// Stream timing: how often the outbox is read, how long a gap in the sequence (a write committed
// out of order) is waited for, and how often an idle stream says it is alive.
const (
	streamPoll      = 200 * time.Millisecond
	streamGapWait   = 2 * time.Second
	streamHeartbeat = 15 * time.Second
)

// changeData is an event's data.
type changeData struct {
	UserID    string `json:"user_id"`
	SessionID string `json:"session_id,omitempty"`
	Reason    string `json:"reason,omitempty"`
	At        string `json:"at"`
}

func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	if _, err := s.mgr.AuthenticateService(r.Context(), serviceSecret(r)); err != nil {
		if errors.Is(err, session.ErrInvalid) {
			err = errServiceAuth
		}
		s.httpError(w, r, err)
		return
	}
	last, err := s.streamStart(r)
	if err != nil {
		s.httpError(w, r, err)
		return
	}
	// A stream outlives the server's write timeout for plain requests.
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, ": sessiond events\n\n")
	_ = rc.Flush()
	s.stream(r.Context(), w, rc, last)
}

// streamStart is the sequence number to stream after: Last-Event-ID (header, or the
// last_event_id query parameter), else the newest change (only what happens from now on).
func (s *Server) streamStart(r *http.Request) (int64, error) {
	v := r.Header.Get("Last-Event-ID")
	if v == "" {
		v = r.URL.Query().Get("last_event_id")
	}
	if v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return 0, newWireError(protocol.CodeBadRequest, http.StatusBadRequest, "Last-Event-ID must be an event id")
		}
		return n, nil
	}
	return s.mgr.LastChangeSeq(r.Context())
}

// stream writes the changes after last until the client goes away.
func (s *Server) stream(ctx context.Context, w http.ResponseWriter, rc *http.ResponseController, last int64) {
	poll := time.NewTicker(streamPoll)
	defer poll.Stop()
	var gapSince, lastWrite time.Time
	lastWrite = time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.stopping: // the node shuts down: the client resumes elsewhere with Last-Event-ID
			return
		case <-poll.C:
		}
		changes, err := s.mgr.ChangesAfter(ctx, last, 500)
		if err != nil {
			continue // the store is away: try again
		}
		// A change committed out of order leaves a gap: wait a little for it to appear.
		if len(changes) > 0 && changes[0].Seq != last+1 {
			if gapSince.IsZero() {
				gapSince = time.Now()
			}
			if time.Since(gapSince) < streamGapWait {
				continue
			}
		}
		gapSince = time.Time{}
		for _, c := range changes {
			data, _ := json.Marshal(changeData{UserID: c.UserID, SessionID: c.SessionID, Reason: c.Reason, At: wireTime(c.At)})
			if _, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", c.Seq, c.Kind, data); err != nil {
				return
			}
			last = c.Seq
		}
		if len(changes) == 0 && time.Since(lastWrite) < streamHeartbeat {
			continue
		}
		if len(changes) == 0 {
			fmt.Fprint(w, ": alive\n\n")
		}
		if rc.Flush() != nil {
			return
		}
		lastWrite = time.Now()
	}
}
