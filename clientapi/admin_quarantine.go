package clientapi

import (
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/users"
)

// Media quarantine and protection in the media admin API.
// https://element-hq.github.io/synapse/latest/admin_api/media_admin_api.html

// adminQuarantineMedia: POST /v1/media/quarantine/{serverName}/{mediaId}
// and /v1/media/unquarantine/{serverName}/{mediaId}.
func (a *API) adminQuarantineMedia(quarantine bool) adminFunc {
	return func(r *http.Request, who *users.Requester) (any, error) {
		err := a.admin.QuarantineMedia(r.Context(), who.UserID, spec.ServerName(pathVar(r, "serverName")), pathVar(r, "mediaId"), quarantine)
		if err != nil {
			return nil, err
		}
		return struct{}{}, nil
	}
}

// adminProtectMedia: POST /v1/media/protect/{mediaId} and
// /v1/media/unprotect/{mediaId}.
func (a *API) adminProtectMedia(protect bool) adminFunc {
	return func(r *http.Request, who *users.Requester) (any, error) {
		if err := a.admin.ProtectMedia(r.Context(), who.UserID, pathVar(r, "mediaId"), protect); err != nil {
			return nil, err
		}
		return struct{}{}, nil
	}
}

// adminQuarantineRoomMedia: POST /v1/room/{roomId}/media/quarantine.
func (a *API) adminQuarantineRoomMedia(r *http.Request, who *users.Requester, id string) (any, error) {
	n, err := a.admin.QuarantineRoomMedia(r.Context(), who.UserID, id)
	if err != nil {
		return nil, err
	}
	return map[string]int{"num_quarantined": n}, nil
}

// adminQuarantineUserMedia: POST /v1/user/{userId}/media/quarantine.
func (a *API) adminQuarantineUserMedia(r *http.Request, who *users.Requester) (any, error) {
	n, err := a.admin.QuarantineUserMedia(r.Context(), who.UserID, pathVar(r, "userId"))
	if err != nil {
		return nil, err
	}
	return map[string]int{"num_quarantined": n}, nil
}

// adminRoomMedia: GET /v1/room/{roomId}/media.
func (a *API) adminRoomMedia(r *http.Request, _ *users.Requester, id string) (any, error) {
	return a.admin.MediaInRoom(r.Context(), id)
}
