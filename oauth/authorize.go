package oauth

import (
	"context"
	"fmt"
	"net/url"
	"strings"
)

// AuthRequest is a checked authorisation request: what the consent page
// shows and what approval turns into a code.
type AuthRequest struct {
	Client       *ClientMetadata
	RedirectURI  string
	ResponseMode string // query or fragment
	State        string
	Scope        string // as requested
	Challenge    string
	// Prompt is "create" when the client asks for the sign-up page.
	Prompt string
	scope  *grantScope
}

// DeviceID is the device the tokens will be for.
func (r *AuthRequest) DeviceID() string { return r.scope.DeviceID }

// Params are the request's parameters, for the consent form to post back
// (the approval checks them all again).
func (r *AuthRequest) Params() url.Values {
	v := url.Values{
		"client_id": {r.Client.ClientID}, "redirect_uri": {r.RedirectURI}, "response_type": {"code"},
		"response_mode": {r.ResponseMode}, "scope": {r.Scope}, "code_challenge": {r.Challenge},
		"code_challenge_method": {"S256"}, "state": {r.State}, "device_id": {r.scope.DeviceID},
	}
	if r.Prompt != "" {
		v.Set("prompt", r.Prompt)
	}
	return v
}

// ParseAuthorization checks an authorisation request (RFC 6749 section
// 4.1.1 with RFC 7636's PKCE, S256 only). An unknown client or a redirect
// URI it did not register gets (nil, error): the user must be told, since
// redirecting would hand the error to whoever forged the request. Any other
// error comes with the request, to be sent back to the client with
// ErrorRedirect.
// https://spec.matrix.org/v1.19/client-server-api/#authorization-request
func (s *Service) ParseAuthorization(ctx context.Context, q url.Values) (*AuthRequest, error) {
	client, err := s.Client(ctx, q.Get("client_id"))
	if err != nil {
		return nil, err
	}
	if client == nil {
		return nil, invalidRequest("unknown client_id")
	}
	redirect := q.Get("redirect_uri")
	if redirect == "" || !client.matchRedirectURI(redirect) {
		return nil, invalidRequest("redirect_uri is not one the client registered")
	}
	r := &AuthRequest{Client: client, RedirectURI: redirect, State: q.Get("state"), Scope: q.Get("scope"),
		Challenge: q.Get("code_challenge"), ResponseMode: "query"}
	switch m := q.Get("response_mode"); m {
	case "", "query":
	case "fragment":
		r.ResponseMode = m
	default:
		return r, invalidRequest("response_mode must be query or fragment")
	}
	if q.Get("response_type") != "code" {
		return r, oauthErr(400, "unsupported_response_type", "response_type must be code")
	}
	if !client.allowsGrant(GrantAuthorizationCode) {
		return r, oauthErr(400, "unauthorized_client", "the client did not register the authorization_code grant")
	}
	if r.Challenge == "" {
		return r, invalidRequest("code_challenge is required (PKCE)")
	}
	if m := q.Get("code_challenge_method"); m != "S256" {
		return r, invalidRequest("code_challenge_method must be S256")
	}
	if !pkceValue.MatchString(r.Challenge) {
		return r, invalidRequest("code_challenge is malformed")
	}
	// The consent page is always shown, so prompt=consent is met; other
	// values (login, none, select_account) are not served.
	switch p := q.Get("prompt"); p {
	case "", "consent":
	case "create":
		r.Prompt = p
	default:
		return r, oauthErr(400, "invalid_request", "prompt %q is not supported", p)
	}
	// The consent form posts back the device ID first chosen, so that a
	// request without a device scope keeps one device through the pages.
	chosen := q.Get("device_id")
	r.scope, err = parseScope(r.Scope, func() string {
		if deviceIDInScope.MatchString(chosen) {
			return chosen
		}
		return randomDeviceID()
	})
	if err != nil {
		return r, err
	}
	return r, nil
}

// ErrorRedirect is where the browser goes to tell the client of err.
// https://datatracker.ietf.org/doc/html/rfc6749#section-4.1.2.1
func (r *AuthRequest) ErrorRedirect(err *Error) string {
	v := url.Values{"error": {err.Code}, "error_description": {err.Description}}
	if r.State != "" {
		v.Set("state", r.State)
	}
	return r.redirect(v)
}

func (r *AuthRequest) redirect(v url.Values) string {
	if r.ResponseMode == "fragment" {
		base, _, _ := strings.Cut(r.RedirectURI, "#")
		return base + "#" + v.Encode()
	}
	sep := "?"
	if strings.Contains(r.RedirectURI, "?") {
		sep = "&"
	}
	return r.RedirectURI + sep + v.Encode()
}

// Deny is where the browser goes when the user refuses.
func (r *AuthRequest) Deny() string {
	return r.ErrorRedirect(oauthErr(400, "access_denied", "the user refused access"))
}

// Approve issues a code for userID and returns where the browser goes.
func (s *Service) Approve(ctx context.Context, r *AuthRequest, userID string) (string, error) {
	code := randomSecret()
	now := s.nowMS()
	// Used codes are kept a day past expiry to recognise replays.
	if _, err := s.db.ExecContext(ctx, `DELETE FROM oauth_codes WHERE expires_ts < $1`, now-86400000); err != nil {
		return "", fmt.Errorf("prune oauth codes: %w", err)
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO oauth_codes (code_hash, client_id, redirect_uri, user_id, device_id, scope,
			code_challenge, created_ts, expires_ts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		hashSecret(code), r.Client.ClientID, r.RedirectURI, userID, r.scope.DeviceID, r.scope.String,
		r.Challenge, now, now+s.cfg.CodeLifetime.Milliseconds())
	if err != nil {
		return "", fmt.Errorf("store oauth code: %w", err)
	}
	v := url.Values{"code": {code}}
	if r.State != "" {
		v.Set("state", r.State)
	}
	return r.redirect(v), nil
}

// randomDeviceID makes a device ID that fits the scope grammar.
func randomDeviceID() string {
	return strings.ToUpper(strings.NewReplacer("-", "A", "_", "B").Replace(randomSecret()[:12]))
}
