package clientapi

import (
	"encoding/json"
	"net/http"
	"net/url"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/users"
)

// crossSigningResetUIA guards replacing cross-signing keys: the password,
// or, for a device signed in through the OAuth 2.0 API (whose client never
// saw the password), the m.oauth stage too: the user approves the reset on
// the account page whose URL the challenge carries, and the client retries.
// https://spec.matrix.org/v1.19/client-server-api/#oauth-authentication
func (a *API) crossSigningResetUIA(r *http.Request, who *users.Requester, raw json.RawMessage) error {
	const operation = "POST /keys/device_signing/upload"
	if a.oauth == nil {
		return a.passwordUIA(r, who, operation, raw)
	}
	viaOAuth, err := a.oauth.SignedInThroughOAuth(r.Context(), who.UserID, who.DeviceID)
	if err != nil {
		return err
	}
	if !viaOAuth {
		return a.passwordUIA(r, who, operation, raw)
	}
	var body uiaBody
	if err := httpx.Unmarshal(raw, &body); err != nil {
		return err
	}
	approve := a.baseURL(r) + pathAccount + "?" + url.Values{"action": {actionCrossSigningReset}}.Encode()
	_, err = a.checkUIA(r, body.Auth, uiaRequest{
		operation: operation,
		userID:    who.UserID,
		flows:     [][]string{{stageOAuth}, {stagePassword}},
		params:    map[string]any{stageOAuth: map[string]string{"url": approve}},
	})
	return err
}

// uiaOAuth checks the m.oauth stage: has the user approved on the account
// page?
func (a *API) uiaOAuth(r *http.Request, userID string) (bool, error) {
	if a.oauth == nil {
		return false, nil
	}
	return a.oauth.CrossSigningResetApproved(r.Context(), userID)
}
