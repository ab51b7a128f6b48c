package clientapi

import (
	"net/http"
	"strings"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/users"
)

type registerRequest struct {
	// Type is m.login.application_service for an application service's
	// registration, which the spec puts at the top level.
	Type                     string    `json:"type"`
	Auth                     *authDict `json:"auth"`
	Username                 string    `json:"username"`
	Password                 string    `json:"password"`
	DeviceID                 string    `json:"device_id"`
	InitialDeviceDisplayName *string   `json:"initial_device_display_name"`
	InhibitLogin             bool      `json:"inhibit_login"`
	RefreshToken             bool      `json:"refresh_token"`
}

// register: POST /register.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3register
func (a *API) register(r *http.Request) (any, error) {
	var req registerRequest
	if err := httpx.DecodeJSON(r, &req, true); err != nil {
		return nil, err
	}
	if req.Type == loginAppService || (req.Auth != nil && req.Auth.Type == loginAppService) {
		return a.registerAppService(r, &req)
	}
	switch kind := r.URL.Query().Get("kind"); kind {
	case "", "user":
	case "guest":
		return a.registerGuest(r, &req)
	default:
		return nil, mxerr.InvalidParam("kind must be \"user\" or \"guest\"")
	}

	var flows [][]string
	switch {
	case a.users.RegistrationTokensRequired():
		flows = [][]string{{stageRegToken}}
	case a.cfg.Registration.Open:
		flows = [][]string{{stageDummy}}
	default:
		return nil, mxerr.Forbidden("Registration is not enabled on this server")
	}
	// The per-address limit counts accounts created (and failed token
	// attempts), as Synapse's rc_registration does, not requests: every
	// registration takes at least two requests (the UIA challenge, then
	// the auth), so counting requests would halve the configured burst.
	if err := checkLimit(a.registerPerAddress, a.clientIP(r)); err != nil {
		return nil, err
	}

	// Check what can be checked before asking the client to authenticate,
	// as Synapse does, so a taken name is reported on the first request.
	localpart := strings.ToLower(req.Username)
	if localpart != "" {
		if err := a.users.CheckAvailable(r.Context(), localpart); err != nil {
			return nil, err
		}
	}
	if req.Password == "" {
		if req.Auth == nil {
			// The first request may omit it; the challenge comes first.
			_, err := a.checkUIA(r, nil, uiaRequest{operation: "POST /register", flows: flows})
			return nil, err
		}
		return nil, mxerr.MissingParam("password is required")
	}
	if err := a.users.CheckPasswordPolicy(req.Password); err != nil {
		return nil, err
	}
	// Checked before the account is created: refused after, it would leave
	// an account behind whose name the client cannot register again.
	if !req.InhibitLogin {
		if err := users.ValidateDeviceID(req.DeviceID); err != nil {
			return nil, err
		}
	}

	res, err := a.checkUIA(r, req.Auth, uiaRequest{operation: "POST /register", flows: flows})
	if err != nil {
		return nil, err
	}
	acc, err := a.users.CreateAccount(r.Context(), users.NewAccount{
		Localpart: localpart, Password: req.Password, RegistrationToken: res.regToken,
	})
	if err != nil {
		return nil, err
	}
	a.registerPerAddress.Allow(a.clientIP(r))
	a.log.WithField("user_id", acc.UserID).Info("registered user")
	return a.loginAfterRegister(r, acc, &req)
}

// registerAppService creates a user for the application service whose
// as_token the request carries: no UIA and no password; the user must be
// in the service's namespaces (400 M_EXCLUSIVE).
// https://spec.matrix.org/v1.19/application-service-api/#server-admin-style-permissions
func (a *API) registerAppService(r *http.Request, req *registerRequest) (any, error) {
	token, err := accessToken(r)
	if err != nil {
		return nil, err
	}
	reg := a.users.AppServices().ByASToken(token)
	if reg == nil {
		return nil, mxerr.UnknownToken(false)
	}
	if reg.IsRateLimited() {
		if err := checkLimit(a.registerPerAddress, a.clientIP(r)); err != nil {
			return nil, err
		}
	}
	if req.Username == "" {
		return nil, mxerr.MissingParam("username is required")
	}
	// MSC4190: services that manage their devices do not log in.
	if reg.MSC4190 && !req.InhibitLogin {
		return nil, users.ErrAppServiceLoginUnsupported()
	}
	localpart := strings.ToLower(req.Username)
	if err := a.users.CheckAvailableFor(r.Context(), localpart, reg.ID); err != nil {
		return nil, err
	}
	if !req.InhibitLogin {
		if err := users.ValidateDeviceID(req.DeviceID); err != nil {
			return nil, err
		}
	}
	acc, err := a.users.CreateAccount(r.Context(), users.NewAccount{Localpart: localpart, AppService: reg.ID})
	if err != nil {
		return nil, err
	}
	if reg.IsRateLimited() {
		a.registerPerAddress.Allow(a.clientIP(r))
	}
	a.log.WithField("user_id", acc.UserID).WithField("appservice", reg.ID).Info("registered application service user")
	return a.loginAfterRegister(r, acc, req)
}

// registerGuest creates a guest account: no UIA, no password.
// https://spec.matrix.org/v1.19/client-server-api/#guest-access
func (a *API) registerGuest(r *http.Request, req *registerRequest) (any, error) {
	if !a.cfg.Registration.AllowGuests {
		return nil, mxerr.Forbidden("Guest access is not enabled on this server")
	}
	if err := limit(a.registerPerAddress, a.clientIP(r)); err != nil {
		return nil, err
	}
	acc, err := a.users.CreateAccount(r.Context(), users.NewAccount{IsGuest: true})
	if err != nil {
		return nil, err
	}
	// Guests always get a token: without one the account is useless.
	req.InhibitLogin = false
	req.DeviceID = ""
	return a.loginAfterRegister(r, acc, req)
}

func (a *API) loginAfterRegister(r *http.Request, acc *users.Account, req *registerRequest) (any, error) {
	if req.InhibitLogin {
		return &sessionResponse{UserID: acc.UserID, HomeServer: a.cfg.ServerName}, nil
	}
	sess, err := a.users.CreateSession(r.Context(), users.NewSession{
		UserID: acc.UserID, DeviceID: req.DeviceID, DisplayName: req.InitialDeviceDisplayName,
		WantRefresh: req.RefreshToken, Client: a.clientInfo(r),
	})
	if err != nil {
		return nil, err
	}
	return a.sessionResponse(sess), nil
}

// registerAvailable: GET /register/available.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3registeravailable
func (a *API) registerAvailable(r *http.Request) (any, error) {
	username := r.URL.Query().Get("username")
	if username == "" {
		return nil, mxerr.MissingParam("username is required")
	}
	if err := a.users.CheckAvailable(r.Context(), strings.ToLower(username)); err != nil {
		return nil, err
	}
	return map[string]bool{"available": true}, nil
}

// registrationTokenValidity: GET /v1/register/m.login.registration_token/validity.
// Rate limited like registration, since it is what a token guesser would call.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1registermloginregistration_tokenvalidity
func (a *API) registrationTokenValidity(r *http.Request) (any, error) {
	// The spec's 403 is for a server that does not permit registration at
	// all. With open registration and no tokens configured, registration is
	// permitted and every token is simply invalid (as in Synapse).
	if !a.users.RegistrationTokensRequired() && !a.cfg.Registration.Open {
		return nil, mxerr.Forbidden("Registration is not enabled on this server")
	}
	token := r.URL.Query().Get("token")
	if token == "" {
		return nil, mxerr.MissingParam("token is required")
	}
	if err := limit(a.registerPerAddress, a.clientIP(r)); err != nil {
		return nil, err
	}
	valid, err := a.users.ValidRegistrationToken(r.Context(), token)
	if err != nil {
		return nil, err
	}
	return map[string]bool{"valid": valid}, nil
}
