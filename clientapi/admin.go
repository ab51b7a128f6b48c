package clientapi

import (
	"net/http"
	"strconv"

	"github.com/tessera-hs/tessera/admin"
	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/users"
)

// Synapse's server admin API under /_synapse/admin, for server admins
// only: the routes and the checks of their parameters. What they do is
// the admin domain's (package admin).
// https://element-hq.github.io/synapse/latest/usage/administration/admin_api/index.html

// SetAdmin enables the server admin API.
func (a *API) SetAdmin(s *admin.Service) { a.admin = s }

// adminFunc is a handler for server admins.
type adminFunc func(r *http.Request, who *users.Requester) (any, error)

// adminOnly serves h to server admins: 403 M_FORBIDDEN for anyone else,
// and 404 M_UNRECOGNIZED while the admin API is not wired (tests of the
// edge alone).
func (a *API) adminOnly(h adminFunc) httpx.HandlerFunc {
	return a.authed(func(r *http.Request, who *users.Requester) (any, error) {
		if !who.IsAdmin {
			return nil, mxerr.Forbidden("You are not a server admin")
		}
		if a.admin == nil {
			return nil, mxerr.Unrecognized("Unrecognized request")
		}
		return h(r, who)
	}, noGuests)
}

func (a *API) adminRoutes(add func(string, []route)) {
	const get, post, put, del = http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete
	ad := a.adminOnly
	add("/_synapse/admin/v1", []route{
		{get, "/server_version", ad(a.adminServerVersion)},

		{post, "/deactivate/{userId}", ad(a.adminDeactivate)},
		{post, "/reset_password/{userId}", ad(a.adminResetPassword)},
		{get, "/whois/{userId}", ad(a.adminWhois)},
		{get, "/users/{userId}/joined_rooms", ad(a.adminJoinedRooms)},
		{get, "/users/{userId}/accountdata", ad(a.adminAccountData)},
		{get, "/users/{userId}/admin", ad(a.adminGetAdmin)},
		{put, "/users/{userId}/admin", ad(a.adminPutAdmin)},
		{get, "/username_available", ad(a.adminUsernameAvailable)},
		{get, "/users/{userId}/media", ad(a.adminUserMedia)},
		{del, "/users/{userId}/media", ad(a.adminDeleteUserMedia)},
		{post, "/users/{userId}/shadow_ban", ad(a.adminShadowBan)},
		{del, "/users/{userId}/shadow_ban", ad(a.adminShadowBan)},
		{put, "/suspend/{userId}", ad(a.adminSuspend)},
		{get, "/users/{userId}/override_ratelimit", ad(a.adminGetRatelimit)},
		{post, "/users/{userId}/override_ratelimit", ad(a.adminSetRatelimit)},
		{del, "/users/{userId}/override_ratelimit", ad(a.adminDeleteRatelimit)},

		{post, "/media/quarantine/{serverName}/{mediaId}", ad(a.adminQuarantineMedia(true))},
		{post, "/media/unquarantine/{serverName}/{mediaId}", ad(a.adminQuarantineMedia(false))},
		{post, "/media/protect/{mediaId}", ad(a.adminProtectMedia(true))},
		{post, "/media/unprotect/{mediaId}", ad(a.adminProtectMedia(false))},
		{post, "/room/{roomId}/media/quarantine", ad(inRoom(a.adminQuarantineRoomMedia))},
		// The older path, which Synapse still serves as an alias.
		{post, "/quarantine_media/{roomId}", ad(inRoom(a.adminQuarantineRoomMedia))},
		{get, "/room/{roomId}/media", ad(inRoom(a.adminRoomMedia))},
		{post, "/user/{userId}/media/quarantine", ad(a.adminQuarantineUserMedia)},
		{post, "/media/delete", ad(a.adminDeleteMediaBefore)},
		{post, "/media/{serverName}/delete", ad(a.adminDeleteMediaBefore)},
		{del, "/media/{serverName}/{mediaId}", ad(a.adminDeleteMedia)},
		{get, "/statistics/users/media", ad(a.adminMediaStatistics)},
		{get, "/statistics/database/rooms", ad(a.adminRoomSizes)},
		{get, "/registration_tokens", ad(a.adminListRegTokens)},
		{post, "/registration_tokens/new", ad(a.adminNewRegToken)},
		{get, "/registration_tokens/{token}", ad(a.adminGetRegToken)},
		{put, "/registration_tokens/{token}", ad(a.adminUpdateRegToken)},
		{del, "/registration_tokens/{token}", ad(a.adminDeleteRegToken)},
		{get, "/federation/destinations", ad(a.adminDestinations)},
		{get, "/federation/destinations/{destination}", ad(a.adminDestination)},
		{post, "/federation/destinations/{destination}/reset_connection", ad(a.adminResetConnection)},
		{get, "/federation/destinations/{destination}/rooms", ad(a.adminDestinationRooms)},
		{get, "/event_reports/{reportId}", ad(a.adminEventReport)},
		{del, "/event_reports/{reportId}", ad(a.adminDeleteEventReport)},

		{get, "/rooms", ad(a.adminListRooms)},
		{get, "/rooms/{roomId}", ad(inRoom(a.adminRoom))},
		{del, "/rooms/{roomId}", ad(inRoom(a.adminDeleteRoomSync))},
		{get, "/rooms/{roomId}/members", ad(inRoom(a.adminRoomMembers))},
		{get, "/rooms/{roomId}/state", ad(inRoom(a.adminRoomState))},
		{get, "/rooms/{roomId}/messages", ad(a.adminRoomMessages)},
		{get, "/rooms/{roomId}/block", ad(inRoom(a.adminGetBlock))},
		{put, "/rooms/{roomId}/block", ad(inRoom(a.adminPutBlock))},
		{post, "/rooms/{roomId}/make_room_admin", ad(a.adminMakeRoomAdmin)},
		{get, "/rooms/{roomId}/forward_extremities", ad(inRoom(a.adminForwardExtremities))},
		{del, "/rooms/{roomId}/forward_extremities", ad(inRoom(a.adminDeleteForwardExtremities))},
		{post, "/join/{roomId}", ad(a.adminJoin)},
	})
	add("/_synapse/admin/v2", []route{
		{get, "/users", ad(a.adminListUsers)},
		{get, "/users/{userId}", ad(a.adminGetUser)},
		{put, "/users/{userId}", ad(a.adminPutUser)},
		{get, "/users/{userId}/devices", ad(a.adminDevices)},
		{post, "/users/{userId}/devices", ad(a.adminCreateDevice)},
		{put, "/users/{userId}/devices/{deviceId}", ad(a.adminRenameDevice)},
		{get, "/users/{userId}/devices/{deviceId}", ad(a.adminDevice)},
		{del, "/users/{userId}/devices/{deviceId}", ad(a.adminDeleteDevice)},
		{post, "/users/{userId}/delete_devices", ad(a.adminDeleteDevices)},

		{del, "/rooms/{roomId}", ad(inRoom(a.adminDeleteRoom))},
		{get, "/rooms/{roomId}/delete_status", ad(inRoom(a.adminDeleteStatusOfRoom))},
		{get, "/rooms/delete_status/{deleteId}", ad(a.adminDeleteStatus)},
	})
}

// adminServerVersion: GET /_synapse/admin/v1/server_version.
func (a *API) adminServerVersion(_ *http.Request, _ *users.Requester) (any, error) {
	return map[string]string{"server_version": admin.Version()}, nil
}

// queryInt reads a non-negative integer query parameter, def if absent.
func queryInt(r *http.Request, name string, def int) (int, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, mxerr.InvalidParam("Query parameter %s must be a non-negative integer", name)
	}
	return n, nil
}

// queryBool reads a boolean query parameter ("true" or "false"), def if
// absent.
func queryBool(r *http.Request, name string, def bool) (bool, error) {
	switch r.URL.Query().Get(name) {
	case "":
		return def, nil
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, mxerr.InvalidParam("Boolean query parameter %s must be one of ['true', 'false']", name)
}

// queryDir reads the dir parameter: "f" (the default) or "b".
func queryDir(r *http.Request) (backwards bool, err error) {
	switch r.URL.Query().Get("dir") {
	case "", "f":
		return false, nil
	case "b":
		return true, nil
	}
	return false, mxerr.InvalidParam("Query parameter dir must be one of ['b', 'f']")
}

// queryPage reads the paging parameters most admin lists take: from
// (default 0), limit (default 100) and dir.
func queryPage(r *http.Request) (from, limit int, backwards bool, err error) {
	if from, err = queryInt(r, "from", 0); err != nil {
		return 0, 0, false, err
	}
	if limit, err = queryInt(r, "limit", 100); err != nil {
		return 0, 0, false, err
	}
	backwards, err = queryDir(r)
	return from, limit, backwards, err
}
