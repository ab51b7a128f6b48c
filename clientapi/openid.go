package clientapi

import (
	"net/http"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/users"
)

func (a *API) openIDRoutes() []route {
	return []route{
		{http.MethodPost, "/user/{userId}/openid/request_token", a.authed(a.requestOpenIDToken, noGuests)},
	}
}

// requestOpenIDToken: POST /user/{userId}/openid/request_token. A token a
// third party can check with our federation API's openid/userinfo; only
// for oneself.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3useruseridopenidrequest_token
func (a *API) requestOpenIDToken(r *http.Request, who *users.Requester) (any, error) {
	if pathVar(r, "userId") != who.UserID {
		return nil, mxerr.Forbidden("Cannot request an OpenID token for another user")
	}
	var body map[string]any
	if err := httpx.DecodeJSON(r, &body, true); err != nil {
		return nil, err
	}
	return a.users.RequestOpenIDToken(r.Context(), who.UserID)
}
