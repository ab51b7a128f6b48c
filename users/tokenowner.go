package users

import (
	"context"
	"fmt"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// TokenDevice returns the user and device an access or refresh token
// belongs to, without using it (no last-seen update, no rotation): the
// OAuth server's revocation and refresh endpoints look tokens up this way.
// An unknown token is 401 M_UNKNOWN_TOKEN.
func (s *Service) TokenDevice(ctx context.Context, token string) (userID, deviceID string, err error) {
	hash := hashToken(token)
	err = s.db.QueryRowContext(ctx, `SELECT user_id, device_id FROM access_tokens WHERE token_hash = $1
		UNION ALL SELECT user_id, device_id FROM refresh_tokens WHERE token_hash = $1`, hash).Scan(&userID, &deviceID)
	if isNoRowsErr(err) {
		return "", "", mxerr.UnknownToken(false)
	}
	if err != nil {
		return "", "", fmt.Errorf("look up token: %w", err)
	}
	return userID, deviceID, nil
}

// RevokeDeviceTokens revokes every access and refresh token of a device but
// keeps the device (its keys, its to-device queue): the OAuth server does
// this when a refresh token or authorisation code is replayed, so whoever
// holds the copies, the thief or the client, must sign in again.
func (s *Service) RevokeDeviceTokens(ctx context.Context, userID, deviceID string) error {
	err := s.db.WithTx(ctx, func(tx *database.Tx) error {
		s.tokensRevoked(tx, userID)
		if _, err := tx.ExecContext(ctx, `DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2`, userID, deviceID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id = $2`, userID, deviceID)
		return err
	})
	if err != nil {
		return fmt.Errorf("revoke device tokens: %w", err)
	}
	return nil
}
