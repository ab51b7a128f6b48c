package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/keys"
	"github.com/tessera-hs/tessera/users"
)

// SetKeys installs the end-to-end encryption key store; call it once,
// before serving requests.
func (a *API) SetKeys(k *keys.Service) { a.keys = k }

// keysRoutes are the /keys endpoints. Guests may upload, query and claim
// keys (the spec's guest access module lists them), not cross-sign.
// https://spec.matrix.org/v1.19/client-server-api/#end-to-end-encryption
func (a *API) keysRoutes() []route {
	const post = http.MethodPost
	return []route{
		{post, "/keys/upload", a.authed(a.uploadKeys, guestOK)},
		{post, "/keys/query", a.authed(a.queryKeys, guestOK)},
		{post, "/keys/claim", a.authed(a.claimKeys, guestOK)},
		{post, "/keys/device_signing/upload", a.authed(a.uploadCrossSigningKeys, noGuests)},
		{post, "/keys/signatures/upload", a.authed(a.uploadSignatures, noGuests)},
	}
}

// maxSignedObjects bounds the objects of one signatures upload.
const maxSignedObjects = 1000

// uploadKeys: POST /keys/upload.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3keysupload
func (a *API) uploadKeys(r *http.Request, who *users.Requester) (any, error) {
	var req keys.UploadRequest
	if err := httpx.DecodeJSON(r, &req, true); err != nil {
		return nil, err
	}
	counts, err := a.keys.Upload(r.Context(), who.UserID, who.DeviceID, req)
	if err != nil {
		return nil, err
	}
	return map[string]any{"one_time_key_counts": counts}, nil
}

// queryKeys: POST /keys/query.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3keysquery
func (a *API) queryKeys(r *http.Request, who *users.Requester) (any, error) {
	var req struct {
		DeviceKeys map[string][]string `json:"device_keys"`
	}
	if err := httpx.DecodeJSON(r, &req, false); err != nil {
		return nil, err
	}
	if err := keys.CheckQuery(req.DeviceKeys); err != nil {
		return nil, err
	}
	return a.keys.Query(r.Context(), who.UserID, req.DeviceKeys)
}

// claimKeys: POST /keys/claim.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3keysclaim
func (a *API) claimKeys(r *http.Request, who *users.Requester) (any, error) {
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	if err := httpx.DecodeJSON(r, &req, false); err != nil {
		return nil, err
	}
	if err := keys.CheckClaim(req.OneTimeKeys); err != nil {
		return nil, err
	}
	return a.keys.Claim(r.Context(), req.OneTimeKeys)
}

// uploadCrossSigningKeys: POST /keys/device_signing/upload. UIA is needed
// only to replace existing keys: not for the first upload, nor for
// uploading the keys already stored (a retry).
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3keysdevice_signingupload
func (a *API) uploadCrossSigningKeys(r *http.Request, who *users.Requester) (any, error) {
	raw, err := httpx.ReadBody(r)
	if err != nil {
		return nil, err
	}
	var req keys.CrossSigningUpload
	if err := httpx.Unmarshal(raw, &req); err != nil {
		return nil, err
	}
	// Application services replace their users' keys without
	// user-interactive auth (spec v1.17, MSC4190).
	err = a.keys.UploadCrossSigningKeys(r.Context(), who.UserID, req, a.managesDevices(who))
	if errors.Is(err, keys.ErrAuthRequired) {
		if err := a.crossSigningResetUIA(r, who, raw); err != nil {
			return nil, err
		}
		err = a.keys.UploadCrossSigningKeys(r.Context(), who.UserID, req, true)
	}
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// uploadSignatures: POST /keys/signatures/upload.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3keyssignaturesupload
func (a *API) uploadSignatures(r *http.Request, who *users.Requester) (any, error) {
	var req map[string]map[string]json.RawMessage
	if err := httpx.DecodeJSON(r, &req, false); err != nil {
		return nil, err
	}
	n := 0
	for _, objs := range req {
		n += len(objs)
	}
	if n > maxSignedObjects {
		return nil, mxerr.TooLarge("At most %d signed objects may be uploaded at once", maxSignedObjects)
	}
	failures, err := a.keys.UploadSignatures(r.Context(), who.UserID, req)
	if err != nil {
		return nil, err
	}
	return map[string]any{"failures": failures}, nil
}
