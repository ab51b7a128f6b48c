package clientapi

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"

	"github.com/gorilla/mux"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/oauth"
)

// The OAuth 2.0 API's endpoints and pages live below these paths; the
// metadata at /_matrix/client/v1/auth_metadata names them.
const (
	oauthPrefix     = "/_tessera/oauth2"
	pathAuthorize   = oauthPrefix + "/authorize"
	pathToken       = oauthPrefix + "/token"
	pathRevoke      = oauthPrefix + "/revoke"
	pathRegister    = oauthPrefix + "/register"
	pathDeviceAuthz = oauthPrefix + "/device"
	pagesPrefix     = "/_tessera"
	pathLoginPage   = pagesPrefix + "/login"
	pathSignupPage  = pagesPrefix + "/register"
	pathLogoutPage  = pagesPrefix + "/logout"
	pathDevicePage  = pagesPrefix + "/device"
	pathAccount     = pagesPrefix + "/account"
)

// SetOAuth turns the OAuth 2.0 API on.
func (a *API) SetOAuth(o *oauth.Service) { a.oauth = o }

// oauthRoutes registers the OAuth 2.0 API when it is on; off, its paths
// answer 404 M_UNRECOGNIZED, which tells clients to use /login.
// https://spec.matrix.org/v1.19/client-server-api/#authentication-api-discovery
func (a *API) oauthRoutes(r *mux.Router) {
	if a.oauth == nil {
		return
	}
	meta := httpx.JSON(a.log, a.authMetadata)
	r.Handle("/_matrix/client/v1/auth_metadata", meta).Methods(http.MethodGet)
	r.Handle("/_matrix/client/unstable/org.matrix.msc2965/auth_metadata", meta).Methods(http.MethodGet)
	r.Handle(pathRegister, a.oauthJSON(a.oauthRegisterClient)).Methods(http.MethodPost)
	r.Handle(pathToken, a.oauthJSON(a.oauthToken)).Methods(http.MethodPost)
	r.Handle(pathRevoke, a.oauthJSON(a.oauthRevoke)).Methods(http.MethodPost)
	r.Handle(pathDeviceAuthz, a.oauthJSON(a.oauthDeviceAuthorization)).Methods(http.MethodPost)
	a.oauthPageRoutes(r)
}

// accountActions are the account management actions the account page
// serves.
// https://spec.matrix.org/v1.19/client-server-api/#account-management-url-actions
var accountActions = []string{
	"org.matrix.devices_list", "org.matrix.device_view", "org.matrix.device_delete", "org.matrix.account_deactivate",
	actionCrossSigningReset,
}

// actionCrossSigningReset is the account page's approval of replacing the
// cross-signing keys, the m.oauth UIA stage's URL.
const actionCrossSigningReset = "org.matrix.cross_signing_reset"

// authMetadata: GET /_matrix/client/v1/auth_metadata (RFC 8414).
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1auth_metadata
func (a *API) authMetadata(r *http.Request) (any, error) {
	base := a.baseURL(r)
	return map[string]any{
		"issuer":                                     base + "/",
		"authorization_endpoint":                     base + pathAuthorize,
		"token_endpoint":                             base + pathToken,
		"revocation_endpoint":                        base + pathRevoke,
		"registration_endpoint":                      base + pathRegister,
		"device_authorization_endpoint":              base + pathDeviceAuthz,
		"response_types_supported":                   []string{"code"},
		"grant_types_supported":                      []string{oauth.GrantAuthorizationCode, oauth.GrantRefreshToken, oauth.GrantDeviceCode},
		"response_modes_supported":                   []string{"query", "fragment"},
		"code_challenge_methods_supported":           []string{"S256"},
		"token_endpoint_auth_methods_supported":      []string{"none"},
		"revocation_endpoint_auth_methods_supported": []string{"none"},
		"prompt_values_supported":                    []string{"create"},
		"account_management_uri":                     base + pathAccount,
		"account_management_actions_supported":       accountActions,
	}, nil
}

// oauthJSON serves an OAuth endpoint: OAuth errors are RFC 6749's
// {"error", "error_description"}, and so is a rate limit (429 with
// Retry-After, as RFC 6585; OAuth names no error code for it, so it is
// "too_many_requests", as other OAuth servers answer); internal failures
// keep the Matrix error body. Answers are never cached (RFC 6749 section
// 5.1).
func (a *API) oauthJSON(fn httpx.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		body, err := fn(r)
		var oe *oauth.Error
		me, isMatrix := mxerr.As(err)
		switch {
		case errors.As(err, &oe):
			httpx.WriteJSON(w, oe.Status, map[string]string{"error": oe.Code, "error_description": oe.Description})
		case isMatrix && me.Status == http.StatusTooManyRequests:
			if ms, ok := me.Extra["retry_after_ms"].(int64); ok && ms > 0 {
				w.Header().Set("Retry-After", strconv.FormatInt((ms+999)/1000, 10))
			}
			httpx.WriteJSON(w, me.Status, map[string]string{"error": "too_many_requests", "error_description": me.Message})
		case err != nil:
			httpx.WriteError(w, r, a.log, err)
		default:
			status := http.StatusOK
			if resp, ok := body.(*httpx.Response); ok {
				status, body = resp.Status, resp.Body
			}
			httpx.WriteJSON(w, status, body)
		}
	})
}

// oauthForm parses a form-encoded OAuth request. A public client may name
// itself in the form or as the user of HTTP Basic authentication.
func oauthForm(r *http.Request) (url.Values, error) {
	if err := r.ParseForm(); err != nil {
		if me := httpx.BodyError(err); me != nil && me.Code == "M_TOO_LARGE" {
			return nil, me
		}
		return nil, &oauth.Error{Status: http.StatusBadRequest, Code: "invalid_request", Description: "the body must be a form"}
	}
	form := r.PostForm
	if form.Get("client_id") == "" {
		if user, _, ok := r.BasicAuth(); ok {
			if id, err := url.QueryUnescape(user); err == nil {
				form.Set("client_id", id)
			}
		}
	}
	return form, nil
}

// oauthRegisterClient: dynamic client registration (RFC 7591).
// https://spec.matrix.org/v1.19/client-server-api/#client-registration
func (a *API) oauthRegisterClient(r *http.Request) (any, error) {
	if err := limit(a.registerPerAddress, "oauth-client:"+a.clientIP(r)); err != nil {
		return nil, err
	}
	var md oauth.ClientMetadata
	if err := httpx.DecodeJSON(r, &md, false); err != nil {
		if me, ok := mxerr.As(err); ok && me.Status == http.StatusRequestEntityTooLarge {
			return nil, err
		}
		return nil, &oauth.Error{Status: http.StatusBadRequest, Code: "invalid_client_metadata", Description: "the body must be a JSON object of client metadata"}
	}
	out, err := a.oauth.Register(r.Context(), md)
	if err != nil {
		return nil, err
	}
	return &httpx.Response{Status: http.StatusCreated, Body: out}, nil
}

// oauthToken: the token endpoint.
// https://spec.matrix.org/v1.19/client-server-api/#token-request
func (a *API) oauthToken(r *http.Request) (any, error) {
	// Before the form is read: a flood costs as little as possible.
	if err := limit(a.oauthTokenPerAddress, a.clientIP(r)); err != nil {
		return nil, err
	}
	form, err := oauthForm(r)
	if err != nil {
		return nil, err
	}
	return a.oauth.Token(r.Context(), form, a.clientInfo(r))
}

// oauthRevoke: token revocation (RFC 7009).
// https://spec.matrix.org/v1.19/client-server-api/#token-revocation
func (a *API) oauthRevoke(r *http.Request) (any, error) {
	form, err := oauthForm(r)
	if err != nil {
		return nil, err
	}
	if err := a.oauth.Revoke(r.Context(), form.Get("client_id"), form.Get("token")); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// oauthDeviceAuthorization: the device authorisation endpoint (RFC 8628).
// https://spec.matrix.org/v1.19/client-server-api/#device-authorisation-grant
func (a *API) oauthDeviceAuthorization(r *http.Request) (any, error) {
	form, err := oauthForm(r)
	if err != nil {
		return nil, err
	}
	da, err := a.oauth.StartDeviceAuthorization(r.Context(), form.Get("client_id"), form.Get("scope"))
	if err != nil {
		return nil, err
	}
	verify := a.baseURL(r) + pathDevicePage
	return map[string]any{
		"device_code": da.DeviceCode, "user_code": da.UserCode, "expires_in": da.ExpiresIn, "interval": da.Interval,
		"verification_uri":          verify,
		"verification_uri_complete": verify + "?" + url.Values{"user_code": {da.UserCode}}.Encode(),
	}, nil
}
