package clientapi

import (
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/media"
	"github.com/tessera-hs/tessera/users"
)

// The media admin API and the statistics.
// https://element-hq.github.io/synapse/latest/admin_api/media_admin_api.html
// https://element-hq.github.io/synapse/latest/admin_api/statistics.html

// adminUserMedia: GET /_synapse/admin/v1/users/{userId}/media.
func (a *API) adminUserMedia(r *http.Request, _ *users.Requester) (any, error) {
	from, limit, backwards, err := queryPage(r)
	if err != nil {
		return nil, err
	}
	orderBy := r.URL.Query().Get("order_by")
	if _, ok := media.UserMediaOrders[orderBy]; orderBy != "" && !ok {
		return nil, mxerr.InvalidParam("Unknown value for order_by: %s", orderBy)
	}
	list, total, err := a.admin.UserMedia(r.Context(), pathVar(r, "userId"), from, limit, orderBy, backwards)
	if err != nil {
		return nil, err
	}
	out := map[string]any{"media": list, "total": total}
	if from+len(list) < total {
		out["next_token"] = from + len(list)
	}
	return out, nil
}

func deletedMedia(ids []string) map[string]any {
	return map[string]any{"deleted_media": ids, "total": len(ids)}
}

// adminDeleteUserMedia: DELETE /_synapse/admin/v1/users/{userId}/media.
func (a *API) adminDeleteUserMedia(r *http.Request, who *users.Requester) (any, error) {
	ids, err := a.admin.DeleteUserMedia(r.Context(), who.UserID, pathVar(r, "userId"))
	if err != nil {
		return nil, err
	}
	return deletedMedia(ids), nil
}

// adminDeleteMedia: DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}.
func (a *API) adminDeleteMedia(r *http.Request, who *users.Requester) (any, error) {
	ids, err := a.admin.DeleteMedia(r.Context(), who.UserID, spec.ServerName(pathVar(r, "serverName")), pathVar(r, "mediaId"))
	if err != nil {
		return nil, err
	}
	return deletedMedia(ids), nil
}

// adminDeleteMediaBefore: POST /_synapse/admin/v1/media/delete and its
// older form POST /_synapse/admin/v1/media/{serverName}/delete. Tessera
// keeps no record of which uploads are avatars, so keep_profiles=true (the
// default) is refused rather than ignored: pass keep_profiles=false.
func (a *API) adminDeleteMediaBefore(r *http.Request, who *users.Requester) (any, error) {
	if sn := pathVar(r, "serverName"); sn != "" && sn != a.cfg.ServerName {
		return nil, mxerr.Unknown(http.StatusBadRequest, "Can only delete local media")
	}
	q := r.URL.Query()
	if q.Get("before_ts") == "" {
		return nil, mxerr.MissingParam("Missing integer query parameter 'before_ts'")
	}
	before, err := strconv.ParseInt(q.Get("before_ts"), 10, 64)
	if err != nil || before < 0 {
		return nil, mxerr.InvalidParam("Query parameter before_ts must be a positive integer.")
	}
	if before < 30000000000 {
		// Synapse's guard against seconds passed for milliseconds.
		return nil, mxerr.InvalidParam("Query parameter before_ts you provided is from the year 1970. Double check that you are providing a timestamp in milliseconds.")
	}
	size, err := queryInt(r, "size_gt", 0)
	if err != nil {
		return nil, err
	}
	keep, err := queryBool(r, "keep_profiles", true)
	if err != nil {
		return nil, err
	}
	if keep {
		return nil, mxerr.InvalidParam("keep_profiles=true is not supported: this server does not track which media are avatars; pass keep_profiles=false")
	}
	ids, err := a.admin.DeleteMediaBefore(r.Context(), who.UserID, time.UnixMilli(before), int64(size))
	if err != nil {
		return nil, err
	}
	return deletedMedia(ids), nil
}

// adminMediaStatistics: GET /_synapse/admin/v1/statistics/users/media.
// Ordered by media_length, smallest first (dir=b: largest first).
func (a *API) adminMediaStatistics(r *http.Request, _ *users.Requester) (any, error) {
	from, limit, backwards, err := queryPage(r)
	if err != nil {
		return nil, err
	}
	stats, err := a.admin.MediaUsageByUser(r.Context())
	if err != nil {
		return nil, err
	}
	if backwards {
		slices.Reverse(stats)
	}
	start, end := min(from, len(stats)), min(from+limit, len(stats))
	out := map[string]any{"users": stats[start:end], "total": len(stats)}
	if end < len(stats) {
		out["next_token"] = end
	}
	return out, nil
}
