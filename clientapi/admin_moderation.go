package clientapi

import (
	"net/http"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/users"
)

// Moderating accounts through the user admin API: shadow bans,
// suspensions and rate limit overrides (locks are PUT /v2/users' locked).
// https://element-hq.github.io/synapse/latest/admin_api/user_admin_api.html

// adminShadowBan: POST (ban) and DELETE (lift) /v1/users/{userId}/shadow_ban.
func (a *API) adminShadowBan(r *http.Request, who *users.Requester) (any, error) {
	if err := a.admin.ShadowBan(r.Context(), who.UserID, pathVar(r, "userId"), r.Method == http.MethodPost); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// adminSuspend: PUT /v1/suspend/{userId} with {"suspend": bool}; Synapse
// answers {"user_<id>_suspended": bool}.
func (a *API) adminSuspend(r *http.Request, who *users.Requester) (any, error) {
	var body struct {
		Suspend *bool `json:"suspend"`
	}
	if err := httpx.DecodeJSON(r, &body, false); err != nil {
		return nil, err
	}
	if body.Suspend == nil {
		return nil, mxerr.MissingParam("Missing param suspend")
	}
	userID := pathVar(r, "userId")
	if err := a.admin.Suspend(r.Context(), who.UserID, userID, *body.Suspend); err != nil {
		return nil, err
	}
	return map[string]bool{"user_" + userID + "_suspended": *body.Suspend}, nil
}

// adminGetRatelimit: GET /v1/users/{userId}/override_ratelimit, {} when
// the user has no override.
func (a *API) adminGetRatelimit(r *http.Request, _ *users.Requester) (any, error) {
	o, err := a.admin.RatelimitOverride(r.Context(), pathVar(r, "userId"))
	if err != nil || o == nil {
		return struct{}{}, err
	}
	return o, nil
}

// adminSetRatelimit: POST /v1/users/{userId}/override_ratelimit; absent
// fields are 0, and 0 and 0 lift every limit.
func (a *API) adminSetRatelimit(r *http.Request, who *users.Requester) (any, error) {
	var body struct {
		MessagesPerSecond *int64 `json:"messages_per_second"`
		BurstCount        *int64 `json:"burst_count"`
	}
	if err := httpx.DecodeJSON(r, &body, true); err != nil {
		return nil, err
	}
	var o users.RatelimitOverride
	for _, f := range []struct {
		name string
		v    *int64
		to   *int64
	}{{"messages_per_second", body.MessagesPerSecond, &o.MessagesPerSecond}, {"burst_count", body.BurstCount, &o.BurstCount}} {
		if f.v == nil {
			continue
		}
		if *f.v < 0 {
			return nil, mxerr.InvalidParam("%s must be a positive integer", f.name)
		}
		*f.to = *f.v
	}
	if err := a.admin.SetRatelimitOverride(r.Context(), who.UserID, pathVar(r, "userId"), &o); err != nil {
		return nil, err
	}
	return o, nil
}

// adminDeleteRatelimit: DELETE /v1/users/{userId}/override_ratelimit.
func (a *API) adminDeleteRatelimit(r *http.Request, who *users.Requester) (any, error) {
	if err := a.admin.SetRatelimitOverride(r.Context(), who.UserID, pathVar(r, "userId"), nil); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}
