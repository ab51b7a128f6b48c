package roomserver

import (
	"context"
	"fmt"
	"math"
	"net/url"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// ParseTimestampQuery reads the ts and dir parameters that the client and
// federation timestamp_to_event endpoints share.
func ParseTimestampQuery(q url.Values) (ts int64, backwards bool, err error) {
	if !q.Has("ts") {
		return 0, false, mxerr.MissingParam("ts is required")
	}
	ts, err = strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil {
		return 0, false, mxerr.InvalidParam("ts must be an integer (milliseconds since the Unix epoch)")
	}
	switch q.Get("dir") {
	case "f":
	case "b":
		backwards = true
	case "":
		return 0, false, mxerr.MissingParam("dir is required")
	default:
		return 0, false, mxerr.InvalidParam("dir must be \"f\" or \"b\"")
	}
	return ts, backwards, nil
}

// timestampBatch is how many events one step of TimestampToEvent reads,
// and maxTimestampScan how many it reads in all before giving up: events
// the user may not see are skipped, and a user who left a busy room long
// ago must not make the server read all of its later history.
const (
	timestampBatch   = 100
	maxTimestampScan = 5000
)

// TimestampToEvent finds the event of a room closest to ts that userID may
// see: the first at or after ts (forwards) or the last at or before it
// (backwards), by origin_server_ts and then by arrival. None is 404
// M_NOT_FOUND. The user must be able to read the room at all, as for
// /messages: 403 M_FORBIDDEN otherwise.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1roomsroomidtimestamp_to_event
func (s *Service) TimestampToEvent(ctx context.Context, roomID, userID string, ts int64, backwards bool) (*Event, error) {
	if _, err := s.checkCanRead(ctx, roomID, userID); err != nil {
		return nil, err
	}
	vf, err := s.newVisibilityFilter(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	return s.timestampToEvent(ctx, roomID, ts, backwards, vf.allowed)
}

// TimestampToEventForServer answers another server's timestamp_to_event:
// as TimestampToEvent, with what that server may see (it must be in the
// room, or the room world-readable).
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1timestamp_to_eventroomid
func (s *Service) TimestampToEventForServer(ctx context.Context, origin spec.ServerName, roomID string, ts int64, backwards bool) (*Event, error) {
	if err := s.checkServerCanRead(ctx, roomID, origin); err != nil {
		return nil, err
	}
	return s.timestampToEvent(ctx, roomID, ts, backwards, func(ctx context.Context, ev *Event) (bool, error) {
		visible, err := s.filterForServer(ctx, origin, []*Event{ev})
		return len(visible) > 0, err
	})
}

// timestampToEvent finds the event closest to ts that visible accepts.
func (s *Service) timestampToEvent(ctx context.Context, roomID string, ts int64, backwards bool, visible func(context.Context, *Event) (bool, error)) (*Event, error) {
	// The cursor is the (origin_ts, stream_pos) of the last event read; the
	// first step starts just before ts (forwards) or just after it.
	curTS, curPos := ts, int64(0)
	q := `SELECT event_id, origin_ts, stream_pos FROM events WHERE room_id = $1 AND stream_pos > 0
		AND (origin_ts > $2 OR (origin_ts = $2 AND stream_pos > $3))
		ORDER BY origin_ts ASC, stream_pos ASC LIMIT $4`
	if backwards {
		curPos = math.MaxInt64
		q = `SELECT event_id, origin_ts, stream_pos FROM events WHERE room_id = $1 AND stream_pos > 0
			AND (origin_ts < $2 OR (origin_ts = $2 AND stream_pos < $3))
			ORDER BY origin_ts DESC, stream_pos DESC LIMIT $4`
	}
	for scanned := 0; scanned < maxTimestampScan; {
		ids, last, err := s.timestampStep(ctx, q, roomID, curTS, curPos)
		if err != nil {
			return nil, err
		}
		if len(ids) == 0 {
			break
		}
		scanned += len(ids)
		curTS, curPos = last[0], last[1]
		evs, err := s.events(ctx, s.db, ids)
		if err != nil {
			return nil, err
		}
		for _, id := range ids {
			ev, ok := evs[id]
			if !ok {
				continue
			}
			ok, err := visible(ctx, ev)
			if err != nil {
				return nil, err
			}
			if ok {
				return ev, nil
			}
		}
	}
	dir := "forward"
	if backwards {
		dir = "backward"
	}
	return nil, mxerr.NotFound("Unable to find event from %d in %s direction", ts, dir)
}

// timestampStep reads one batch of event IDs in order, and the
// (origin_ts, stream_pos) of the last.
func (s *Service) timestampStep(ctx context.Context, q, roomID string, ts, pos int64) ([]string, [2]int64, error) {
	var last [2]int64
	rows, err := s.db.QueryContext(ctx, q, roomID, ts, pos, timestampBatch)
	if err != nil {
		return nil, last, fmt.Errorf("events by timestamp: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id, &last[0], &last[1]); err != nil {
			return nil, last, err
		}
		ids = append(ids, id)
	}
	return ids, last, rows.Err()
}
