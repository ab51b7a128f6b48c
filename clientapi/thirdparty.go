package clientapi

import (
	"net/http"

	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/users"
)

// Third-party lookups ask the application services that bridge a protocol
// (their registration's protocols), and merge the answers. A protocol no
// service declares is unknown: 404, as Synapse answers.
// https://spec.matrix.org/v1.19/client-server-api/#third-party-lookups
func (a *API) thirdPartyRoutes() []route {
	const get = http.MethodGet
	return []route{
		{get, "/thirdparty/protocols", a.authed(a.thirdPartyProtocols, guestOK)},
		{get, "/thirdparty/protocol/{protocol}", a.authed(a.thirdPartyProtocol, guestOK)},
		{get, "/thirdparty/location/{protocol}", a.authed(a.thirdPartyLookup("location"), guestOK)},
		{get, "/thirdparty/user/{protocol}", a.authed(a.thirdPartyLookup("user"), guestOK)},
		{get, "/thirdparty/location", a.authed(a.thirdPartyReverse("location", "alias"), guestOK)},
		{get, "/thirdparty/user", a.authed(a.thirdPartyReverse("user", "userid"), guestOK)},
	}
}

// thirdPartyProtocols: GET /thirdparty/protocols, keyed by protocol name;
// a protocol whose services do not answer is left out.
func (a *API) thirdPartyProtocols(r *http.Request, _ *users.Requester) (any, error) {
	set := a.users.AppServices()
	out := map[string]any{}
	for _, p := range set.Protocols() {
		if info, ok := a.asClient.Protocol(r.Context(), set, p); ok {
			out[p] = info
		}
	}
	return out, nil
}

// thirdPartyProtocol: GET /thirdparty/protocol/{protocol}.
func (a *API) thirdPartyProtocol(r *http.Request, _ *users.Requester) (any, error) {
	p := pathVar(r, "protocol")
	info, ok := a.asClient.Protocol(r.Context(), a.users.AppServices(), p)
	if !ok {
		return nil, mxerr.NotFound("Unknown protocol %q", p)
	}
	return info, nil
}

// thirdPartyLookup answers GET /thirdparty/location/{protocol} and
// /thirdparty/user/{protocol}: the query string goes to the services as
// it came.
func (a *API) thirdPartyLookup(kind string) authedFunc {
	return func(r *http.Request, who *users.Requester) (any, error) {
		p := pathVar(r, "protocol")
		set := a.users.AppServices()
		if len(set.ForProtocol(p)) == 0 {
			return nil, mxerr.NotFound("Unknown protocol %q", p)
		}
		q := r.URL.Query()
		q.Del("access_token")
		if who.AppService != "" {
			// The identity assertion of a service's request.
			for _, k := range []string{"user_id", "device_id", "org.matrix.msc3202.device_id"} {
				q.Del(k)
			}
		}
		found := a.asClient.Lookup(r.Context(), set, kind, p, q)
		if len(found) == 0 {
			return nil, mxerr.NotFound("No third-party %s found", kind)
		}
		return found, nil
	}
}

// thirdPartyReverse answers the reverse lookups GET /thirdparty/location
// (?alias=) and GET /thirdparty/user (?userid=), asked of every service
// that bridges a protocol.
func (a *API) thirdPartyReverse(kind, param string) authedFunc {
	return func(r *http.Request, _ *users.Requester) (any, error) {
		v := r.URL.Query().Get(param)
		if v == "" {
			return nil, mxerr.MissingParam("Missing query parameter %q", param)
		}
		found := a.asClient.Lookup(r.Context(), a.users.AppServices(), kind, "", map[string][]string{param: {v}})
		if len(found) == 0 {
			return nil, mxerr.NotFound("No third-party entity found for %s", param)
		}
		return found, nil
	}
}
