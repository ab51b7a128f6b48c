package syncapi

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Send-to-device messaging over federation: messages for other servers'
// users leave as m.direct_to_device EDUs, and those EDUs from other
// servers are delivered to our users' devices once each.
// https://spec.matrix.org/v1.19/server-server-api/#send-to-device-messaging

// RemoteSender queues an m.direct_to_device EDU for another server. Once
// it returns nil the EDU must eventually be delivered (the federation
// queue keeps it in the database).
type RemoteSender func(ctx context.Context, dest spec.ServerName, m gomatrixserverlib.ToDeviceMessage) error

// SetRemoteSender installs what sends messages to other servers' users;
// call it once, before serving requests.
func (t *ToDevice) SetRemoteSender(f RemoteSender) { t.remote = f }

// receivedLifetime is how long a received message_id is remembered: far
// longer than a sending server retries a transaction it got no answer to.
const receivedLifetime = 7 * 24 * time.Hour

// maxEDUMessagesBytes bounds the messages of one m.direct_to_device EDU:
// Synapse refuses EDUs over 64 KiB, so a request for many devices is
// split in several EDUs (a single larger message goes alone).
const maxEDUMessagesBytes = 60 << 10

// expand turns the messages for recipients, our users, into one message
// per device: the one named for it, or else the "*" one. Unknown devices
// get nothing.
func (t *ToDevice) expand(ctx context.Context, recipients []string, messages map[string]map[string]json.RawMessage) ([]toDeviceMessage, error) {
	sort.Strings(recipients)
	var out []toDeviceMessage
	for _, userID := range recipients {
		byDevice := messages[userID]
		devices, err := t.users.Devices(ctx, userID)
		if err != nil {
			return nil, err
		}
		wildcard, hasWildcard := byDevice["*"]
		for _, d := range devices { // sorted by device ID
			content, ok := byDevice[d.DeviceID]
			if !ok {
				if !hasWildcard {
					continue
				}
				content = wildcard
			}
			out = append(out, toDeviceMessage{userID: userID, deviceID: d.DeviceID, content: compactJSON(content)})
		}
	}
	return out, nil
}

// queueMessages stores messages from sender at the next positions of the
// stream, inside tx, and returns the last position taken (0 for none).
func (t *ToDevice) queueMessages(ctx context.Context, tx *database.Tx, sender, evType string, out []toDeviceMessage) (int64, error) {
	if len(out) == 0 {
		return 0, nil
	}
	var last int64
	if err := tx.QueryRowContext(ctx, `UPDATE syncapi_stream_positions SET pos = pos + $1
		WHERE stream = 'to_device' RETURNING pos`, len(out)).Scan(&last); err != nil {
		return 0, fmt.Errorf("next to-device position: %w", err)
	}
	pos := last - int64(len(out))
	for _, m := range out {
		pos++
		if _, err := tx.ExecContext(ctx, `INSERT INTO to_device_messages
			(stream_pos, user_id, device_id, sender, type, content) VALUES ($1, $2, $3, $4, $5, $6)`,
			pos, m.userID, m.deviceID, sender, evType, string(m.content)); err != nil {
			return 0, fmt.Errorf("queue to-device message: %w", err)
		}
	}
	if t.announce != nil {
		if err := t.announce(ctx, tx, last); err != nil {
			return 0, err
		}
	}
	return last, nil
}

// delivered publishes committed messages up to position last and wakes
// their recipients' syncs.
func (t *ToDevice) delivered(last int64, out []toDeviceMessage) {
	if len(out) == 0 {
		return
	}
	t.pos.Advance(last)
	woken := map[string]bool{}
	var users []string
	for _, m := range out {
		if !woken[m.userID] {
			woken[m.userID] = true
			users = append(users, m.userID)
			t.notifier.Wake(m.userID)
		}
	}
	if t.onDelivered != nil {
		t.onDelivered(users)
	}
}

// sendRemote queues the messages for other servers' users (user -> device
// or "*" -> content), as m.direct_to_device EDUs grouped by server. Their
// devices are the other server's to expand. Failures are logged: the
// request has been accepted, and its local messages delivered.
func (t *ToDevice) sendRemote(ctx context.Context, sender, evType string, messages map[string]map[string]json.RawMessage) {
	if len(messages) == 0 {
		return
	}
	if t.remote == nil {
		return // no federation: dropped, as before
	}
	byServer := map[spec.ServerName][]string{}
	for userID := range messages {
		uid, err := spec.NewUserID(userID, true)
		if err != nil {
			continue // Send checked them
		}
		byServer[uid.Domain()] = append(byServer[uid.Domain()], userID)
	}
	for dest, userIDs := range byServer {
		sort.Strings(userIDs)
		for _, chunk := range chunkMessages(userIDs, messages) {
			m := gomatrixserverlib.ToDeviceMessage{Sender: sender, Type: evType, MessageID: rand.Text(), Messages: chunk}
			if err := t.remote(ctx, dest, m); err != nil {
				t.notifier.log.WithError(err).WithField("destination", dest).Error("queueing to-device messages for another server")
			}
		}
	}
}

// chunkMessages splits the messages for userIDs in groups of at most
// about maxEDUMessagesBytes.
func chunkMessages(userIDs []string, messages map[string]map[string]json.RawMessage) []map[string]map[string]json.RawMessage {
	var chunks []map[string]map[string]json.RawMessage
	cur, size := map[string]map[string]json.RawMessage{}, 0
	for _, userID := range userIDs {
		deviceIDs := make([]string, 0, len(messages[userID]))
		for d := range messages[userID] {
			deviceIDs = append(deviceIDs, d)
		}
		sort.Strings(deviceIDs)
		for _, d := range deviceIDs {
			content := compactJSON(messages[userID][d])
			n := len(content) + len(userID) + len(d) + 8
			if size > 0 && size+n > maxEDUMessagesBytes {
				chunks = append(chunks, cur)
				cur, size = map[string]map[string]json.RawMessage{}, 0
			}
			if cur[userID] == nil {
				cur[userID] = map[string]json.RawMessage{}
			}
			cur[userID][d] = content
			size += n
		}
	}
	if size > 0 {
		chunks = append(chunks, cur)
	}
	return chunks
}

// ReceiveRemote delivers the messages of an m.direct_to_device EDU from
// origin to our users' devices, unless a message with the same sender and
// message_id was delivered already. Messages for other servers' users, or
// that are not JSON objects, are ignored.
func (t *ToDevice) ReceiveRemote(ctx context.Context, origin spec.ServerName, m gomatrixserverlib.ToDeviceMessage) error {
	uid, err := spec.NewUserID(m.Sender, true)
	if err != nil || uid.Domain() != origin {
		return mxerr.Forbidden("The sender of an m.direct_to_device EDU must be a user of its origin")
	}
	if m.Type == "" || m.MessageID == "" {
		return mxerr.BadJSON("An m.direct_to_device EDU needs a type and a message_id")
	}
	local := t.users.ServerName()
	var recipients []string
	messages := map[string]map[string]json.RawMessage{}
	for userID, byDevice := range m.Messages {
		u, err := spec.NewUserID(userID, true)
		if err != nil || u.Domain() != local {
			continue
		}
		valid := map[string]json.RawMessage{}
		for d, content := range byDevice {
			if isJSONObject(content) {
				valid[d] = content
			}
		}
		recipients = append(recipients, userID)
		messages[userID] = valid
	}
	out, err := t.expand(ctx, recipients, messages)
	if err != nil || len(out) == 0 {
		return err
	}
	var last int64
	err = t.db.WithTx(ctx, func(tx *database.Tx) error {
		now := time.Now().UnixMilli()
		if _, err := tx.ExecContext(ctx, `DELETE FROM to_device_received WHERE received_ts < $1`,
			now-receivedLifetime.Milliseconds()); err != nil {
			return fmt.Errorf("prune received to-device messages: %w", err)
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO to_device_received (sender, message_id, received_ts)
			VALUES ($1, $2, $3) ON CONFLICT (sender, message_id) DO NOTHING`, m.Sender, m.MessageID, now)
		if err != nil {
			return fmt.Errorf("record received to-device message: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			out = nil // delivered already
			return nil
		}
		last, err = t.queueMessages(ctx, tx, m.Sender, m.Type, out)
		return err
	})
	if err != nil {
		return err
	}
	t.delivered(last, out)
	return nil
}
