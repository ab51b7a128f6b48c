package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/calls"
	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// MSC4195's server-server token endpoint: a user of another server asks,
// through their own server, for a token to our SFU (to subscribe to what
// our users publish there).
// https://github.com/matrix-org/matrix-spec-proposals/pull/4195
const (
	rtcTokenPath         = "/v1/rtc/livekit/get_token"
	rtcTokenPathUnstable = "/unstable/io.element.msc4195/rtc/livekit/get_token"
)

// SetCalls turns on the MSC4195 get_token endpoint for our SFU; without it
// the endpoint answers 404 M_UNRECOGNIZED.
func (a *API) SetCalls(c *calls.Service) { a.calls = c }

func (a *API) registerRTC(fed *mux.Router) {
	for _, p := range []string{rtcTokenPath, rtcTokenPathUnstable} {
		fed.Handle(p, httpx.JSON(a.log, a.signed(a.rtcLiveKitToken))).Methods(http.MethodPost)
	}
}

// rtcTokenRequest is the federation body: the client's, with the user.
type rtcTokenRequest struct {
	UserID string `json:"user_id"`
	calls.LiveKitRequest
}

// rtcLiveKitToken: POST /_matrix/federation/v1/rtc/livekit/get_token. The
// user must be the origin's; the rest is the client endpoint's check.
func (a *API) rtcLiveKitToken(r *http.Request, origin spec.ServerName, body []byte) (any, error) {
	if a.calls == nil {
		return nil, mxerr.Unrecognized("Calls are not enabled on this server")
	}
	// Per server: an origin speaks for all its users.
	if err := a.calls.Allow("server:" + string(origin)); err != nil {
		return nil, err
	}
	var req rtcTokenRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, mxerr.BadJSON("Request body is not a token request")
	}
	if req.UserID == "" {
		return nil, mxerr.BadJSON("user_id is required")
	}
	u, err := spec.NewUserID(req.UserID, true)
	if err != nil || u.Domain() != origin {
		return nil, mxerr.Forbidden("user_id is not a user of %s", origin)
	}
	jwt, err := a.calls.LiveKitToken(r.Context(), nil, req.UserID, false, req.LiveKitRequest)
	if err != nil {
		return nil, err
	}
	return map[string]string{"jwt": jwt}, nil
}

// RemoteLiveKitToken asks server for a token to its SFU on behalf of our
// user. Its 403 M_FORBIDDEN and 400 M_INVALID_PARAM reach the client as
// they are; anything else is 502 M_UNKNOWN, as MSC4195 requires.
func (a *API) RemoteLiveKitToken(ctx context.Context, server, userID string, q calls.LiveKitRequest) (string, error) {
	var out struct {
		JWT string `json:"jwt"`
	}
	err := a.doSigned(ctx, http.MethodPost, spec.ServerName(server), "/_matrix/federation"+rtcTokenPath,
		rtcTokenRequest{UserID: userID, LiveKitRequest: q}, &out)
	if err == nil && out.JWT != "" {
		return out.JWT, nil
	}
	if err == nil {
		err = errors.New("no jwt in the answer")
	} else if me, ok := mxerr.As(remoteError(spec.ServerName(server), err)); ok &&
		((me.Status == http.StatusForbidden && me.Code == "M_FORBIDDEN") ||
			(me.Status == http.StatusBadRequest && me.Code == "M_INVALID_PARAM")) {
		return "", me
	}
	a.log.WithError(err).WithField("server", server).Warn("calls: remote get_token failed")
	return "", mxerr.Unknown(http.StatusBadGateway, "The other server did not issue a token")
}
