package federation

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/roomserver"
)

// timestampToEvent answers GET /v1/timestamp_to_event/{roomId}?ts=&dir=.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1timestamp_to_eventroomid
func (a *API) timestampToEvent(r *http.Request, origin spec.ServerName, _ []byte) (any, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	if err := a.rooms.CheckServerACL(r.Context(), roomID.String(), origin); err != nil {
		return nil, err
	}
	ts, backwards, err := roomserver.ParseTimestampQuery(r.URL.Query())
	if err != nil {
		return nil, err
	}
	ev, err := a.rooms.TimestampToEventForServer(r.Context(), origin, roomID.String(), ts, backwards)
	if err != nil {
		return nil, err
	}
	return map[string]any{"event_id": ev.EventID(), "origin_server_ts": int64(ev.OriginServerTS())}, nil
}

// maxTimestampServers bounds how many servers one remote
// timestamp_to_event asks.
const maxTimestampServers = 3

// RemoteTimestampToEvent asks the room's other servers, in order, for the
// event closest to ts, and returns the first answer: for a room whose
// history we hold only from our join on, or with gaps, they may know
// closer events than we do (Synapse does the same).
func (a *API) RemoteTimestampToEvent(ctx context.Context, roomID string, servers []spec.ServerName, ts int64, backwards bool) (eventID string, originTS int64, err error) {
	dir := "f"
	if backwards {
		dir = "b"
	}
	path := "/_matrix/federation/v1/timestamp_to_event/" + url.PathEscape(roomID) + "?ts=" + strconv.FormatInt(ts, 10) + "&dir=" + dir
	var errs []error
	asked := 0
	for _, srv := range servers {
		if srv == a.cfg.ServerName || !a.cfg.allowed(srv) {
			continue
		}
		if asked == maxTimestampServers {
			break
		}
		asked++
		var out struct {
			EventID        string `json:"event_id"`
			OriginServerTS int64  `json:"origin_server_ts"`
		}
		if err := a.doSigned(ctx, http.MethodGet, srv, path, nil, &out); err != nil {
			errs = append(errs, err)
			continue
		}
		if out.EventID == "" {
			errs = append(errs, fmt.Errorf("%s answered without an event_id", srv))
			continue
		}
		return out.EventID, out.OriginServerTS, nil
	}
	if len(errs) == 0 {
		return "", 0, mxerr.NotFound("No other server to ask")
	}
	return "", 0, errors.Join(errs...)
}
