package clientapi

import (
	"net/http"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/slidingsync"
	"github.com/tessera-hs/tessera/users"
)

// slidingSyncPrefix is MSC4186's unstable prefix, the one the clients in
// use call.
const slidingSyncPrefix = "/_matrix/client/unstable/org.matrix.simplified_msc3575"

// SetSlidingSync enables simplified sliding sync.
func (a *API) SetSlidingSync(s *slidingsync.Service) { a.sliding = s }

func (a *API) slidingSyncRoutes(add func(string, []route)) {
	add(slidingSyncPrefix, []route{
		{http.MethodPost, "/sync", a.authed(a.slidingSync, guestOK)},
	})
}

// slidingSync: POST /sync, simplified sliding sync (MSC4186; see
// docs/sliding-sync.md).
// https://github.com/matrix-org/matrix-spec-proposals/blob/main/proposals/4186-simplified-sliding-sync.md
func (a *API) slidingSync(r *http.Request, who *users.Requester) (any, error) {
	if a.sliding == nil {
		return nil, mxerr.Unrecognized("Sliding sync is not enabled")
	}
	raw, err := httpx.ReadBody(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	param := func(name string) *string {
		if !q.Has(name) {
			return nil
		}
		v := q.Get(name)
		return &v
	}
	req, presence, err := slidingsync.ParseRequest(who.UserID, who.DeviceID,
		slidingsync.Query{Pos: param("pos"), Timeout: param("timeout"), SetPresence: param("set_presence")}, raw)
	if err != nil {
		return nil, err
	}
	// As /sync: the request keeps the user online (or idle) while it runs.
	defer a.syncs.Presence().Syncing(r.Context(), who.UserID, presence)()
	return a.sliding.Sync(r.Context(), req)
}
