package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/roomserver"
)

// invite receives another server's invite of one of our users:
// PUT /v2/invite/{roomId}/{eventId}. We sign it and send it back.
// https://spec.matrix.org/v1.19/server-server-api/#put_matrixfederationv2inviteroomideventid
func (a *API) invite(r *http.Request, origin spec.ServerName, body []byte) (any, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	var head struct {
		RoomVersion gomatrixserverlib.RoomVersion `json:"room_version"`
		Event       json.RawMessage               `json:"event"`
		RoomState   []json.RawMessage             `json:"invite_room_state"`
	}
	if err := json.Unmarshal(body, &head); err != nil || len(head.Event) == 0 {
		return nil, mxerr.BadJSON("Expected room_version and event")
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(head.RoomVersion)
	if err != nil {
		return nil, &mxerr.Error{Status: http.StatusBadRequest, Code: "M_INCOMPATIBLE_ROOM_VERSION",
			Message: fmt.Sprintf("Room version %q is not supported", head.RoomVersion),
			Extra:   map[string]any{"room_version": head.RoomVersion}}
	}
	var req fclient.InviteV2Request
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, mxerr.BadJSON("Bad invite: %v", err)
	}
	ev := req.Event()
	if ev == nil {
		if ev, err = verImpl.NewEventFromUntrustedJSON(head.Event); err != nil {
			return nil, roomserver.InvalidEventError(err)
		}
	}
	if ev.EventID() != pathVar(r, "eventId") || ev.RoomID().String() != roomID.String() {
		return nil, mxerr.BadJSON("The event does not match the path")
	}
	if sender, err := spec.NewUserID(string(ev.SenderID()), true); err != nil || sender.Domain() != origin {
		return nil, mxerr.Forbidden("The inviter is not a user of the requesting server")
	}
	if err := a.rooms.CheckServerACL(r.Context(), roomID.String(), origin); err != nil {
		return nil, err
	}
	if verImpl.DomainlessRoomIDs() {
		if err := a.checkInviteRoomState(r.Context(), verImpl, roomID, head.RoomState); err != nil {
			return nil, err
		}
	}
	signed, err := a.rooms.ReceiveInvite(r.Context(), roomID, head.RoomVersion, ev, req.InviteRoomState(), a.verifier)
	if err != nil {
		return nil, specError(err)
	}
	return map[string]any{"event": json.RawMessage(signed.JSON())}, nil
}

// inviteV1 receives an invite by the deprecated PUT /v1/invite, whose
// body is the event itself, with the stripped state in its
// unsigned.invite_room_state. It knows no room version: the room's, if we
// know it, else version 1, as in Synapse (v1 serves only versions 1 and
// 2, whose event formats are the same).
// https://spec.matrix.org/v1.19/server-server-api/#put_matrixfederationv1inviteroomideventid
func (a *API) inviteV1(r *http.Request, origin spec.ServerName, body []byte) (any, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	ver, err := a.rooms.RoomVersion(r.Context(), roomID.String())
	if err != nil {
		ver = gomatrixserverlib.RoomVersionV1
	}
	var unsigned struct {
		Unsigned struct {
			InviteRoomState []json.RawMessage `json:"invite_room_state"`
		} `json:"unsigned"`
	}
	if err := json.Unmarshal(body, &unsigned); err != nil {
		return nil, mxerr.BadJSON("Bad invite: %v", err)
	}
	wrapped, err := json.Marshal(map[string]any{
		"room_version": ver, "event": json.RawMessage(body),
		"invite_room_state": unsigned.Unsigned.InviteRoomState,
	})
	if err != nil {
		return nil, err
	}
	return a.invite(r, origin, wrapped)
}

// SignInvite has the invitee's server sign our invite of its user.
// roomState is the invite_room_state, full PDUs: gomatrixserverlib's
// InviteV2Request would cut them down to stripped state, which servers
// following v1.16 of the spec refuse for v12 rooms, so the request is made
// here.
// https://spec.matrix.org/v1.19/server-server-api/#put_matrixfederationv2inviteroomideventid
func (a *API) SignInvite(ctx context.Context, ev gomatrixserverlib.PDU, roomState []json.RawMessage) (gomatrixserverlib.PDU, error) {
	target, err := spec.NewUserID(*ev.StateKey(), true)
	if err != nil {
		return nil, mxerr.InvalidParam("Invalid user ID")
	}
	dest := target.Domain()
	if a.cfg.Allowed != nil && !a.cfg.Allowed(dest) {
		return nil, mxerr.Forbidden("This server does not federate with %s", dest)
	}
	if roomState == nil {
		roomState = []json.RawMessage{}
	}
	body := map[string]any{"event": json.RawMessage(ev.JSON()), "room_version": ev.Version(), "invite_room_state": roomState}
	path := "/_matrix/federation/v2/invite/" + url.PathEscape(ev.RoomID().String()) + "/" + url.PathEscape(ev.EventID())
	var res struct {
		Event json.RawMessage `json:"event"`
	}
	if err := a.doSigned(ctx, http.MethodPut, dest, path, body, &res); err != nil {
		return nil, &mxerr.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN",
			Message: fmt.Sprintf("%s did not accept the invite: %v", dest, err)}
	}
	signed, err := parsePDU(ctx, a.verifier, ev.Version(), res.Event)
	if err != nil {
		return nil, fmt.Errorf("the invite %s signed: %w", dest, err)
	}
	return signed, nil
}

// checkInviteRoomState applies the checks the spec asks of
// invite_room_state for room versions 12 and later: every entry a PDU of
// the room, with good signatures, and the room's create event among
// them, which, the room ID being its hash, proves which room this is
// and who made it.
// https://spec.matrix.org/v1.19/server-server-api/#put_matrixfederationv2inviteroomideventid
func (a *API) checkInviteRoomState(ctx context.Context, verImpl gomatrixserverlib.IRoomVersion, roomID spec.RoomID, raws []json.RawMessage) error {
	missing := func(format string, args ...any) error {
		return &mxerr.Error{Status: http.StatusBadRequest, Code: "M_MISSING_PARAM", Message: fmt.Sprintf(format, args...)}
	}
	haveCreate := false
	for _, raw := range raws {
		pdu, err := parsePDU(ctx, a.verifier, verImpl.Version(), raw)
		if err != nil {
			return missing("invite_room_state holds an event that is not a valid PDU: %v", err)
		}
		if pdu.RoomID().String() != roomID.String() {
			return missing("invite_room_state holds an event of another room")
		}
		if pdu.Type() == spec.MRoomCreate && pdu.StateKeyEquals("") {
			haveCreate = true
		}
	}
	if !haveCreate {
		return missing("invite_room_state lacks the room's m.room.create event")
	}
	return nil
}
