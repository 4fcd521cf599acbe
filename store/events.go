package store

import (
	"database/sql"
	"time"

	"github.com/sessiond/sessiond/session"
)

const eventColumns = `id, user_id, session_id, kind, reason, detail, at`

func scanEvent(row scanner) (session.Event, error) {
	var e session.Event
	var sid, reason sql.NullString
	var at int64
	if err := row.Scan(&e.ID, &e.UserID, &sid, &e.Kind, &reason, &e.Detail, &at); err != nil {
		return session.Event{}, err
	}
	e.SessionID, e.Reason, e.At = sid.String, reason.String, time.UnixMilli(at).UTC()
	return e, nil
}
