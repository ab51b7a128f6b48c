package clientapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/tessera-hs/tessera/housekeeping"
	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/roomserver"
	"github.com/tessera-hs/tessera/users"
)

// The housekeeping part of Synapse's admin API: history purges and the
// purge of the remote media cache. Kept in this one file so that it moves
// to a shared admin router in one piece.

// SetHousekeeping enables the housekeeping admin endpoints.
func (a *API) SetHousekeeping(h *housekeeping.Service) { a.housekeeping = h }

func (a *API) housekeepingRoutes(add func(string, []route)) {
	const get, post = http.MethodGet, http.MethodPost
	hk := func(h adminFunc) httpx.HandlerFunc { return a.adminOnly(a.needHousekeeping(h)) }
	add("/_synapse/admin/v1", []route{
		{post, "/purge_history/{roomId}", hk(a.purgeHistory)},
		{post, "/purge_history/{roomId}/{eventId}", hk(a.purgeHistory)},
		{get, "/purge_history_status/{purgeId}", hk(a.purgeHistoryStatus)},
		{post, "/purge_media_cache", hk(a.purgeMediaCache)},
	})
}

// needHousekeeping answers 404 M_UNRECOGNIZED while housekeeping is not
// wired (tests of the edge alone).
func (a *API) needHousekeeping(h adminFunc) adminFunc {
	return func(r *http.Request, who *users.Requester) (any, error) {
		if a.housekeeping == nil {
			return nil, mxerr.Unrecognized("Unrecognized request")
		}
		return h(r, who)
	}
}

// purgeHistory: POST /_synapse/admin/v1/purge_history/{roomId}[/{eventId}].
// https://element-hq.github.io/synapse/latest/admin_api/purge_history_api.html
func (a *API) purgeHistory(r *http.Request, who *users.Requester) (any, error) {
	var body struct {
		DeleteLocalEvents bool            `json:"delete_local_events"`
		PurgeUpToEventID  string          `json:"purge_up_to_event_id"`
		PurgeUpToTS       json.RawMessage `json:"purge_up_to_ts"`
	}
	if err := httpx.DecodeJSON(r, &body, true); err != nil {
		return nil, err
	}
	req := roomserver.PurgeRequest{RoomID: pathVar(r, "roomId"), EventID: pathVar(r, "eventId"), DeleteLocal: body.DeleteLocalEvents}
	switch {
	case req.EventID != "":
	case body.PurgeUpToEventID != "":
		req.EventID = body.PurgeUpToEventID
	case len(body.PurgeUpToTS) > 0 && string(body.PurgeUpToTS) != "null":
		var ts int64
		if err := json.Unmarshal(body.PurgeUpToTS, &ts); err != nil {
			return nil, mxerr.InvalidParam("purge_up_to_ts must be an int")
		}
		req.Before = time.UnixMilli(ts)
	default:
		return nil, mxerr.BadJSON("must specify purge_up_to_event_id or purge_up_to_ts")
	}
	id, err := a.housekeeping.StartPurge(r.Context(), req, who.UserID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"purge_id": id}, nil
}

// purgeHistoryStatus: GET /_synapse/admin/v1/purge_history_status/{purgeId}.
func (a *API) purgeHistoryStatus(r *http.Request, _ *users.Requester) (any, error) {
	st, ok := a.housekeeping.Purge(pathVar(r, "purgeId"))
	if !ok {
		return nil, mxerr.NotFound("purge id '%s' not found", pathVar(r, "purgeId"))
	}
	out := map[string]any{"status": st.Status}
	if st.Status == "failed" {
		out["error"] = st.Error
	}
	return out, nil
}

// purgeMediaCache: POST /_synapse/admin/v1/purge_media_cache?before_ts=,
// the cached remote media not accessed since before_ts.
// https://element-hq.github.io/synapse/latest/admin_api/media_admin_api.html#purge-remote-media-api
func (a *API) purgeMediaCache(r *http.Request, who *users.Requester) (any, error) {
	raw := r.URL.Query().Get("before_ts")
	if raw == "" {
		return nil, mxerr.MissingParam("Missing integer query parameter 'before_ts'")
	}
	ts, err := strconv.ParseInt(raw, 10, 64)
	if err != nil {
		return nil, mxerr.InvalidParam("Query parameter 'before_ts' must be an integer")
	}
	if ts < 0 {
		return nil, mxerr.InvalidParam("Query parameter before_ts must be a positive integer.")
	}
	if ts < 30_000_000_000 {
		// Synapse's guard against seconds given for milliseconds.
		return nil, mxerr.InvalidParam("Query parameter before_ts you provided is from the year 1970. " +
			"Double check that you are providing a timestamp in milliseconds.")
	}
	n, err := a.housekeeping.PurgeMediaCache(r.Context(), time.UnixMilli(ts), who.UserID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"deleted": n}, nil
}
