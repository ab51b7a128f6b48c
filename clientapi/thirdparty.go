package clientapi

import (
	"net/http"

	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/users"
)

// Third-party lookups ask the application services that bridge a protocol.
// Tessera has no application services yet, so it knows no protocol: the
// list is empty and every lookup finds nothing, with the spec's 404.
// https://spec.matrix.org/v1.19/client-server-api/#third-party-lookups
func (a *API) thirdPartyRoutes() []route {
	const get = http.MethodGet
	return []route{
		{get, "/thirdparty/protocols", a.authed(a.thirdPartyProtocols, guestOK)},
		{get, "/thirdparty/protocol/{protocol}", a.authed(a.thirdPartyProtocol, guestOK)},
		{get, "/thirdparty/location/{protocol}", a.authed(a.thirdPartyProtocol, guestOK)},
		{get, "/thirdparty/user/{protocol}", a.authed(a.thirdPartyProtocol, guestOK)},
		{get, "/thirdparty/location", a.authed(a.thirdPartyReverse("alias"), guestOK)},
		{get, "/thirdparty/user", a.authed(a.thirdPartyReverse("userid"), guestOK)},
	}
}

// thirdPartyProtocols: GET /thirdparty/protocols, keyed by protocol name.
func (a *API) thirdPartyProtocols(*http.Request, *users.Requester) (any, error) {
	return map[string]any{}, nil
}

// thirdPartyProtocol answers GET /thirdparty/protocol/{protocol} and the
// lookups under location/{protocol} and user/{protocol}: with no protocol
// known, each is 404 M_NOT_FOUND, as Synapse answers for an unknown one.
func (a *API) thirdPartyProtocol(r *http.Request, _ *users.Requester) (any, error) {
	return nil, mxerr.NotFound("Unknown protocol %q", pathVar(r, "protocol"))
}

// thirdPartyReverse answers the reverse lookups GET /thirdparty/location
// (?alias=) and GET /thirdparty/user (?userid=): no bridge, no portal.
func (a *API) thirdPartyReverse(param string) authedFunc {
	return func(r *http.Request, _ *users.Requester) (any, error) {
		if r.URL.Query().Get(param) == "" {
			return nil, mxerr.MissingParam("Missing query parameter %q", param)
		}
		return nil, mxerr.NotFound("No third-party entity found for %s", param)
	}
}
