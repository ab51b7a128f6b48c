package users

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Device is one logged-in device of a user.
type Device struct {
	DeviceID    string
	DisplayName *string
	LastSeenTS  *int64
	LastSeenIP  *string
}

// Devices lists a user's devices.
func (s *Service) Devices(ctx context.Context, userID string) ([]Device, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT device_id, display_name, last_seen_ts, last_seen_ip
		FROM devices WHERE user_id = $1 ORDER BY device_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	defer rows.Close()
	devices := []Device{}
	for rows.Next() {
		var d Device
		if err := rows.Scan(&d.DeviceID, &d.DisplayName, &d.LastSeenTS, &d.LastSeenIP); err != nil {
			return nil, fmt.Errorf("list devices: %w", err)
		}
		devices = append(devices, d)
	}
	return devices, rows.Err()
}

// Device returns one device, or M_NOT_FOUND.
func (s *Service) Device(ctx context.Context, userID, deviceID string) (*Device, error) {
	var d Device
	err := s.db.QueryRowContext(ctx, `SELECT device_id, display_name, last_seen_ts, last_seen_ip
		FROM devices WHERE user_id = $1 AND device_id = $2`, userID, deviceID).
		Scan(&d.DeviceID, &d.DisplayName, &d.LastSeenTS, &d.LastSeenIP)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, mxerr.NotFound("Unknown device")
	}
	if err != nil {
		return nil, fmt.Errorf("get device: %w", err)
	}
	return &d, nil
}

// SetDeviceDisplayName renames a device; M_NOT_FOUND if it does not exist.
func (s *Service) SetDeviceDisplayName(ctx context.Context, userID, deviceID, name string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE devices SET display_name = $1 WHERE user_id = $2 AND device_id = $3`,
		name, userID, deviceID)
	if err != nil {
		return fmt.Errorf("rename device: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return mxerr.NotFound("Unknown device")
	}
	return nil
}

// DeleteDevices logs devices out: each device and its tokens are deleted.
// Unknown device IDs are ignored, as /delete_devices allows.
func (s *Service) DeleteDevices(ctx context.Context, userID string, deviceIDs []string) error {
	var deleted []string
	err := s.db.WithTx(ctx, func(tx *database.Tx) error {
		deleted = deleted[:0]
		s.tokensRevoked(tx, userID)
		for _, id := range deviceIDs {
			res, err := tx.ExecContext(ctx, `DELETE FROM devices WHERE user_id = $1 AND device_id = $2`, userID, id)
			if err != nil {
				return fmt.Errorf("delete device: %w", err)
			}
			if n, _ := res.RowsAffected(); n > 0 {
				deleted = append(deleted, id)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.devicesDeleted(ctx, userID, deleted)
	return nil
}

// DeleteAllDevices logs a user out everywhere.
func (s *Service) DeleteAllDevices(ctx context.Context, userID string) error {
	var deleted []string
	err := s.db.WithTx(ctx, func(tx *database.Tx) error {
		var err error
		deleted, err = s.deleteDevicesExcept(ctx, tx, userID, "")
		return err
	})
	if err != nil {
		return fmt.Errorf("delete devices: %w", err)
	}
	s.devicesDeleted(ctx, userID, deleted)
	return nil
}

// deleteDevicesExcept deletes every device of the user but keep ("" keeps
// none) inside tx, and returns the IDs deleted.
func (s *Service) deleteDevicesExcept(ctx context.Context, tx *database.Tx, userID, keep string) ([]string, error) {
	s.tokensRevoked(tx, userID)
	rows, err := tx.QueryContext(ctx, `SELECT device_id FROM devices WHERE user_id = $1 AND device_id != $2`, userID, keep)
	if err != nil {
		return nil, err
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		ids = append(ids, id)
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM devices WHERE user_id = $1 AND device_id != $2`, userID, keep); err != nil {
		return nil, err
	}
	return ids, nil
}
