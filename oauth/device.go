package oauth

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/users"
)

// DeviceAuthorization is the device authorisation endpoint's answer
// (RFC 8628 section 3.2), less the URIs, which the edge knows.
type DeviceAuthorization struct {
	DeviceCode string `json:"device_code"`
	UserCode   string `json:"user_code"`
	ExpiresIn  int64  `json:"expires_in"`
	Interval   int64  `json:"interval"`
}

// userCodeAlphabet has no vowels (no words) and no look-alikes, as RFC 8628
// section 6.1 suggests; 20^8 codes.
const userCodeAlphabet = "BCDFGHJKLMNPQRSTVWXZ"

// Status of a device grant.
const (
	devicePending  = "pending"
	deviceApproved = "approved"
	deviceDenied   = "denied"
	deviceDone     = "done"
)

// StartDeviceAuthorization begins the device authorisation grant for a
// client on a device without a browser.
// https://spec.matrix.org/v1.19/client-server-api/#device-authorisation-grant
func (s *Service) StartDeviceAuthorization(ctx context.Context, clientID, scope string) (*DeviceAuthorization, error) {
	client, err := s.authClient(ctx, clientID)
	if err != nil {
		return nil, err
	}
	if !client.allowsGrant(GrantDeviceCode) {
		return nil, oauthErr(400, "unauthorized_client", "the client did not register the device code grant")
	}
	g, err := parseScope(scope, randomDeviceID)
	if err != nil {
		return nil, err
	}
	da := &DeviceAuthorization{DeviceCode: randomSecret(), UserCode: randomUserCode(),
		ExpiresIn: int64(s.cfg.DeviceCodeLifetime.Seconds()), Interval: int64(s.cfg.DeviceCodeInterval.Seconds())}
	now := s.nowMS()
	err = s.db.WithTx(ctx, func(tx *database.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM oauth_device_grants WHERE expires_ts < $1`, now); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO oauth_device_grants (device_code_hash, user_code, client_id, scope, status,
			device_id, created_ts, expires_ts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			hashSecret(da.DeviceCode), normalizeUserCode(da.UserCode), clientID, g.String, devicePending, g.DeviceID,
			now, now+s.cfg.DeviceCodeLifetime.Milliseconds())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store device grant: %w", err)
	}
	return da, nil
}

func randomUserCode() string {
	b := make([]byte, 8)
	max := big.NewInt(int64(len(userCodeAlphabet)))
	for i := range b {
		v, err := rand.Int(rand.Reader, max)
		if err != nil {
			panic(fmt.Sprintf("crypto/rand failed: %v", err))
		}
		b[i] = userCodeAlphabet[v.Int64()]
	}
	return string(b[:4]) + "-" + string(b[4:])
}

// normalizeUserCode forgives what people type: case, dashes, spaces.
func normalizeUserCode(code string) string {
	return strings.ToUpper(strings.NewReplacer("-", "", " ", "").Replace(code))
}

// PendingDevice is a device grant waiting for the user, for the page.
type PendingDevice struct {
	UserCode string
	Client   *ClientMetadata
	Scope    string
	DeviceID string
}

// PendingDeviceGrant finds the pending grant a user typed the code of; nil
// if there is none (unknown, expired or already decided).
func (s *Service) PendingDeviceGrant(ctx context.Context, userCode string) (*PendingDevice, error) {
	var clientID, scope, deviceID string
	code := normalizeUserCode(userCode)
	err := s.db.QueryRowContext(ctx, `SELECT client_id, scope, device_id FROM oauth_device_grants
		WHERE user_code = $1 AND status = $2 AND expires_ts > $3`, code, devicePending, s.nowMS()).Scan(&clientID, &scope, &deviceID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load device grant: %w", err)
	}
	client, err := s.Client(ctx, clientID)
	if err != nil || client == nil {
		return nil, err
	}
	return &PendingDevice{UserCode: code, Client: client, Scope: scope, DeviceID: deviceID}, nil
}

// DecideDeviceGrant records the user's answer; false if the grant was no
// longer pending.
func (s *Service) DecideDeviceGrant(ctx context.Context, userCode, userID string, approve bool) (bool, error) {
	status := deviceDenied
	if approve {
		status = deviceApproved
	}
	res, err := s.db.ExecContext(ctx, `UPDATE oauth_device_grants SET status = $1, user_id = $2
		WHERE user_code = $3 AND status = $4 AND expires_ts > $5`, status, userID, normalizeUserCode(userCode), devicePending, s.nowMS())
	if err != nil {
		return false, fmt.Errorf("decide device grant: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// pollDevice is the token request of a device waiting for its user
// (RFC 8628 section 3.5).
func (s *Service) pollDevice(ctx context.Context, client *ClientMetadata, deviceCode string, ci users.ClientInfo) (*TokenResponse, error) {
	if deviceCode == "" {
		return nil, invalidRequest("device_code is required")
	}
	hash := hashSecret(deviceCode)
	var (
		clientID, scope, status, deviceID string
		userID                            sql.NullString
		expires, lastPoll                 int64
	)
	err := s.db.QueryRowContext(ctx, `SELECT client_id, scope, status, user_id, device_id, expires_ts, last_poll_ts
		FROM oauth_device_grants WHERE device_code_hash = $1`, hash).
		Scan(&clientID, &scope, &status, &userID, &deviceID, &expires, &lastPoll)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, invalidGrant("unknown device_code")
	}
	if err != nil {
		return nil, fmt.Errorf("load device grant: %w", err)
	}
	now := s.nowMS()
	switch {
	case clientID != client.ClientID:
		return nil, invalidGrant("the device_code was issued to another client")
	case now >= expires:
		return nil, oauthErr(400, "expired_token", "the device_code has expired")
	case status == deviceDenied:
		return nil, oauthErr(400, "access_denied", "the user refused access")
	case status == deviceDone:
		return nil, invalidGrant("the device_code was already used")
	}
	if _, err := s.db.ExecContext(ctx, `UPDATE oauth_device_grants SET last_poll_ts = $1 WHERE device_code_hash = $2`, now, hash); err != nil {
		return nil, fmt.Errorf("record device poll: %w", err)
	}
	if status == devicePending {
		if now-lastPoll < s.cfg.DeviceCodeInterval.Milliseconds() {
			return nil, oauthErr(400, "slow_down", "polling faster than the interval")
		}
		return nil, oauthErr(400, "authorization_pending", "the user has not answered yet")
	}
	res, err := s.db.ExecContext(ctx, `UPDATE oauth_device_grants SET status = $1 WHERE device_code_hash = $2 AND status = $3`,
		deviceDone, hash, deviceApproved)
	if err != nil {
		return nil, fmt.Errorf("use device grant: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil, invalidGrant("the device_code was already used")
	}
	return s.startSession(ctx, client, userID.String, deviceID, scope, ci)
}
