package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/internal/roomversions"
)

// registerLeaveKnock adds make_leave, send_leave, make_knock and
// send_knock.
func (a *API) registerLeaveKnock(fed *mux.Router) {
	h := func(fn signedFunc) http.Handler { return httpx.JSON(a.log, a.signed(fn)) }
	fed.Handle("/v1/make_leave/{roomId}/{userId}", h(a.makeLeave)).Methods(http.MethodGet)
	fed.Handle("/v2/send_leave/{roomId}/{eventId}", h(a.sendLeave)).Methods(http.MethodPut)
	fed.Handle("/v1/make_knock/{roomId}/{userId}", h(a.makeKnock)).Methods(http.MethodGet)
	fed.Handle("/v1/send_knock/{roomId}/{eventId}", h(a.sendKnock)).Methods(http.MethodPut)
}

// memberRequest parses the room and user of a make_* request, checking
// the room's server ACL.
func (a *API) memberRequest(r *http.Request, origin spec.ServerName) (spec.RoomID, spec.UserID, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return spec.RoomID{}, spec.UserID{}, err
	}
	userID, err := spec.NewUserID(pathVar(r, "userId"), true)
	if err != nil {
		return spec.RoomID{}, spec.UserID{}, mxerr.InvalidParam("Invalid user ID")
	}
	if err := a.rooms.CheckServerACL(r.Context(), roomID.String(), origin); err != nil {
		return spec.RoomID{}, spec.UserID{}, err
	}
	return roomID, *userID, nil
}

// makeLeave: GET /v1/make_leave/{roomId}/{userId}.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1make_leaveroomiduserid
func (a *API) makeLeave(r *http.Request, origin spec.ServerName, _ []byte) (any, error) {
	roomID, userID, err := a.memberRequest(r, origin)
	if err != nil {
		return nil, err
	}
	res, err := a.rooms.MakeLeave(r.Context(), origin, roomID, userID)
	if err != nil {
		return nil, specError(err)
	}
	return map[string]any{"event": res.LeaveTemplateEvent, "room_version": res.RoomVersion}, nil
}

// sendLeave: PUT /v2/send_leave/{roomId}/{eventId}.
// https://spec.matrix.org/v1.19/server-server-api/#put_matrixfederationv2send_leaveroomideventid
func (a *API) sendLeave(r *http.Request, origin spec.ServerName, body []byte) (any, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	if err := a.rooms.CheckServerACL(r.Context(), roomID.String(), origin); err != nil {
		return nil, err
	}
	if _, err := a.rooms.SendMembership(r.Context(), origin, roomID, pathVar(r, "eventId"), body, spec.Leave, a.verifier); err != nil {
		return nil, specError(err)
	}
	return struct{}{}, nil
}

// makeKnock: GET /v1/make_knock/{roomId}/{userId}?ver=...
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1make_knockroomiduserid
func (a *API) makeKnock(r *http.Request, origin spec.ServerName, _ []byte) (any, error) {
	roomID, userID, err := a.memberRequest(r, origin)
	if err != nil {
		return nil, err
	}
	var vers []gomatrixserverlib.RoomVersion
	for _, v := range r.URL.Query()["ver"] {
		vers = append(vers, gomatrixserverlib.RoomVersion(v))
	}
	proto, ver, err := a.rooms.MakeKnock(r.Context(), origin, roomID, userID, vers)
	if err != nil {
		return nil, err
	}
	return map[string]any{"event": proto, "room_version": ver}, nil
}

// sendKnock: PUT /v1/send_knock/{roomId}/{eventId}.
// https://spec.matrix.org/v1.19/server-server-api/#put_matrixfederationv1send_knockroomideventid
func (a *API) sendKnock(r *http.Request, origin spec.ServerName, body []byte) (any, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	if err := a.rooms.CheckServerACL(r.Context(), roomID.String(), origin); err != nil {
		return nil, err
	}
	if _, err := a.rooms.SendMembership(r.Context(), origin, roomID, pathVar(r, "eventId"), body, spec.Knock, a.verifier); err != nil {
		return nil, specError(err)
	}
	state, err := a.rooms.KnockRoomState(r.Context(), roomID.String())
	if err != nil {
		return nil, err
	}
	return map[string]any{"knock_room_state": state}, nil
}

// checkTemplate checks that a template another server made for our user
// is the membership event we asked for.
func checkTemplate(proto gomatrixserverlib.ProtoEvent, roomID, userID, membership string) error {
	var c struct {
		Membership string `json:"membership"`
	}
	if proto.RoomID != roomID || proto.SenderID != userID || proto.StateKey == nil || *proto.StateKey != userID ||
		proto.Type != spec.MRoomMember || json.Unmarshal(proto.Content, &c) != nil || c.Membership != membership {
		return fmt.Errorf("the server offered a template that is not our user's %s", membership)
	}
	return nil
}

// signTemplate sets the content and builds and signs an event from a
// template.
func (a *API) signTemplate(proto gomatrixserverlib.ProtoEvent, ver gomatrixserverlib.RoomVersion, content map[string]any) (gomatrixserverlib.PDU, error) {
	verImpl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil {
		return nil, fmt.Errorf("room version %s: %w", ver, err)
	}
	if len(content) > 0 {
		var c map[string]any
		_ = json.Unmarshal(proto.Content, &c)
		if c == nil {
			c = map[string]any{}
		}
		for k, v := range content {
			c[k] = v
		}
		if err := proto.SetContent(c); err != nil {
			return nil, err
		}
	}
	return verImpl.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), a.cfg.ServerName, a.cfg.KeyID, a.cfg.PrivateKey)
}

// LeaveRemote makes our user leave (or reject an invite to) a room we have
// no live copy of, through a server in it: make_leave, then send_leave.
func (a *API) LeaveRemote(ctx context.Context, userID, roomID string, servers []spec.ServerName, reason string) error {
	var errs []error
	for _, srv := range servers {
		if srv == a.cfg.ServerName || a.checkAllowed(srv) != nil {
			continue
		}
		tmpl, err := a.client.MakeLeave(ctx, a.cfg.ServerName, srv, roomID, userID)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: make_leave: %w", srv, err))
			continue
		}
		if err := checkTemplate(tmpl.LeaveEvent, roomID, userID, spec.Leave); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", srv, err))
			continue
		}
		var content map[string]any
		if reason != "" {
			content = map[string]any{"reason": reason}
		}
		ev, err := a.signTemplate(tmpl.LeaveEvent, tmpl.RoomVersion, content)
		if err != nil {
			return err
		}
		if err := a.client.SendLeave(ctx, a.cfg.ServerName, srv, ev); err != nil {
			errs = append(errs, fmt.Errorf("%s: send_leave: %w", srv, err))
			continue
		}
		return a.rooms.StoreOwnOutOfRoom(ctx, srv, ev, nil)
	}
	if len(errs) == 0 {
		return mxerr.NotFound("No server to leave %s through", roomID)
	}
	return remoteError(servers[0], errors.Join(errs...))
}

// KnockRemote knocks on a room of another server for our user:
// make_knock, then send_knock.
func (a *API) KnockRemote(ctx context.Context, userID, roomID string, servers []spec.ServerName, reason string) error {
	var errs []error
	for _, srv := range servers {
		if srv == a.cfg.ServerName || a.checkAllowed(srv) != nil {
			continue
		}
		tmpl, err := a.client.MakeKnock(ctx, a.cfg.ServerName, srv, roomID, userID, supportedVersions())
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: make_knock: %w", srv, err))
			continue
		}
		if err := checkTemplate(tmpl.KnockEvent, roomID, userID, spec.Knock); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", srv, err))
			continue
		}
		var content map[string]any
		if reason != "" {
			content = map[string]any{"reason": reason}
		}
		ev, err := a.signTemplate(tmpl.KnockEvent, tmpl.RoomVersion, content)
		if err != nil {
			return err
		}
		res, err := a.client.SendKnock(ctx, a.cfg.ServerName, srv, ev)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: send_knock: %w", srv, err))
			continue
		}
		stripped := make([]json.RawMessage, 0, len(res.KnockRoomState))
		for _, st := range res.KnockRoomState {
			if b, err := json.Marshal(st); err == nil {
				stripped = append(stripped, b)
			}
		}
		return a.rooms.StoreOwnOutOfRoom(ctx, srv, ev, stripped)
	}
	if len(errs) == 0 {
		return mxerr.NotFound("No server to knock on %s through", roomID)
	}
	return remoteError(servers[0], errors.Join(errs...))
}

// supportedVersions are the room versions we can join, for make_knock's
// ver parameters.
func supportedVersions() []gomatrixserverlib.RoomVersion { return roomversions.List() }
