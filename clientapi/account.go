package clientapi

import (
	"net/http"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/users"
)

// whoami: GET /account/whoami.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3accountwhoami
func (a *API) whoami(r *http.Request, who *users.Requester) (any, error) {
	out := map[string]any{"user_id": who.UserID, "is_guest": who.IsGuest}
	// An application service acting as a user without a device has none.
	if who.DeviceID != "" {
		out["device_id"] = who.DeviceID
	}
	return out, nil
}

// changePassword: POST /account/password, behind m.login.password UIA.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3accountpassword
func (a *API) changePassword(r *http.Request, who *users.Requester) (any, error) {
	raw, err := httpx.ReadBody(r)
	if err != nil {
		return nil, err
	}
	var req struct {
		NewPassword   string `json:"new_password"`
		LogoutDevices *bool  `json:"logout_devices"`
	}
	if err := httpx.Unmarshal(raw, &req); err != nil {
		return nil, err
	}
	if req.NewPassword == "" {
		return nil, mxerr.MissingParam("new_password is required")
	}
	if err := a.users.CheckPasswordPolicy(req.NewPassword); err != nil {
		return nil, err
	}
	if err := a.passwordUIA(r, who, "POST /account/password", raw); err != nil {
		return nil, err
	}
	logout := req.LogoutDevices == nil || *req.LogoutDevices
	if err := a.users.SetPassword(r.Context(), who.UserID, req.NewPassword, who.DeviceID, !logout); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// deactivate: POST /account/deactivate, behind m.login.password UIA.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3accountdeactivate
func (a *API) deactivate(r *http.Request, who *users.Requester) (any, error) {
	raw, err := httpx.ReadBody(r)
	if err != nil {
		return nil, err
	}
	var req struct {
		Erase bool `json:"erase"`
	}
	if err := httpx.Unmarshal(raw, &req); err != nil {
		return nil, err
	}
	if err := a.passwordUIA(r, who, "POST /account/deactivate", raw); err != nil {
		return nil, err
	}
	if err := a.users.Deactivate(r.Context(), who.UserID, req.Erase); err != nil {
		return nil, err
	}
	a.log.WithField("user_id", who.UserID).Info("deactivated user")
	// We never bind 3PIDs to an identity server, so there is nothing to
	// unbind, and the spec says the result "must be success if the
	// homeserver has no identifiers to unbind for the user".
	return map[string]string{"id_server_unbind_result": "success"}, nil
}

// threePIDs: GET /account/3pid. This server does not support 3PIDs, so the
// list is always empty.
func (a *API) threePIDs(r *http.Request, who *users.Requester) (any, error) {
	return map[string]any{"threepids": []any{}}, nil
}

// threePIDDenied answers the 3PID endpoints that would add or verify an
// email address or phone number: the spec's 403 M_THREEPID_DENIED.
func threePIDDenied(r *http.Request) (any, error) { return nil, mxerr.ThreePIDDenied() }

func threePIDDeniedAuthed(r *http.Request, who *users.Requester) (any, error) {
	return nil, mxerr.ThreePIDDenied()
}

// threePIDNotFound answers 3PID removal: the account has none to remove.
func threePIDNotFound(r *http.Request, who *users.Requester) (any, error) {
	return nil, mxerr.ThreePIDNotFound()
}
