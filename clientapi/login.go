package clientapi

import (
	"net/http"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/users"
)

// loginFlows: GET /login. Only what we serve is offered.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3login
// With password login turned off and no application services, the legacy
// API is off: 404 M_UNRECOGNIZED tells clients to use the OAuth 2.0 API.
func (a *API) loginFlows(r *http.Request) (any, error) {
	var flows []map[string]string
	if a.cfg.Auth.PasswordLogin {
		flows = append(flows, map[string]string{"type": stagePassword})
	}
	// Application services log in with their as_token, when there are
	// any (Synapse always offers it).
	if len(a.users.AppServices().All()) > 0 {
		flows = append(flows, map[string]string{"type": loginAppService})
	}
	if len(flows) == 0 {
		return nil, errLegacyAuthOff()
	}
	return map[string]any{"flows": flows}, nil
}

// errLegacyAuthOff is the spec's answer of /login on a server that only
// signs in through the OAuth 2.0 API.
// https://spec.matrix.org/v1.19/client-server-api/#authentication-api-discovery
func errLegacyAuthOff() error {
	return mxerr.Unrecognized("OAuth 2.0 authentication is in use on this homeserver.")
}

// loginAppService is the login (and registration) type of application
// services, authenticated by their as_token.
// https://spec.matrix.org/v1.19/client-server-api/#appservice-login
const loginAppService = "m.login.application_service"

type loginRequest struct {
	Type                     string          `json:"type"`
	Identifier               *userIdentifier `json:"identifier"`
	User                     string          `json:"user"` // deprecated
	Password                 string          `json:"password"`
	DeviceID                 string          `json:"device_id"`
	InitialDeviceDisplayName *string         `json:"initial_device_display_name"`
	RefreshToken             bool            `json:"refresh_token"`
}

// sessionResponse is the body /login and /register answer with.
type sessionResponse struct {
	UserID       string `json:"user_id"`
	AccessToken  string `json:"access_token,omitempty"`
	DeviceID     string `json:"device_id,omitempty"`
	HomeServer   string `json:"home_server"` // deprecated, still read by some clients
	RefreshToken string `json:"refresh_token,omitempty"`
	ExpiresInMS  int64  `json:"expires_in_ms,omitempty"`
}

func (a *API) sessionResponse(s *users.Session) *sessionResponse {
	return &sessionResponse{
		UserID: s.UserID, AccessToken: s.AccessToken, DeviceID: s.DeviceID,
		HomeServer: a.cfg.ServerName, RefreshToken: s.RefreshToken, ExpiresInMS: s.ExpiresIn.Milliseconds(),
	}
}

// login: POST /login with m.login.password.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3login
func (a *API) login(r *http.Request) (any, error) {
	var req loginRequest
	if err := httpx.DecodeJSON(r, &req, false); err != nil {
		return nil, err
	}
	if req.Type == loginAppService {
		return a.loginAppService(r, &req)
	}
	if !a.cfg.Auth.PasswordLogin {
		if len(a.users.AppServices().All()) == 0 {
			return nil, errLegacyAuthOff()
		}
		return nil, mxerr.Unknown(http.StatusBadRequest, "Password login is turned off on this server: use the OAuth 2.0 API")
	}
	if err := limit(a.loginPerAddress, a.clientIP(r)); err != nil {
		return nil, err
	}
	if req.Type != stagePassword {
		return nil, mxerr.Unknown(http.StatusBadRequest, "Unknown login type %q", req.Type)
	}
	ident := req.User
	if req.Identifier != nil {
		if req.Identifier.Type != "m.id.user" {
			return nil, mxerr.Unknown(http.StatusBadRequest, "Unsupported identifier type %q", req.Identifier.Type)
		}
		ident = req.Identifier.User
	}
	if ident == "" {
		return nil, mxerr.MissingParam("identifier.user is required")
	}
	userID, err := a.checkPasswordLogin(r, ident, req.Password)
	if err != nil {
		return nil, err
	}
	sess, err := a.users.CreateSession(r.Context(), users.NewSession{
		UserID: userID, DeviceID: req.DeviceID, DisplayName: req.InitialDeviceDisplayName,
		WantRefresh: req.RefreshToken, Client: a.clientInfo(r),
	})
	if err != nil {
		return nil, err
	}
	return a.sessionResponse(sess), nil
}

// loginAppService logs an application service in as a user of its
// namespaces (a device and token for it), authenticated by its as_token.
// No rate limit: the as_token is the proof.
func (a *API) loginAppService(r *http.Request, req *loginRequest) (any, error) {
	token, err := accessToken(r)
	if err != nil {
		return nil, err
	}
	if a.users.AppServices().ByASToken(token) == nil {
		// Not a service: limited, so that as_tokens cannot be guessed.
		if err := limit(a.loginPerAddress, a.clientIP(r)); err != nil {
			return nil, err
		}
	}
	ident := req.User
	if req.Identifier != nil {
		if req.Identifier.Type != "m.id.user" {
			return nil, mxerr.Unknown(http.StatusBadRequest, "Unsupported identifier type %q", req.Identifier.Type)
		}
		ident = req.Identifier.User
	}
	if ident == "" {
		return nil, mxerr.MissingParam("identifier.user is required")
	}
	userID, err := a.users.AppServiceLogin(r.Context(), token, ident)
	if err != nil {
		return nil, err
	}
	sess, err := a.users.CreateSession(r.Context(), users.NewSession{
		UserID: userID, DeviceID: req.DeviceID, DisplayName: req.InitialDeviceDisplayName,
		WantRefresh: req.RefreshToken, Client: a.clientInfo(r),
	})
	if err != nil {
		return nil, err
	}
	return a.sessionResponse(sess), nil
}

// refresh: POST /refresh.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3refresh
func (a *API) refresh(r *http.Request) (any, error) {
	var req struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := httpx.DecodeJSON(r, &req, false); err != nil {
		return nil, err
	}
	if req.RefreshToken == "" {
		return nil, mxerr.MissingParam("refresh_token is required")
	}
	sess, err := a.users.Refresh(r.Context(), req.RefreshToken)
	if err != nil {
		return nil, err
	}
	return struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
		ExpiresInMS  int64  `json:"expires_in_ms,omitempty"`
	}{sess.AccessToken, sess.RefreshToken, sess.ExpiresIn.Milliseconds()}, nil
}

// logout: POST /logout. The device is deleted with its tokens.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3logout
func (a *API) logout(r *http.Request, who *users.Requester) (any, error) {
	if err := a.users.DeleteDevices(r.Context(), who.UserID, []string{who.DeviceID}); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// logoutAll: POST /logout/all.
func (a *API) logoutAll(r *http.Request, who *users.Requester) (any, error) {
	if err := a.users.DeleteAllDevices(r.Context(), who.UserID); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}
