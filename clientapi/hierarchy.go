package clientapi

import (
	"net/http"
	"strconv"

	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/roomserver"
	"github.com/tessera-hs/tessera/users"
)

func (a *API) hierarchyRoutes(add func(prefix string, routes []route)) {
	add("/_matrix/client/v1", []route{
		{http.MethodGet, "/rooms/{roomId}/hierarchy", a.authed(a.hierarchy, guestOK)},
	})
}

// Page sizes of /hierarchy: Synapse's default of 50, and a ceiling.
const (
	hierarchyDefaultLimit = 50
	hierarchyMaxLimit     = 100
)

// hierarchy: GET /rooms/{roomId}/hierarchy.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1roomsroomidhierarchy
func (a *API) hierarchy(r *http.Request, who *users.Requester) (any, error) {
	id, err := roomID(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	req := roomserver.HierarchyRequest{RoomID: id, UserID: who.UserID, MaxDepth: -1, From: q.Get("from")}
	if v := q.Get("suggested_only"); v != "" {
		if req.SuggestedOnly, err = strconv.ParseBool(v); err != nil {
			return nil, mxerr.InvalidParam("suggested_only must be true or false")
		}
	}
	if v := q.Get("max_depth"); v != "" {
		if req.MaxDepth, err = strconv.Atoi(v); err != nil || req.MaxDepth < 0 {
			return nil, mxerr.InvalidParam("max_depth must be a non-negative integer")
		}
	}
	req.Limit = hierarchyDefaultLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, mxerr.InvalidParam("limit must be a positive integer")
		}
		req.Limit = min(n, hierarchyMaxLimit)
	}
	return a.rooms.SpaceHierarchy(r.Context(), req)
}
