package clientapi

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/tessera-hs/tessera/appservice"
	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/internal/ratelimit"
	"github.com/tessera-hs/tessera/users"
)

// The client-server API extensions for application services.
// https://spec.matrix.org/v1.19/application-service-api/#client-server-api-extensions

func (a *API) appServiceRoutes(add func(prefix string, routes []route)) {
	add("/_matrix/client/v1", []route{
		{http.MethodPost, "/appservice/{appserviceId}/ping", a.authed(a.appServicePing, noGuests)},
	})
	for _, prefix := range []string{"/_matrix/client/v3", "/_matrix/client/r0"} {
		add(prefix, []route{
			{http.MethodPut, "/directory/list/appservice/{networkId}/{roomId}", a.authed(a.appServiceRoomList, noGuests)},
		})
	}
}

// appService is the application service the requester is (by its
// as_token), or 403 M_FORBIDDEN.
func (a *API) appService(who *users.Requester) (*appservice.Registration, error) {
	reg := a.users.AppService(who)
	if reg == nil {
		return nil, mxerr.Forbidden("This endpoint is for application services: use an as_token")
	}
	return reg, nil
}

// unlimited reports whether no rate limit applies to the requester: an
// application service registered with rate_limited: false, or a user a
// server admin lifted the limits of (override_ratelimit with
// messages_per_second 0, which Synapse reads so for every limit).
func (a *API) unlimited(who *users.Requester) bool {
	if o := who.Ratelimit; o != nil && o.MessagesPerSecond == 0 {
		return true
	}
	reg := a.users.AppService(who)
	return reg != nil && !reg.IsRateLimited()
}

// limitMessages applies the per-user rate limit on sending events, or the
// rate and burst an admin set for the user (override_ratelimit).
func (a *API) limitMessages(who *users.Requester) error {
	if a.unlimited(who) {
		return nil
	}
	if o := who.Ratelimit; o != nil {
		// Each override has its own bucket, which starts full: the user's
		// history under other limits does not count against new ones.
		key := fmt.Sprintf("%s|%d|%d", who.UserID, o.MessagesPerSecond, o.BurstCount)
		if ok, wait := a.sentEvents.AllowAt(key, float64(o.MessagesPerSecond), max(int(o.BurstCount), 1)); !ok {
			return mxerr.LimitExceeded(wait.Milliseconds())
		}
		return nil
	}
	return limit(a.sentEvents, who.UserID)
}

// limitUser takes a token from l for the requester, unless no limit
// applies to them.
func (a *API) limitUser(l *ratelimit.Limiter, who *users.Requester) error {
	if a.unlimited(who) {
		return nil
	}
	return limit(l, who.UserID)
}

// appServicePing: POST /v1/appservice/{appserviceId}/ping. Only the
// service itself may ask.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv1appserviceappserviceidping
func (a *API) appServicePing(r *http.Request, who *users.Requester) (any, error) {
	reg := a.users.AppService(who)
	if reg == nil || reg.ID != pathVar(r, "appserviceId") {
		return nil, mxerr.Forbidden("Only the application service itself may ping it, with its as_token")
	}
	var body struct {
		TransactionID string `json:"transaction_id"`
	}
	if err := httpx.DecodeJSON(r, &body, true); err != nil {
		return nil, err
	}
	took, err := a.asClient.Ping(r.Context(), reg, body.TransactionID)
	if err != nil {
		return nil, err
	}
	return map[string]int64{"duration_ms": took.Milliseconds()}, nil
}

// appServiceRoomList: PUT /directory/list/appservice/{networkId}/{roomId},
// a room in or out of the service's directory for one of its networks.
// https://spec.matrix.org/v1.19/application-service-api/#put_matrixclientv3directorylistappservicenetworkidroomid
func (a *API) appServiceRoomList(r *http.Request, who *users.Requester) (any, error) {
	reg, err := a.appService(who)
	if err != nil {
		return nil, err
	}
	id, err := roomID(r)
	if err != nil {
		return nil, err
	}
	visibility, err := decodeVisibility(r)
	if err != nil {
		return nil, err
	}
	network := pathVar(r, "networkId")
	if network == "" {
		return nil, mxerr.InvalidParam("networkId is required")
	}
	if err := a.rooms.SetAppServiceListed(r.Context(), reg.ID, network, id, visibility == "public"); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// appServiceTS reads the ts query parameter of an application service's
// send or state request (timestamp massaging): the event's
// origin_server_ts, a non-negative integer of milliseconds. Others' ts is
// ignored, and so is its absence (zero: now).
// https://spec.matrix.org/v1.19/application-service-api/#timestamp-massaging
func (a *API) appServiceTS(r *http.Request, who *users.Requester) (time.Time, error) {
	v := r.URL.Query().Get("ts")
	if v == "" || who.AppService == "" {
		return time.Time{}, nil
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms < 0 || ms > 1<<53-1 {
		return time.Time{}, mxerr.InvalidParam("ts must be a timestamp in milliseconds")
	}
	return time.UnixMilli(ms), nil
}

// checkServiceAlias refuses an application service acting by its as_token
// a new alias outside its alias namespaces (400 M_EXCLUSIVE). Everyone's
// aliases are also checked against the services' exclusive namespaces, by
// the room server's alias guard.
func (a *API) checkServiceAlias(who *users.Requester, alias string) error {
	if reg := a.users.AppService(who); reg != nil {
		return reg.CheckOwnAlias(alias)
	}
	return nil
}
