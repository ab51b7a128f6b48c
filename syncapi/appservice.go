package syncapi

import (
	"context"
	"encoding/json"
	"fmt"
)

// What the application service senders (package appservice) read and are
// told of: typing changes, and the to-device messages of the services'
// users, read by stream position so that a service's cursor survives a
// restart.

// SetChangeHook installs f, told of each change of a room's typing users
// with the users typing now. Set it before the server serves.
func (t *Typing) SetChangeHook(f func(roomID string, userIDs []string)) { t.onChange = f }

// SetDeliveredHook installs f, told of the local recipients of committed
// to-device messages. Set it before the server serves.
func (t *ToDevice) SetDeliveredHook(f func(userIDs []string)) { t.onDelivered = f }

// ToDeviceMessage is one queued message for one device, with its stream
// position.
type ToDeviceMessage struct {
	Pos              int64
	UserID, DeviceID string
	Sender, Type     string
	Content          json.RawMessage
}

// Pos is the to-device stream's latest committed position.
func (t *ToDevice) Pos() int64 { return t.pos.Load() }

// MessagesAfter returns the queued messages of every device with stream
// positions in (from, Pos], oldest first, at most limit.
func (t *ToDevice) MessagesAfter(ctx context.Context, from int64, limit int) ([]ToDeviceMessage, error) {
	to := t.pos.Load()
	if from >= to {
		return nil, nil
	}
	rows, err := t.db.QueryContext(ctx, `SELECT stream_pos, user_id, device_id, sender, type, content FROM to_device_messages
		WHERE stream_pos > $1 AND stream_pos <= $2 ORDER BY stream_pos LIMIT $3`, from, to, limit)
	if err != nil {
		return nil, fmt.Errorf("to-device messages after %d: %w", from, err)
	}
	defer rows.Close()
	var out []ToDeviceMessage
	for rows.Next() {
		var m ToDeviceMessage
		var content string
		if err := rows.Scan(&m.Pos, &m.UserID, &m.DeviceID, &m.Sender, &m.Type, &content); err != nil {
			return nil, fmt.Errorf("to-device messages after %d: %w", from, err)
		}
		m.Content = json.RawMessage(content)
		out = append(out, m)
	}
	return out, rows.Err()
}

// AckDevice deletes a device's messages up to pos: those a service has
// been sent, which its device will never sync.
func (t *ToDevice) AckDevice(ctx context.Context, userID, deviceID string, pos int64) error {
	return t.ack(ctx, userID, deviceID, pos)
}
