package clientapi

import (
	"net/http"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/users"
)

// createFilter: POST /user/{userId}/filter.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3useruseridfilter
func (a *API) createFilter(r *http.Request, who *users.Requester) (any, error) {
	if pathVar(r, "userId") != who.UserID {
		return nil, mxerr.Forbidden("Cannot create filters for other users")
	}
	raw, err := httpx.ReadBody(r)
	if err != nil {
		return nil, err
	}
	id, err := a.users.CreateFilter(r.Context(), who.UserID, raw)
	if err != nil {
		return nil, err
	}
	return map[string]string{"filter_id": id}, nil
}

// getFilter: GET /user/{userId}/filter/{filterId}.
func (a *API) getFilter(r *http.Request, who *users.Requester) (any, error) {
	if pathVar(r, "userId") != who.UserID {
		return nil, mxerr.Forbidden("Cannot get filters for other users")
	}
	return a.users.Filter(r.Context(), who.UserID, pathVar(r, "filterId"))
}
