package clientapi

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/users"
)

// typingPresenceRoutes are typing notifications and presence. Neither is
// open to guests: the spec's list of guest endpoints has none of them, and
// Synapse refuses guests on each.
// https://spec.matrix.org/v1.19/client-server-api/#typing-notifications
// https://spec.matrix.org/v1.19/client-server-api/#presence
func (a *API) typingPresenceRoutes() []route {
	const get, put = http.MethodGet, http.MethodPut
	return []route{
		{put, "/rooms/{roomId}/typing/{userId}", a.authed(a.setTyping, noGuests)},
		{get, "/presence/{userId}/status", a.authed(a.getPresence, noGuests)},
		{put, "/presence/{userId}/status", a.authed(a.setPresence, noGuests)},
	}
}

// setTyping: PUT /rooms/{roomId}/typing/{userId}. Only for oneself, in a
// room one is joined to (403 M_FORBIDDEN otherwise). typing is required,
// and so is timeout when typing is true (the spec: "If false, the timeout
// key can be omitted"); Synapse would default it to 30 s instead. The
// timeout is capped at two minutes, as in Synapse. Typing counts as
// activity for presence.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3roomsroomidtypinguserid
func (a *API) setTyping(r *http.Request, who *users.Requester) (any, error) {
	roomID := pathVar(r, "roomId")
	if pathVar(r, "userId") != who.UserID {
		return nil, mxerr.Forbidden("Cannot set another user's typing state")
	}
	if err := users.ValidateRoomID(roomID); err != nil {
		return nil, err
	}
	var body struct {
		Typing  *bool    `json:"typing"`
		Timeout *float64 `json:"timeout"`
	}
	if err := httpx.DecodeJSON(r, &body, false); err != nil {
		return nil, err
	}
	if body.Typing == nil {
		return nil, mxerr.MissingParam("Missing typing")
	}
	var timeout time.Duration
	if *body.Typing {
		if body.Timeout == nil {
			return nil, mxerr.MissingParam("Missing timeout: it is required when typing is true")
		}
		if *body.Timeout < 0 {
			return nil, mxerr.InvalidParam("timeout must be a non-negative number of milliseconds")
		}
		// Capped to an hour here only so the conversion cannot overflow;
		// Typing.Set applies the real cap.
		timeout = time.Duration(min(*body.Timeout, float64(time.Hour.Milliseconds()))) * time.Millisecond
	}
	membership, err := a.rooms.Membership(r.Context(), roomID, who.UserID)
	if err != nil {
		return nil, err
	}
	if membership != "join" {
		return nil, mxerr.Forbidden("You are not joined to this room")
	}
	if done, resp, err := a.restrict(r.Context(), who, users.ActionTyping, nil); done {
		return resp, err
	}
	a.syncs.Typing().Set(roomID, who.UserID, *body.Typing, timeout)
	if a.edus != nil {
		a.edus.Typing(r.Context(), roomID, who.UserID, *body.Typing, timeout)
	}
	if *body.Typing {
		if err := a.syncs.Presence().Active(r.Context(), who.UserID); err != nil {
			// Presence is a side effect here: the typing took.
			a.log.WithError(err).WithField("user_id", who.UserID).Error("presence: marking a typing user active")
		}
	}
	return struct{}{}, nil
}

// getPresence: GET /presence/{userId}/status.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3presenceuseridstatus
func (a *API) getPresence(r *http.Request, who *users.Requester) (any, error) {
	return a.syncs.Presence().Get(r.Context(), who.UserID, pathVar(r, "userId"))
}

// setPresence: PUT /presence/{userId}/status, only for oneself. presence
// is required; status_msg is optional (null or absent: none). Other keys
// are ignored.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3presenceuseridstatus
func (a *API) setPresence(r *http.Request, who *users.Requester) (any, error) {
	if pathVar(r, "userId") != who.UserID {
		return nil, mxerr.Forbidden("Can only set your own presence state")
	}
	var body struct {
		Presence  *string         `json:"presence"`
		StatusMsg json.RawMessage `json:"status_msg"`
	}
	if err := httpx.DecodeJSON(r, &body, false); err != nil {
		return nil, err
	}
	if body.Presence == nil {
		return nil, mxerr.MissingParam("Missing presence")
	}
	statusMsg := ""
	if len(body.StatusMsg) > 0 && string(body.StatusMsg) != "null" {
		if err := json.Unmarshal(body.StatusMsg, &statusMsg); err != nil {
			return nil, mxerr.BadJSON("status_msg must be a string")
		}
	}
	if err := a.syncs.Presence().Set(r.Context(), who.UserID, *body.Presence, statusMsg); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// EDUSender tells the servers of a room's other members of what local
// users do that is not an event: typing and read receipts.
type EDUSender interface {
	Typing(ctx context.Context, roomID, userID string, typing bool, timeout time.Duration)
	Receipt(ctx context.Context, roomID, userID, eventID, threadID string)
}

// SetEDUSender makes typing and public receipts reach other servers.
func (a *API) SetEDUSender(e EDUSender) { a.edus = e }
