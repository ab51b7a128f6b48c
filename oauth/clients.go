package oauth

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
)

// ClientMetadata is a client's registration (RFC 7591) as the Matrix spec
// profiles it: only the fields meaningful to Matrix are kept.
// https://spec.matrix.org/v1.19/client-server-api/#client-registration
type ClientMetadata struct {
	ClientID                string   `json:"client_id,omitempty"`
	ClientIDIssuedAt        int64    `json:"client_id_issued_at,omitempty"`
	ClientURI               string   `json:"client_uri"`
	ClientName              string   `json:"client_name,omitempty"`
	LogoURI                 string   `json:"logo_uri,omitempty"`
	TOSURI                  string   `json:"tos_uri,omitempty"`
	PolicyURI               string   `json:"policy_uri,omitempty"`
	RedirectURIs            []string `json:"redirect_uris,omitempty"`
	ResponseTypes           []string `json:"response_types,omitempty"`
	GrantTypes              []string `json:"grant_types,omitempty"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	ApplicationType         string   `json:"application_type"`
}

// Grant types this server serves.
const (
	GrantAuthorizationCode = "authorization_code"
	GrantRefreshToken      = "refresh_token"
	GrantDeviceCode        = "urn:ietf:params:oauth:grant-type:device_code"
)

// Name is what the pages call the client: its name, else its URI's host.
func (c *ClientMetadata) Name() string {
	if c.ClientName != "" {
		return c.ClientName
	}
	if u, err := url.Parse(c.ClientURI); err == nil {
		return u.Host
	}
	return c.ClientID
}

func (c *ClientMetadata) allowsGrant(grant string) bool {
	return slices.Contains(c.GrantTypes, grant)
}

func invalidMetadata(format string, a ...any) *Error {
	return oauthErr(400, "invalid_client_metadata", format, a...)
}
func invalidRedirectURI(format string, a ...any) *Error {
	return oauthErr(400, "invalid_redirect_uri", format, a...)
}

// Register validates a client's metadata, as the spec requires, and stores
// the client. The answer is the metadata with its new client_id.
// https://spec.matrix.org/v1.19/client-server-api/#client-registration
func (s *Service) Register(ctx context.Context, md ClientMetadata) (*ClientMetadata, error) {
	if err := validateMetadata(&md); err != nil {
		return nil, err
	}
	md.ClientID = randomSecret()[:26]
	md.ClientIDIssuedAt = s.now().Unix()
	raw, err := json.Marshal(md)
	if err != nil {
		return nil, err
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO oauth_clients (client_id, application_type, metadata_json, created_ts)
		VALUES ($1, $2, $3, $4)`, md.ClientID, md.ApplicationType, string(raw), s.nowMS()); err != nil {
		return nil, fmt.Errorf("store oauth client: %w", err)
	}
	return &md, nil
}

// Client returns a registered client, or nil for an unknown client_id.
func (s *Service) Client(ctx context.Context, clientID string) (*ClientMetadata, error) {
	var raw string
	err := s.db.QueryRowContext(ctx, `SELECT metadata_json FROM oauth_clients WHERE client_id = $1`, clientID).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load oauth client: %w", err)
	}
	var md ClientMetadata
	if err := json.Unmarshal([]byte(raw), &md); err != nil {
		return nil, fmt.Errorf("decode oauth client %s: %w", clientID, err)
	}
	return &md, nil
}

// authClient is the client a token, revocation or device request names:
// an unknown one is invalid_client (RFC 6749 section 5.2).
func (s *Service) authClient(ctx context.Context, clientID string) (*ClientMetadata, error) {
	client, err := s.Client(ctx, clientID)
	if err == nil && client == nil {
		err = invalidClient("unknown client_id")
	}
	return client, err
}

// validateMetadata applies the spec's rules and fills RFC 7591's defaults.
func validateMetadata(md *ClientMetadata) error {
	if md.ClientURI == "" {
		return invalidMetadata("client_uri is required")
	}
	base, err := webURI("client_uri", md.ClientURI)
	if err != nil {
		return err
	}
	for _, f := range []struct{ name, value string }{
		{"logo_uri", md.LogoURI}, {"tos_uri", md.TOSURI}, {"policy_uri", md.PolicyURI},
	} {
		if f.value == "" {
			continue
		}
		u, err := webURI(f.name, f.value)
		if err != nil {
			return err
		}
		if !sameOrSubdomain(u.Hostname(), base.Hostname()) {
			return invalidMetadata("%s must be on the host of client_uri or a subdomain of it", f.name)
		}
	}
	switch md.ApplicationType {
	case "":
		md.ApplicationType = "web"
	case "web", "native":
	default:
		return invalidMetadata("application_type must be web or native")
	}
	switch md.TokenEndpointAuthMethod {
	case "":
		md.TokenEndpointAuthMethod = "none"
	case "none":
	default:
		// Matrix clients are public clients: they hold no secret.
		return invalidMetadata("only the token_endpoint_auth_method none is supported")
	}
	if len(md.GrantTypes) == 0 {
		md.GrantTypes = []string{GrantAuthorizationCode}
	}
	if len(md.ResponseTypes) == 0 {
		md.ResponseTypes = []string{"code"}
	}
	if md.allowsGrant(GrantAuthorizationCode) && len(md.RedirectURIs) == 0 {
		return invalidRedirectURI("redirect_uris are required for the authorization_code grant")
	}
	for _, ru := range md.RedirectURIs {
		if err := validateRedirectURI(ru, md.ApplicationType, base.Hostname()); err != nil {
			return err
		}
	}
	return nil
}

// webURI parses a metadata URI that must be https without credentials.
func webURI(field, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" {
		return nil, invalidMetadata("%s must be an absolute URI", field)
	}
	if u.Scheme != "https" {
		return nil, invalidMetadata("%s must use https", field)
	}
	if u.User != nil {
		return nil, invalidMetadata("%s must not contain a user or password", field)
	}
	return u, nil
}

// sameOrSubdomain reports whether host is domain or below it.
func sameOrSubdomain(host, domain string) bool {
	host, domain = strings.ToLower(host), strings.ToLower(domain)
	return host == domain || strings.HasSuffix(host, "."+domain)
}

// isLoopback reports whether host names the local machine in a native
// client's loopback redirect URI (RFC 8252 section 7.3).
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// validateRedirectURI applies the spec's redirect URI rules: web clients
// use https on the client_uri's host (or a subdomain); native clients use a
// private-use scheme named for that host in reverse-DNS order, or an http
// loopback URI.
// https://spec.matrix.org/v1.19/client-server-api/#redirect-uri-validation
func validateRedirectURI(raw, appType, clientHost string) error {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() {
		return invalidRedirectURI("redirect URI %q is not an absolute URI", raw)
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return invalidRedirectURI("redirect URI %q must not have a fragment", raw)
	}
	if u.User != nil {
		return invalidRedirectURI("redirect URI %q must not contain a user or password", raw)
	}
	switch {
	case u.Scheme == "https":
		if u.Host == "" || !sameOrSubdomain(u.Hostname(), clientHost) {
			return invalidRedirectURI("redirect URI %q must be on the host of client_uri or a subdomain of it", raw)
		}
		return nil
	case appType != "native":
		return invalidRedirectURI("a web client's redirect URI must use https")
	case u.Scheme == "http":
		if !isLoopback(u.Hostname()) {
			return invalidRedirectURI("an http redirect URI must be a loopback address")
		}
		return nil
	default:
		// A private-use scheme: the reverse-DNS form of a domain at or
		// below the client_uri's host, with no authority
		// ("com.example.app:/callback").
		if !strings.Contains(u.Scheme, ".") {
			return invalidRedirectURI("a private-use URI scheme must be a reverse domain name")
		}
		labels := strings.Split(u.Scheme, ".")
		slices.Reverse(labels)
		if !sameOrSubdomain(strings.Join(labels, "."), clientHost) {
			return invalidRedirectURI("private-use URI scheme %q does not match the host of client_uri", u.Scheme)
		}
		if u.Host != "" || u.Opaque != "" {
			return invalidRedirectURI("a private-use redirect URI must have the form scheme:/path")
		}
		return nil
	}
}

// matchRedirectURI reports whether the redirect_uri of an authorisation
// request is one the client registered. Loopback URIs match on any port,
// since a native app gets its port from the system at run time (RFC 8252
// section 7.3).
func (c *ClientMetadata) matchRedirectURI(raw string) bool {
	if slices.Contains(c.RedirectURIs, raw) {
		return true
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || !isLoopback(u.Hostname()) || c.ApplicationType != "native" {
		return false
	}
	for _, reg := range c.RedirectURIs {
		r, err := url.Parse(reg)
		if err != nil || r.Scheme != "http" {
			continue
		}
		if r.Hostname() == u.Hostname() && r.Path == u.Path && r.RawQuery == u.RawQuery {
			return true
		}
	}
	return false
}
