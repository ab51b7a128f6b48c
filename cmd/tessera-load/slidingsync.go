package main

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// What the sliding sync scenarios (ss-initial, ss-fanout, ss-conns) need of
// simplified sliding sync, MSC4186. docs/sliding-sync.md has the wire
// format Tessera serves.
// https://github.com/matrix-org/matrix-spec-proposals/pull/4186

// slidingSyncPath is the endpoint clients in use call.
const slidingSyncPath = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"

// ssRequest is the body of a sliding sync request.
type ssRequest struct {
	ConnID string            `json:"conn_id,omitempty"`
	Lists  map[string]ssList `json:"lists,omitempty"`
}

// ssList is a list's config: which of the user's rooms (by bump_stamp,
// newest first) and how much of each.
type ssList struct {
	Ranges        [][2]int    `json:"ranges"`
	TimelineLimit int         `json:"timeline_limit"`
	RequiredState [][2]string `json:"required_state"`
}

// ssAllRooms is the list Element X opens with: the top n rooms of all the
// user's rooms, with their name, the lazy members of what is shown, and
// timelineLimit events of each.
func ssAllRooms(n, timelineLimit int) map[string]ssList {
	return map[string]ssList{"all": {
		Ranges:        [][2]int{{0, n - 1}},
		TimelineLimit: timelineLimit,
		RequiredState: [][2]string{{"m.room.name", ""}, {"m.room.member", "$LAZY"}},
	}}
}

// ssResponse is the part of a sliding sync response the scenarios look at.
type ssResponse struct {
	Pos   string `json:"pos"`
	Lists map[string]struct {
		Count int `json:"count"`
	} `json:"lists"`
	Rooms      map[string]ssRoom `json:"rooms"`
	Extensions map[string]any    `json:"extensions"`
}

type ssRoom struct {
	Initial   bool        `json:"initial"`
	Timeline  []syncEvent `json:"timeline"`
	Limited   bool        `json:"limited"`
	BumpStamp int64       `json:"bump_stamp"`
}

// slidingSync makes one sliding sync request: a connection's first when pos
// is empty (answered at once), else one the server may hold open for up to
// timeout (the long-poll) until something the connection's rooms care about
// happens. out receives the decoded response (an *ssResponse, or a
// *json.RawMessage to keep the bytes).
func slidingSync(ctx context.Context, c *client, token, pos string, timeout time.Duration, req *ssRequest, out any) error {
	q := url.Values{}
	if pos != "" {
		q.Set("pos", pos)
		if timeout > 0 {
			q.Set("timeout", strconv.FormatInt(timeout.Milliseconds(), 10))
		}
	}
	// As syncOnce: the request must outlive the long-poll it asks for.
	lc := *c
	lc.timeout = c.timeout + timeout
	return lc.do(ctx, http.MethodPost, slidingSyncPath, q, token, req, out)
}

// isUnknownPos reports whether err is the server forgetting a connection's
// pos (400 M_UNKNOWN_POS): the client starts the connection again without
// one.
func isUnknownPos(err error) bool {
	var me *matrixError
	return errors.As(err, &me) && me.Status == http.StatusBadRequest && me.ErrCode == "M_UNKNOWN_POS"
}
