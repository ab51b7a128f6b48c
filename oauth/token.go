package oauth

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/users"
)

// TokenResponse is the token endpoint's answer (RFC 6749 section 5.1).
type TokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope"`
}

func tokenResponse(sess *users.Session, scope string) *TokenResponse {
	return &TokenResponse{AccessToken: sess.AccessToken, TokenType: "Bearer", ExpiresIn: int64(sess.ExpiresIn.Seconds()),
		RefreshToken: sess.RefreshToken, Scope: scope}
}

// Token serves the token endpoint: the authorisation code, refresh token
// and device code grants, for public clients identified by client_id.
// https://spec.matrix.org/v1.19/client-server-api/#token-request
func (s *Service) Token(ctx context.Context, form url.Values, ci users.ClientInfo) (*TokenResponse, error) {
	client, err := s.authClient(ctx, form.Get("client_id"))
	if err != nil {
		return nil, err
	}
	grant := form.Get("grant_type")
	switch grant {
	case GrantAuthorizationCode, GrantRefreshToken, GrantDeviceCode:
	case "":
		return nil, invalidRequest("grant_type is required")
	default:
		return nil, oauthErr(400, "unsupported_grant_type", "grant_type %q is not supported", grant)
	}
	if !client.allowsGrant(grant) {
		return nil, oauthErr(400, "unauthorized_client", "the client did not register the %s grant", grant)
	}
	switch grant {
	case GrantAuthorizationCode:
		return s.exchangeCode(ctx, client, form, ci)
	case GrantRefreshToken:
		return s.refresh(ctx, client, form.Get("refresh_token"))
	default:
		return s.pollDevice(ctx, client, form.Get("device_code"), ci)
	}
}

// exchangeCode redeems an authorisation code once. A second redemption is a
// replay: the tokens issued for the code are revoked (RFC 6749 section
// 4.1.2).
func (s *Service) exchangeCode(ctx context.Context, client *ClientMetadata, form url.Values, ci users.ClientInfo) (*TokenResponse, error) {
	code, verifier := form.Get("code"), form.Get("code_verifier")
	if code == "" {
		return nil, invalidRequest("code is required")
	}
	if verifier == "" {
		return nil, invalidRequest("code_verifier is required (PKCE)")
	}
	var (
		clientID, redirect, userID, deviceID, scope, challenge string
		expires                                                int64
		used                                                   sql.NullInt64
	)
	hash := hashSecret(code)
	err := s.db.QueryRowContext(ctx, `SELECT client_id, redirect_uri, user_id, device_id, scope, code_challenge, expires_ts, used_ts
		FROM oauth_codes WHERE code_hash = $1`, hash).
		Scan(&clientID, &redirect, &userID, &deviceID, &scope, &challenge, &expires, &used)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, invalidGrant("unknown authorization code")
	}
	if err != nil {
		return nil, fmt.Errorf("load oauth code: %w", err)
	}
	if used.Valid {
		if err := s.users.RevokeDeviceTokens(ctx, userID, deviceID); err != nil {
			return nil, err
		}
		return nil, invalidGrant("the authorization code was already used; the tokens issued for it are revoked")
	}
	switch {
	case s.nowMS() >= expires:
		return nil, invalidGrant("the authorization code has expired")
	case clientID != client.ClientID:
		return nil, invalidGrant("the authorization code was issued to another client")
	case form.Get("redirect_uri") != redirect:
		return nil, invalidGrant("redirect_uri does not match the authorization request")
	case !verifyS256(verifier, challenge):
		return nil, invalidGrant("code_verifier does not match the code_challenge")
	}
	res, err := s.db.ExecContext(ctx, `UPDATE oauth_codes SET used_ts = $1 WHERE code_hash = $2 AND used_ts IS NULL`, s.nowMS(), hash)
	if err != nil {
		return nil, fmt.Errorf("use oauth code: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil, invalidGrant("the authorization code was already used")
	}
	return s.startSession(ctx, client, userID, deviceID, scope, ci)
}

// startSession signs the device in (creating it, or reusing it with its
// old tokens revoked) and remembers the grant.
func (s *Service) startSession(ctx context.Context, client *ClientMetadata, userID, deviceID, scope string, ci users.ClientInfo) (*TokenResponse, error) {
	name := client.Name()
	sess, err := s.users.CreateSession(ctx, users.NewSession{
		UserID: userID, DeviceID: deviceID, DisplayName: &name, WantRefresh: true, Client: ci,
	})
	if err != nil {
		return nil, err
	}
	err = s.db.WithTx(ctx, func(tx *database.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM oauth_used_refresh_tokens WHERE user_id = $1 AND device_id = $2`, userID, deviceID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO oauth_grants (user_id, device_id, client_id, scope, created_ts)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, device_id) DO UPDATE SET client_id = $3, scope = $4, created_ts = $5`,
			userID, deviceID, client.ClientID, scope, s.nowMS())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store oauth grant: %w", err)
	}
	return tokenResponse(sess, scope), nil
}

// grantOf returns the client and scope a device was signed in with through
// OAuth; ok is false for a device that was not.
func (s *Service) grantOf(ctx context.Context, userID, deviceID string) (clientID, scope string, ok bool, err error) {
	err = s.db.QueryRowContext(ctx, `SELECT client_id, scope FROM oauth_grants WHERE user_id = $1 AND device_id = $2`,
		userID, deviceID).Scan(&clientID, &scope)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", false, nil
	}
	if err != nil {
		return "", "", false, fmt.Errorf("load oauth grant: %w", err)
	}
	return clientID, scope, true, nil
}

// usedRefreshTokensKept is how many exchanged refresh tokens of a device
// are remembered for reuse detection.
const usedRefreshTokensKept = 16

// SignedInThroughOAuth reports whether a device got its tokens from the
// OAuth 2.0 API (and so whether its client can know the password).
func (s *Service) SignedInThroughOAuth(ctx context.Context, userID, deviceID string) (bool, error) {
	_, _, ok, err := s.grantOf(ctx, userID, deviceID)
	return ok, err
}

// refresh rotates a refresh token (the users domain's refresh: the old
// token stays good until the new pair is first used, so a client that lost
// the answer can retry). A token presented after its successor was used is
// a stolen copy: the device's whole token family is revoked.
// https://spec.matrix.org/v1.19/client-server-api/#refresh-token-grant
func (s *Service) refresh(ctx context.Context, client *ClientMetadata, token string) (*TokenResponse, error) {
	if token == "" {
		return nil, invalidRequest("refresh_token is required")
	}
	hash := hashSecret(token)
	userID, deviceID, err := s.users.TokenDevice(ctx, token)
	if me, ok := mxerr.As(err); ok && me.Code == "M_UNKNOWN_TOKEN" {
		var reusedUser, reusedDevice string
		err := s.db.QueryRowContext(ctx, `SELECT user_id, device_id FROM oauth_used_refresh_tokens WHERE token_hash = $1`, hash).
			Scan(&reusedUser, &reusedDevice)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, invalidGrant("unknown refresh token")
		}
		if err != nil {
			return nil, fmt.Errorf("check refresh token reuse: %w", err)
		}
		if err := s.users.RevokeDeviceTokens(ctx, reusedUser, reusedDevice); err != nil {
			return nil, err
		}
		return nil, invalidGrant("the refresh token was already used; the session's tokens are revoked")
	}
	if err != nil {
		return nil, err
	}
	clientID, scope, ok, err := s.grantOf(ctx, userID, deviceID)
	if err != nil {
		return nil, err
	}
	if !ok || clientID != client.ClientID {
		return nil, invalidGrant("the refresh token was not issued to this client")
	}
	sess, err := s.users.Refresh(ctx, token)
	if me, ok := mxerr.As(err); ok && me.Code == "M_UNKNOWN_TOKEN" {
		return nil, invalidGrant("the refresh token is not valid")
	}
	if err != nil {
		return nil, err
	}
	err = s.db.WithTx(ctx, func(tx *database.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO oauth_used_refresh_tokens (token_hash, user_id, device_id, used_ts)
			VALUES ($1, $2, $3, $4) ON CONFLICT (token_hash) DO NOTHING`, hash, userID, deviceID, s.nowMS()); err != nil {
			return err
		}
		// A device refreshing every few minutes for months must not grow
		// the table without end: a stolen token is replayed soon, so the
		// last few used ones are the ones worth recognising.
		_, err := tx.ExecContext(ctx, `DELETE FROM oauth_used_refresh_tokens WHERE user_id = $1 AND device_id = $2
			AND token_hash NOT IN (SELECT token_hash FROM oauth_used_refresh_tokens WHERE user_id = $1 AND device_id = $2
				ORDER BY used_ts DESC LIMIT $3)`, userID, deviceID, usedRefreshTokensKept)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("record used refresh token: %w", err)
	}
	return tokenResponse(sess, scope), nil
}

// Revoke serves RFC 7009 revocation: revoking the access or the refresh
// token ends the session, so the device is signed out and all its tokens
// go. An unknown token is not an error (RFC 7009 section 2.2).
// https://spec.matrix.org/v1.19/client-server-api/#token-revocation
func (s *Service) Revoke(ctx context.Context, clientID, token string) error {
	client, err := s.authClient(ctx, clientID)
	if err != nil {
		return err
	}
	if token == "" {
		return invalidRequest("token is required")
	}
	userID, deviceID, err := s.users.TokenDevice(ctx, token)
	if me, ok := mxerr.As(err); ok && me.Code == "M_UNKNOWN_TOKEN" {
		return nil
	}
	if err != nil {
		return err
	}
	grantClient, _, ok, err := s.grantOf(ctx, userID, deviceID)
	if err != nil {
		return err
	}
	if !ok || grantClient != client.ClientID {
		return oauthErr(400, "invalid_request", "the token was not issued to this client")
	}
	return s.EndDevice(ctx, userID, deviceID)
}

// EndDevice signs a device out: the device and its tokens are deleted.
func (s *Service) EndDevice(ctx context.Context, userID, deviceID string) error {
	if err := s.users.DeleteDevices(ctx, userID, []string{deviceID}); err != nil {
		return err
	}
	if _, err := s.db.ExecContext(ctx, `DELETE FROM oauth_grants WHERE user_id = $1 AND device_id = $2`, userID, deviceID); err != nil {
		return fmt.Errorf("delete oauth grant: %w", err)
	}
	return nil
}

// DevicesDeleted forgets the grants of deleted devices, so that a device ID
// used again later (by /login, say) is not taken for the old client's.
func (s *Service) DevicesDeleted(ctx context.Context, userID string, deviceIDs []string) error {
	err := s.db.WithTx(ctx, func(tx *database.Tx) error {
		for _, id := range deviceIDs {
			if _, err := tx.ExecContext(ctx, `DELETE FROM oauth_grants WHERE user_id = $1 AND device_id = $2`, userID, id); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM oauth_used_refresh_tokens WHERE user_id = $1 AND device_id = $2`, userID, id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("forget oauth grants of deleted devices: %w", err)
	}
	return nil
}

// ClientNames maps the user's devices signed in through OAuth to the names
// of their clients, for the account page.
func (s *Service) ClientNames(ctx context.Context, userID string) (map[string]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT g.device_id, c.metadata_json FROM oauth_grants g
		JOIN oauth_clients c ON c.client_id = g.client_id WHERE g.user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("list oauth grants: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var device, raw string
		if err := rows.Scan(&device, &raw); err != nil {
			return nil, err
		}
		var md ClientMetadata
		if json.Unmarshal([]byte(raw), &md) == nil {
			out[device] = md.Name()
		}
	}
	return out, rows.Err()
}
