package clientapi

import (
	"context"
	"net/http"
	"slices"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// RemoteTimestamps asks other servers for timestamp_to_event (the
// federation edge).
type RemoteTimestamps interface {
	RemoteTimestampToEvent(ctx context.Context, roomID string, servers []spec.ServerName, ts int64, backwards bool) (eventID string, originTS int64, err error)
}

// SetRemoteTimestamps lets timestamp_to_event ask the room's other servers.
func (a *API) SetRemoteTimestamps(t RemoteTimestamps) { a.remoteTS = t }

// remoteTimestampTimeout bounds the wait for other servers' answers.
const remoteTimestampTimeout = 5 * time.Second

// remoteTimestamp asks the room's other servers for the event closest to
// ts; ok is false when none answered with one in the right direction.
func (a *API) remoteTimestamp(r *http.Request, roomID string, ts int64, backwards bool) (string, int64, bool) {
	servers, err := a.rooms.ServersInRoom(r.Context(), roomID)
	if err != nil {
		return "", 0, false
	}
	servers = slices.DeleteFunc(servers, func(s spec.ServerName) bool { return string(s) == a.cfg.ServerName })
	if len(servers) == 0 {
		return "", 0, false
	}
	ctx, cancel := context.WithTimeout(r.Context(), remoteTimestampTimeout)
	defer cancel()
	id, rts, err := a.remoteTS.RemoteTimestampToEvent(ctx, roomID, servers, ts, backwards)
	if err != nil || id == "" || (!backwards && rts < ts) || (backwards && rts > ts) {
		if err != nil {
			a.log.WithError(err).WithField("room_id", roomID).Debug("timestamp_to_event: no answer from other servers")
		}
		return "", 0, false
	}
	return id, rts, true
}
