package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/mxerr"
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
			return nil, mxerr.BadJSON("Bad invite event: %v", err)
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
func (a *API) SignInvite(ctx context.Context, ev gomatrixserverlib.PDU, stripped []gomatrixserverlib.InviteStrippedState) (gomatrixserverlib.PDU, error) {
	target, err := spec.NewUserID(*ev.StateKey(), true)
	if err != nil {
		return nil, mxerr.InvalidParam("Invalid user ID")
	}
	dest := target.Domain()
	if a.cfg.Allowed != nil && !a.cfg.Allowed(dest) {
		return nil, mxerr.Forbidden("This server does not federate with %s", dest)
	}
	req, err := fclient.NewInviteV2Request(ev, stripped)
	if err != nil {
		return nil, err
	}
	res, err := a.client.SendInviteV2(ctx, a.cfg.ServerName, dest, req)
	if err != nil {
		return nil, &mxerr.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN",
			Message: fmt.Sprintf("%s did not accept the invite: %v", dest, err)}
	}
	signed, err := parsePDU(ctx, a.verifier, ev.Version(), res.Event)
	if err != nil {
		return nil, fmt.Errorf("the invite %s signed: %w", dest, err)
	}
	return signed, nil
}
