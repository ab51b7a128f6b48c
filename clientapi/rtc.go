package clientapi

import (
	"errors"
	"net/http"

	"github.com/tessera-hs/tessera/calls"
	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/users"
)

// SetCalls turns on MatrixRTC discovery and the MSC4195 token endpoint.
func (a *API) SetCalls(c *calls.Service) { a.calls = c }

func (a *API) rtcRoutes(add func(string, []route)) {
	const get, post = http.MethodGet, http.MethodPost
	add("/_matrix/client/unstable/org.matrix.msc4143", []route{
		{get, "/rtc/transports", a.authed(a.rtcTransportsUnstable, guestOK)},
	})
	add("/_matrix/client/v1", []route{
		{get, "/rtc/transports", a.authed(a.rtcTransportsV1, guestOK)},
		{post, "/rtc/livekit/get_token", a.authed(a.rtcLiveKitToken, guestOK)},
	})
}

// rtcTransports is our LiveKit focus, as Element Call expects it (in
// rtc/transports and .well-known's org.matrix.msc4143.rtc_foci).
func (a *API) rtcTransports(r *http.Request) []map[string]string {
	return []map[string]string{{"type": "livekit", "livekit_service_url": a.calls.ServiceURL(r)}}
}

// rtcTransportsUnstable: GET /_matrix/client/unstable/org.matrix.msc4143/rtc/transports.
func (a *API) rtcTransportsUnstable(r *http.Request, _ *users.Requester) (any, error) {
	if a.calls == nil {
		return map[string]any{"rtc_transports": []any{}}, nil
	}
	return map[string]any{"rtc_transports": a.rtcTransports(r)}, nil
}

// rtcTransportsV1: GET /_matrix/client/v1/rtc/transports (MSC4143 with
// MSC4195's m.livekit transport).
func (a *API) rtcTransportsV1(r *http.Request, _ *users.Requester) (any, error) {
	if a.calls == nil {
		return map[string]any{"transports": []any{}}, nil
	}
	return map[string]any{"transports": []map[string]string{{"type": "m.livekit", "url": a.calls.LiveKitURL(r)}}}, nil
}

// rtcLiveKitToken: POST /_matrix/client/v1/rtc/livekit/get_token (MSC4195)
// for our own SFU. Tokens for other servers' SFUs (the federation
// get_token endpoint) are not supported yet.
func (a *API) rtcLiveKitToken(r *http.Request, who *users.Requester) (any, error) {
	if a.calls == nil {
		return nil, mxerr.Unrecognized("Calls are not enabled on this server")
	}
	var body struct {
		ServerName string `json:"server_name"`
		URL        string `json:"url"`
		RoomID     string `json:"room_id"`
		SlotID     string `json:"slot_id"`
		MemberID   string `json:"member_id"`
	}
	if err := httpx.DecodeJSON(r, &body, false); err != nil {
		return nil, err
	}
	if body.URL == "" || body.RoomID == "" || body.SlotID == "" || body.MemberID == "" {
		return nil, mxerr.BadJSON("url, room_id, slot_id and member_id are required")
	}
	if body.ServerName != "" && body.ServerName != a.cfg.ServerName {
		return nil, mxerr.Unknown(http.StatusBadGateway, "Tokens for other servers' SFUs are not supported")
	}
	if body.URL != a.calls.LiveKitURL(r) {
		return nil, mxerr.InvalidParam("url is not one of this server's SFUs")
	}
	jwt, err := a.calls.Token(r.Context(), who.UserID, true, body.RoomID, body.SlotID,
		calls.MemberIdentity(who.UserID, body.MemberID))
	if err != nil {
		var ce *calls.Error
		if errors.As(err, &ce) {
			return nil, &mxerr.Error{Status: ce.Status, Code: ce.Code, Message: ce.Message}
		}
		return nil, err
	}
	return map[string]string{"jwt": jwt}, nil
}
