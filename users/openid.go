package users

import (
	"context"
	"fmt"
	"time"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// OpenIDTokenLifetime is how long an OpenID token is good for (Synapse's
// default).
const OpenIDTokenLifetime = time.Hour

// OpenIDToken is the answer to /openid/request_token.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3useruseridopenidrequest_token
type OpenIDToken struct {
	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"`
	MatrixServerName string `json:"matrix_server_name"`
	ExpiresIn        int64  `json:"expires_in"`
}

// RequestOpenIDToken issues an OpenID token for a user; expired tokens are
// cleared on the way.
func (s *Service) RequestOpenIDToken(ctx context.Context, userID string) (*OpenIDToken, error) {
	token := randomToken("oid_")
	now := s.now()
	if _, err := s.db.ExecContext(ctx, `DELETE FROM openid_tokens WHERE expires_ts <= $1`, now.UnixMilli()); err != nil {
		return nil, fmt.Errorf("expire OpenID tokens: %w", err)
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)`,
		hashToken(token), userID, now.Add(OpenIDTokenLifetime).UnixMilli()); err != nil {
		return nil, fmt.Errorf("store OpenID token: %w", err)
	}
	return &OpenIDToken{AccessToken: token, TokenType: "Bearer", MatrixServerName: string(s.cfg.ServerName),
		ExpiresIn: int64(OpenIDTokenLifetime / time.Second)}, nil
}

// OpenIDUserInfo is the user an OpenID token was issued to: 401
// M_UNKNOWN_TOKEN for a token that is unknown or expired.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1openiduserinfo
func (s *Service) OpenIDUserInfo(ctx context.Context, token string) (string, error) {
	var userID string
	var expires int64
	err := s.db.QueryRowContext(ctx, `SELECT user_id, expires_ts FROM openid_tokens WHERE token_hash = $1`, hashToken(token)).
		Scan(&userID, &expires)
	if isNoRowsErr(err) || err == nil && expires <= s.nowMS() {
		return "", &mxerr.Error{Status: 401, Code: "M_UNKNOWN_TOKEN", Message: "Unknown or expired OpenID token"}
	}
	if err != nil {
		return "", fmt.Errorf("OpenID token: %w", err)
	}
	return userID, nil
}
