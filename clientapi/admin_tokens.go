package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/users"
)

// The registration tokens admin API.
// https://element-hq.github.io/synapse/latest/usage/administration/admin_api/registration_tokens.html

// adminListRegTokens: GET /_synapse/admin/v1/registration_tokens.
func (a *API) adminListRegTokens(r *http.Request, _ *users.Requester) (any, error) {
	var valid *bool
	if r.URL.Query().Get("valid") != "" {
		b, err := queryBool(r, "valid", false)
		if err != nil {
			return nil, err
		}
		valid = &b
	}
	ts, err := a.admin.RegistrationTokens(r.Context(), valid)
	if err != nil {
		return nil, err
	}
	return map[string]any{"registration_tokens": ts}, nil
}

// adminGetRegToken: GET /_synapse/admin/v1/registration_tokens/{token}.
func (a *API) adminGetRegToken(r *http.Request, _ *users.Requester) (any, error) {
	return a.admin.RegistrationToken(r.Context(), pathVar(r, "token"))
}

// optionalInt reads a body field that may be absent, null or an integer.
func optionalInt(body map[string]json.RawMessage, key string) (set bool, v *int64, err error) {
	raw, ok := body[key]
	if !ok {
		return false, nil, nil
	}
	if string(raw) == "null" {
		return true, nil, nil
	}
	var n int64
	if json.Unmarshal(raw, &n) != nil {
		return false, nil, mxerr.InvalidParam("%s must be an integer or null", key)
	}
	return true, &n, nil
}

// adminNewRegToken: POST /_synapse/admin/v1/registration_tokens/new.
func (a *API) adminNewRegToken(r *http.Request, who *users.Requester) (any, error) {
	var body map[string]json.RawMessage
	if err := httpx.DecodeJSON(r, &body, true); err != nil {
		return nil, err
	}
	nt := users.NewRegToken{Length: 16}
	if raw, ok := body["token"]; ok && json.Unmarshal(raw, &nt.Token) != nil {
		return nil, mxerr.InvalidParam("token must be a string")
	}
	if raw, ok := body["length"]; ok {
		if _, hasToken := body["token"]; hasToken {
			return nil, mxerr.InvalidParam("length cannot be given with token")
		}
		if json.Unmarshal(raw, &nt.Length) != nil {
			return nil, mxerr.InvalidParam("length must be an integer between 1 and 64")
		}
	}
	var err error
	if _, nt.UsesAllowed, err = optionalInt(body, "uses_allowed"); err != nil {
		return nil, err
	}
	if _, nt.ExpiryTime, err = optionalInt(body, "expiry_time"); err != nil {
		return nil, err
	}
	return a.admin.CreateRegistrationToken(r.Context(), who.UserID, nt)
}

// adminUpdateRegToken: PUT /_synapse/admin/v1/registration_tokens/{token}.
func (a *API) adminUpdateRegToken(r *http.Request, who *users.Requester) (any, error) {
	var body map[string]json.RawMessage
	if err := httpx.DecodeJSON(r, &body, true); err != nil {
		return nil, err
	}
	var u users.TokenUpdate
	var err error
	if u.SetUses, u.UsesAllowed, err = optionalInt(body, "uses_allowed"); err != nil {
		return nil, err
	}
	if u.SetExpiry, u.ExpiryTime, err = optionalInt(body, "expiry_time"); err != nil {
		return nil, err
	}
	return a.admin.UpdateRegistrationToken(r.Context(), who.UserID, pathVar(r, "token"), u)
}

// adminDeleteRegToken: DELETE /_synapse/admin/v1/registration_tokens/{token}.
func (a *API) adminDeleteRegToken(r *http.Request, who *users.Requester) (any, error) {
	if err := a.admin.DeleteRegistrationToken(r.Context(), who.UserID, pathVar(r, "token")); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}
