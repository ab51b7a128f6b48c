package clientapi

import (
	"net/http"
	"strconv"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/roomserver"
	"github.com/tessera-hs/tessera/users"
)

// roomExtraRoutes are the room endpoints beyond membership, messages and
// state: the public room list, summaries, reports, upgrades and
// timestamp lookups.
func (a *API) roomExtraRoutes() []route {
	const get, post = http.MethodGet, http.MethodPost
	return []route{
		{get, "/publicRooms", a.optionalAuth(a.getPublicRooms)},
		{post, "/publicRooms", a.authed(a.queryPublicRooms, guestOK)},
		{post, "/rooms/{roomId}/report", a.authed(a.reportRoom, noGuests)},
		{post, "/rooms/{roomId}/report/{eventId}", a.authed(a.reportEvent, noGuests)},
		{post, "/rooms/{roomId}/upgrade", a.authed(a.upgradeRoom, noGuests)},
	}
}

// roomExtraPrefixedRoutes adds the endpoints of this area that live under
// other prefixes than v3: v1, the unstable prefixes clients still call,
// and Synapse's admin API.
func (a *API) roomExtraPrefixedRoutes(add func(prefix string, routes []route)) {
	const get = http.MethodGet
	add("/_matrix/client/v1", []route{
		{get, "/room_summary/{roomIdOrAlias}", a.optionalAuth(a.roomSummary)},
		{get, "/rooms/{roomId}/timestamp_to_event", a.authed(a.timestampToEvent, noGuests)},
	})
	// MSC3266's unstable paths, which mautrix-go and others use before
	// they see v1.15 in /versions.
	add("/_matrix/client/unstable/im.nheko.summary", []route{
		{get, "/summary/{roomIdOrAlias}", a.optionalAuth(a.roomSummary)},
		{get, "/rooms/{roomIdOrAlias}/summary", a.optionalAuth(a.roomSummary)},
	})
	// MSC3030's unstable path.
	add("/_matrix/client/unstable/org.matrix.msc3030", []route{
		{get, "/rooms/{roomId}/timestamp_to_event", a.authed(a.timestampToEvent, noGuests)},
	})
	add("/_synapse/admin/v1", []route{
		{get, "/event_reports", a.authed(a.eventReports, noGuests)},
	})
}

// optionalAuth serves endpoints an access token is optional for: without
// one h gets a nil requester; with one it must be valid (a wrong token is
// 401, not silently anonymous).
func (a *API) optionalAuth(h authedFunc) httpx.HandlerFunc {
	withToken := a.authed(h, guestOK)
	return func(r *http.Request) (any, error) {
		if r.Header.Get("Authorization") == "" && r.URL.Query().Get("access_token") == "" {
			return h(r, nil)
		}
		return withToken(r)
	}
}

// getPublicRooms: GET /publicRooms.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3publicrooms
func (a *API) getPublicRooms(r *http.Request, _ *users.Requester) (any, error) {
	q := r.URL.Query()
	req := roomserver.PublicRoomsRequest{Server: q.Get("server"), Since: q.Get("since")}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return nil, mxerr.InvalidParam("limit must be a non-negative integer")
		}
		req.Limit = n
	}
	if a.remoteDirectory(req.Server) {
		return a.queries.RemotePublicRooms(r.Context(), req.Server, req.Limit, req.Since, "", false, "")
	}
	return a.rooms.PublicRooms(r.Context(), req)
}

// remoteDirectory reports whether a directory request names another
// server, which federation can ask.
func (a *API) remoteDirectory(server string) bool {
	return a.queries != nil && server != "" && server != a.cfg.ServerName
}

// queryPublicRooms: POST /publicRooms.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3publicrooms
func (a *API) queryPublicRooms(r *http.Request, _ *users.Requester) (any, error) {
	var body roomserver.PublicRoomsBody
	if err := httpx.DecodeJSON(r, &body, true); err != nil {
		return nil, err
	}
	if body.IncludeAllNetworks && body.ThirdPartyInstanceID != "" {
		return nil, mxerr.InvalidParam("third_party_instance_id cannot be used with include_all_networks")
	}
	req := body.Request(r.URL.Query().Get("server"))
	if a.remoteDirectory(req.Server) {
		return a.queries.RemotePublicRooms(r.Context(), req.Server, req.Limit, req.Since, req.SearchTerm, body.IncludeAllNetworks, req.ThirdPartyInstanceID)
	}
	return a.rooms.PublicRooms(r.Context(), req)
}

// roomSummary: GET /v1/room_summary/{roomIdOrAlias}, also at MSC3266's
// unstable paths.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1room_summaryroomidoralias
func (a *API) roomSummary(r *http.Request, who *users.Requester) (any, error) {
	var userID string
	if who != nil {
		userID = who.UserID
	}
	target, err := checkRoomIDOrAlias(pathVar(r, "roomIdOrAlias"), "path")
	if err != nil {
		return nil, err
	}
	return a.rooms.RoomSummary(r.Context(), target, userID)
}

// reportEvent: POST /rooms/{roomId}/report/{eventId}. score left the spec
// in v1.18; we still store it from older clients, an integer as before.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidreporteventid
func (a *API) reportEvent(r *http.Request, who *users.Requester) (any, error) {
	id, err := roomID(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		Reason *string `json:"reason"`
		Score  *int64  `json:"score"`
	}
	if err := httpx.DecodeJSON(r, &body, true); err != nil {
		return nil, err
	}
	if err := a.rooms.ReportEvent(r.Context(), id, pathVar(r, "eventId"), who.UserID, body.Reason, body.Score); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// reportRoom: POST /rooms/{roomId}/report. reason is required, though it
// may be blank.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidreport
func (a *API) reportRoom(r *http.Request, who *users.Requester) (any, error) {
	id, err := roomID(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		Reason *string `json:"reason"`
	}
	if err := httpx.DecodeJSON(r, &body, false); err != nil {
		return nil, err
	}
	if body.Reason == nil {
		return nil, mxerr.MissingParam("reason is required")
	}
	if err := a.rooms.ReportRoom(r.Context(), id, who.UserID, *body.Reason); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// upgradeRoom: POST /rooms/{roomId}/upgrade.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidupgrade
func (a *API) upgradeRoom(r *http.Request, who *users.Requester) (any, error) {
	id, err := roomID(r)
	if err != nil {
		return nil, err
	}
	if err := who.Check(users.ActionUpgradeRoom); err != nil {
		return nil, err
	}
	var body struct {
		NewVersion         string   `json:"new_version"`
		AdditionalCreators []string `json:"additional_creators"`
	}
	if err := httpx.DecodeJSON(r, &body, false); err != nil {
		return nil, err
	}
	if body.NewVersion == "" {
		return nil, mxerr.MissingParam("new_version is required")
	}
	newID, err := a.rooms.UpgradeRoom(r.Context(), roomserver.UpgradeRequest{
		RoomID: id, UserID: who.UserID, NewVersion: body.NewVersion, AdditionalCreators: body.AdditionalCreators,
	})
	if err != nil {
		return nil, err
	}
	return map[string]string{"replacement_room": newID}, nil
}

// timestampToEvent: GET /v1/rooms/{roomId}/timestamp_to_event.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1roomsroomidtimestamp_to_event
func (a *API) timestampToEvent(r *http.Request, who *users.Requester) (any, error) {
	id, err := roomID(r)
	if err != nil {
		return nil, err
	}
	ts, backwards, err := roomserver.ParseTimestampQuery(r.URL.Query())
	if err != nil {
		return nil, err
	}
	ev, err := a.rooms.TimestampToEvent(r.Context(), id, who.UserID, ts, backwards)
	if me, ok := mxerr.As(err); err != nil && (!ok || me.Code != "M_NOT_FOUND") {
		return nil, err
	}
	eventID, originTS := "", int64(0)
	if ev != nil {
		eventID, originTS = ev.EventID(), int64(ev.OriginServerTS())
	}
	// Our copy of a federated room may lack the history before our join,
	// or have gaps: unless we hold an event at ts exactly, the room's
	// other servers may know a closer one (Synapse asks them too).
	if a.remoteTS != nil && originTS != ts {
		if rid, rts, ok := a.remoteTimestamp(r, id, ts, backwards); ok &&
			(eventID == "" || (!backwards && rts < originTS) || (backwards && rts > originTS)) {
			eventID, originTS = rid, rts
		}
	}
	if eventID == "" {
		return nil, err
	}
	return map[string]any{"event_id": eventID, "origin_server_ts": originTS}, nil
}

// eventReports: GET /_synapse/admin/v1/event_reports, for server admins.
// Newest first; from is an offset, as in Synapse. Room reports are listed
// too, without an event_id.
// https://element-hq.github.io/synapse/latest/admin_api/event_reports.html
func (a *API) eventReports(r *http.Request, who *users.Requester) (any, error) {
	if !who.IsAdmin {
		return nil, mxerr.Forbidden("You are not a server admin")
	}
	q := r.URL.Query()
	limit, err := parseLimit(q.Get("limit"), 100, 1000)
	if err != nil {
		return nil, err
	}
	from := 0
	if s := q.Get("from"); s != "" {
		if from, err = strconv.Atoi(s); err != nil || from < 0 {
			return nil, mxerr.InvalidParam("from must be a non-negative integer")
		}
	}
	page, err := a.rooms.Reports(r.Context(), limit, from)
	if err != nil {
		return nil, err
	}
	reports := make([]map[string]any, len(page.Reports))
	for i, rep := range page.Reports {
		m := map[string]any{
			"id": rep.ID, "room_id": rep.RoomID, "user_id": rep.Reporter, "received_ts": rep.ReceivedTS,
			"reason": rep.Reason, "score": rep.Score,
		}
		if rep.EventID != "" {
			m["event_id"] = rep.EventID
		}
		reports[i] = m
	}
	out := map[string]any{"event_reports": reports, "total": page.Total}
	if page.Next > 0 {
		out["next_token"] = page.Next
	}
	return out, nil
}
