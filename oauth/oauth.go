// Package oauth is Tessera's OAuth 2.0 authorisation server, the Matrix
// "OAuth 2.0 API" (spec v1.15+; MSC2964, MSC2965, MSC2966, MSC2967,
// MSC4191, MSC4254, MSC4341): dynamic client registration, the
// authorisation code grant with PKCE, the refresh token grant, token
// revocation and the device authorisation grant. The tokens it hands out are
// the users domain's ordinary access and refresh tokens (hashed at rest), so
// every endpoint accepts them and logging a device out revokes them.
// https://spec.matrix.org/v1.19/client-server-api/#oauth-20-api
package oauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"time"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/users"
)

// Users is what the OAuth server needs from the users domain.
type Users interface {
	CreateSession(ctx context.Context, ns users.NewSession) (*users.Session, error)
	Refresh(ctx context.Context, refreshToken string) (*users.Session, error)
	TokenDevice(ctx context.Context, token string) (userID, deviceID string, err error)
	RevokeDeviceTokens(ctx context.Context, userID, deviceID string) error
	DeleteDevices(ctx context.Context, userID string, deviceIDs []string) error
}

// Config is what the OAuth server needs from the configuration.
type Config struct {
	// CodeLifetime bounds an authorisation code (RFC 6749 recommends at
	// most 10 minutes).
	CodeLifetime time.Duration
	// DeviceCodeLifetime bounds a device authorisation grant (RFC 8628).
	DeviceCodeLifetime time.Duration
	// DeviceCodeInterval is the polling interval a device is told; one
	// that polls faster is told to slow_down.
	DeviceCodeInterval time.Duration
	// SessionLifetime bounds a browser session of the server's pages.
	SessionLifetime time.Duration
}

// Service is the OAuth 2.0 authorisation server.
type Service struct {
	db    *database.DB
	cfg   Config
	users Users
	now   func() time.Time
}

// New runs the domain's migrations and returns the service.
func New(ctx context.Context, db *database.DB, us Users, cfg Config) (*Service, error) {
	if err := db.Migrate(ctx, "oauth", migrations); err != nil {
		return nil, err
	}
	return &Service{db: db, cfg: cfg, users: us, now: time.Now}, nil
}

func (s *Service) nowMS() int64 { return s.now().UnixMilli() }

// Error is an OAuth 2.0 error (RFC 6749 section 5.2): the token,
// registration, device and revocation endpoints answer it as
// {"error", "error_description"} with its status, and the authorisation
// endpoint as the error parameters of the redirect.
type Error struct {
	Status      int
	Code        string
	Description string
}

func (e *Error) Error() string { return fmt.Sprintf("oauth %s: %s", e.Code, e.Description) }

func oauthErr(status int, code, format string, a ...any) *Error {
	return &Error{Status: status, Code: code, Description: fmt.Sprintf(format, a...)}
}

func invalidRequest(format string, a ...any) *Error {
	return oauthErr(400, "invalid_request", format, a...)
}
func invalidGrant(format string, a ...any) *Error {
	return oauthErr(400, "invalid_grant", format, a...)
}
func invalidClient(format string, a ...any) *Error {
	return oauthErr(401, "invalid_client", format, a...)
}

// randomSecret returns 256 random bits, base64url: codes, device codes,
// session cookies.
func randomSecret() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// hashSecret is how codes, device codes, refresh tokens and session cookies
// are stored: a leaked database row does not give the secret.
func hashSecret(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}
