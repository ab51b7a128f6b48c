package users

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Dehydrated devices (MSC3814): a user may keep one device on the server
// that has no access token, so that the keys of messages sent while they
// have no device logged in still reach them. Its state (device_data) is
// encrypted by the client; a new login fetches it, rehydrates it, drains
// its to-device messages and then replaces it.
// https://github.com/matrix-org/matrix-spec-proposals/pull/3814

// PutDehydratedDevice makes deviceID the user's dehydrated device,
// replacing (and deleting) any previous one, and returns the ID of the one
// replaced ("" if none). The device ID must not belong to one of the
// user's other devices.
func (s *Service) PutDehydratedDevice(ctx context.Context, userID, deviceID, displayName string, data json.RawMessage) (replaced string, err error) {
	if deviceID == "" || len(deviceID) > maxDeviceIDBytes {
		return "", mxerr.InvalidParam("device_id must be 1 to %d characters", maxDeviceIDBytes)
	}
	err = s.db.WithTx(ctx, func(tx *database.Tx) error {
		var old string
		err := tx.QueryRowContext(ctx, `SELECT device_id FROM dehydrated_devices WHERE user_id = $1`, userID).Scan(&old)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if old != deviceID {
			var exists int
			err := tx.QueryRowContext(ctx, `SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2`, userID, deviceID).Scan(&exists)
			if err == nil {
				return mxerr.InvalidParam("Device %s already exists", deviceID)
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		if old != "" && old != deviceID {
			s.tokensRevoked(tx, userID)
			if _, err := tx.ExecContext(ctx, `DELETE FROM devices WHERE user_id = $1 AND device_id = $2`, userID, old); err != nil {
				return err
			}
			replaced = old
		}
		var name any
		if displayName != "" {
			name = displayName
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO devices (user_id, device_id, display_name, created_ts)
			VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, device_id) DO UPDATE SET display_name = excluded.display_name`,
			userID, deviceID, name, s.nowMS()); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO dehydrated_devices (user_id, device_id, device_data) VALUES ($1, $2, $3)
			ON CONFLICT (user_id) DO UPDATE SET device_id = excluded.device_id, device_data = excluded.device_data`,
			userID, deviceID, string(data))
		return err
	})
	if err != nil {
		if _, ok := mxerr.As(err); ok {
			return "", err
		}
		return "", fmt.Errorf("store dehydrated device: %w", err)
	}
	if replaced != "" {
		s.devicesDeleted(ctx, userID, []string{replaced})
	}
	return replaced, nil
}

// DehydratedDevice returns the user's dehydrated device, or 404 M_NOT_FOUND.
func (s *Service) DehydratedDevice(ctx context.Context, userID string) (deviceID string, data json.RawMessage, err error) {
	var raw string
	err = s.db.QueryRowContext(ctx, `SELECT device_id, device_data FROM dehydrated_devices WHERE user_id = $1`, userID).Scan(&deviceID, &raw)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil, mxerr.NotFound("No dehydrated device available")
	}
	if err != nil {
		return "", nil, fmt.Errorf("dehydrated device: %w", err)
	}
	return deviceID, json.RawMessage(raw), nil
}

// DeleteDehydratedDevice deletes the user's dehydrated device and returns
// its ID, or 404 M_NOT_FOUND when there is none.
func (s *Service) DeleteDehydratedDevice(ctx context.Context, userID string) (string, error) {
	deviceID, _, err := s.DehydratedDevice(ctx, userID)
	if err != nil {
		return "", err
	}
	err = s.db.WithTx(ctx, func(tx *database.Tx) error {
		s.tokensRevoked(tx, userID)
		if _, err := tx.ExecContext(ctx, `DELETE FROM dehydrated_devices WHERE user_id = $1 AND device_id = $2`, userID, deviceID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM devices WHERE user_id = $1 AND device_id = $2`, userID, deviceID)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("delete dehydrated device: %w", err)
	}
	s.devicesDeleted(ctx, userID, []string{deviceID})
	return deviceID, nil
}
