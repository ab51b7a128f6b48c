package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// remoteError turns another server's failure into what our client is
// told: its Matrix error when it sent one (404 M_NOT_FOUND stays so),
// otherwise 502.
func remoteError(server spec.ServerName, err error) error {
	var herr gomatrix.HTTPError
	if errors.As(err, &herr) {
		var body struct {
			Code  string `json:"errcode"`
			Error string `json:"error"`
		}
		if json.Unmarshal(herr.Contents, &body) == nil && strings.HasPrefix(body.Code, "M_") && herr.Code >= 400 && herr.Code < 500 {
			return &mxerr.Error{Status: herr.Code, Code: body.Code, Message: body.Error}
		}
	}
	return &mxerr.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN", Message: fmt.Sprintf("%s did not answer: %v", server, err)}
}

func (a *API) checkAllowed(server spec.ServerName) error {
	if a.cfg.Allowed != nil && !a.cfg.Allowed(server) {
		return mxerr.Forbidden("This server does not federate with %s", server)
	}
	return nil
}

// RemoteProfile asks a user's server for their profile (all of it when
// field is "").
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1queryprofile
func (a *API) RemoteProfile(ctx context.Context, userID, field string) (map[string]json.RawMessage, error) {
	u, err := spec.NewUserID(userID, true)
	if err != nil {
		return nil, mxerr.InvalidParam("Invalid user ID")
	}
	if err := a.checkAllowed(u.Domain()); err != nil {
		return nil, err
	}
	res, err := a.client.LookupProfile(ctx, a.cfg.ServerName, u.Domain(), userID, field)
	if err != nil {
		return nil, remoteError(u.Domain(), err)
	}
	out := map[string]json.RawMessage{}
	if res.DisplayName != "" {
		out["displayname"], _ = json.Marshal(res.DisplayName)
	}
	if res.AvatarURL != "" {
		out["avatar_url"], _ = json.Marshal(res.AvatarURL)
	}
	return out, nil
}

// RemoteAlias asks an alias's server which room it names.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1querydirectory
func (a *API) RemoteAlias(ctx context.Context, alias string) (string, []spec.ServerName, error) {
	_, domain, ok := strings.Cut(alias, ":")
	if !strings.HasPrefix(alias, "#") || !ok {
		return "", nil, mxerr.InvalidParam("Invalid room alias %q", alias)
	}
	server := spec.ServerName(domain)
	if err := a.checkAllowed(server); err != nil {
		return "", nil, err
	}
	res, err := a.client.LookupRoomAlias(ctx, a.cfg.ServerName, server, alias)
	if err != nil {
		return "", nil, remoteError(server, err)
	}
	servers := res.Servers
	if len(servers) == 0 {
		servers = []spec.ServerName{server}
	}
	return res.RoomID, servers, nil
}

// openIDUserInfo: GET /v1/openid/userinfo?access_token=. Not signed: the
// caller is whatever third party the user gave the token to.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1openiduserinfo
func (a *API) openIDUserInfo(r *http.Request) (any, error) {
	token := r.URL.Query().Get("access_token")
	if token == "" {
		return nil, &mxerr.Error{Status: http.StatusUnauthorized, Code: "M_MISSING_TOKEN", Message: "Missing access_token"}
	}
	userID, err := a.users.OpenIDUserInfo(r.Context(), token)
	if err != nil {
		return nil, err
	}
	return map[string]string{"sub": userID}, nil
}

// RemotePublicRooms reads another server's room directory (its
// publicRooms over federation), filtered by a search term if given.
// https://spec.matrix.org/v1.19/server-server-api/#post_matrixfederationv1publicrooms
func (a *API) RemotePublicRooms(ctx context.Context, server string, limit int, since, search string, includeAll bool, thirdParty string) (any, error) {
	dest := spec.ServerName(server)
	if _, _, ok := spec.ParseAndValidateServerName(dest); !ok {
		return nil, mxerr.InvalidParam("Invalid server name %q", server)
	}
	if err := a.checkAllowed(dest); err != nil {
		return nil, err
	}
	var res any
	var err error
	if search == "" {
		res, err = a.client.GetPublicRooms(ctx, a.cfg.ServerName, dest, limit, since, includeAll, thirdParty)
	} else {
		res, err = a.client.GetPublicRoomsFiltered(ctx, a.cfg.ServerName, dest, limit, since, search, includeAll, thirdParty)
	}
	if err != nil {
		return nil, remoteError(dest, err)
	}
	return res, nil
}
