package clientapi

import (
	"context"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"

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
	add("/_matrix/client/unstable/io.element.msc4195", []route{
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
// MSC4195's m.livekit transport). The same SFU is offered a second time
// as the reference implementations name it (type "livekit", with the
// token service's livekit_service_url beside url, as MSC4195's appendix
// describes), so that clients of either kind find it.
func (a *API) rtcTransportsV1(r *http.Request, _ *users.Requester) (any, error) {
	if a.calls == nil {
		return map[string]any{"transports": []any{}}, nil
	}
	sfu := a.calls.LiveKitURL(r)
	return map[string]any{"transports": []map[string]string{
		{"type": "m.livekit", "url": sfu},
		{"type": "livekit", "url": sfu, "livekit_service_url": a.calls.ServiceURL(r)},
	}}, nil
}

// RemoteLiveKitToken asks another server for a token to its SFU on behalf
// of our user (federation rtc/livekit/get_token).
type RemoteLiveKitToken func(ctx context.Context, serverName, userID string, q calls.LiveKitRequest) (string, error)

// SetRTCRemote lets our users get tokens for other servers' SFUs, whether
// or not we run one ourselves.
func (a *API) SetRTCRemote(f RemoteLiveKitToken) { a.rtcRemote = f }

// rtcLiveKitToken: POST /_matrix/client/v1/rtc/livekit/get_token
// (MSC4195): a token to our SFU, or, with another server_name, to that
// server's SFU, which we ask over federation for our user.
func (a *API) rtcLiveKitToken(r *http.Request, who *users.Requester) (any, error) {
	if a.calls == nil && a.rtcRemote == nil {
		return nil, mxerr.Unrecognized("Calls are not enabled on this server")
	}
	if err := a.limitUser(a.callTokens, who); err != nil {
		return nil, err
	}
	var body struct {
		ServerName string `json:"server_name"`
		calls.LiveKitRequest
	}
	if err := httpx.DecodeJSON(r, &body, false); err != nil {
		return nil, err
	}
	if err := body.Validate(); err != nil {
		return nil, err
	}
	var (
		jwt string
		err error
	)
	switch {
	case body.ServerName == "" || body.ServerName == a.cfg.ServerName:
		if a.calls == nil {
			return nil, mxerr.InvalidParam("url is not one of this server's SFUs")
		}
		jwt, err = a.calls.LiveKitToken(r.Context(), r, who.UserID, true, body.LiveKitRequest)
	case !validServerName(body.ServerName):
		return nil, mxerr.InvalidParam("server_name is not a server name")
	case a.rtcRemote == nil:
		return nil, mxerr.Unknown(http.StatusBadGateway, "Federation is not enabled on this server")
	default:
		jwt, err = a.rtcRemote(r.Context(), body.ServerName, who.UserID, body.LiveKitRequest)
	}
	if err != nil {
		return nil, err
	}
	return map[string]string{"jwt": jwt}, nil
}

func validServerName(s string) bool {
	_, _, ok := spec.ParseAndValidateServerName(spec.ServerName(s))
	return ok
}
