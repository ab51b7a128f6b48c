package clientapi

import (
	"net/http"

	"github.com/tessera-hs/tessera/calls"
	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/users"
)

// SetDelegations turns on MSC4195's delegated delayed leave endpoint
// (with SetCalls: it watches our own SFU only).
func (a *API) SetDelegations(d *calls.Delegations) { a.delegations = d }

func (a *API) rtcDelegateRoutes(add func(string, []route)) {
	routes := []route{
		{http.MethodPost, "/rtc/livekit/delegate_delayed_leave", a.authed(a.rtcDelegateDelayedLeave, guestOK)},
	}
	add("/_matrix/client/v1", routes)
	add("/_matrix/client/unstable/io.element.msc4195", routes)
}

// rtcDelegateDelayedLeave: POST .../rtc/livekit/delegate_delayed_leave
// (MSC4195). The client has scheduled its leave membership event as a
// delayed event; from now on we keep it alive while the client's
// participant is on our SFU and send it when the participant goes
// (calls.Delegations does the work).
func (a *API) rtcDelegateDelayedLeave(r *http.Request, who *users.Requester) (any, error) {
	if a.calls == nil || a.delegations == nil {
		return nil, mxerr.Unrecognized("Calls are not enabled on this server")
	}
	// MSC4195 recommends a limit; each delegation is a job polling the SFU.
	if err := a.limitUser(a.callTokens, who); err != nil {
		return nil, err
	}
	var body struct {
		URL      string `json:"url"`
		RoomID   string `json:"room_id"`
		SlotID   string `json:"slot_id"`
		MemberID string `json:"member_id"`
		DelayID  string `json:"delay_id"`
	}
	if err := httpx.DecodeJSON(r, &body, false); err != nil {
		return nil, err
	}
	if body.URL == "" || body.RoomID == "" || body.SlotID == "" || body.MemberID == "" || body.DelayID == "" {
		return nil, mxerr.BadJSON("url, room_id, slot_id, member_id and delay_id are required")
	}
	// We can only watch participants of our own SFU.
	if body.URL != a.calls.LiveKitURL(r) {
		return nil, mxerr.InvalidParam("url is not one of this server's SFUs")
	}
	if err := a.delegations.Delegate(r.Context(), calls.Delegation{
		UserID: who.UserID, RoomID: body.RoomID, SlotID: body.SlotID, MemberID: body.MemberID, DelayID: body.DelayID,
	}); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}
