package syncapi

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/internal/streampos"
	"github.com/tessera-hs/tessera/users"
)

// ToDevice is send-to-device messaging: the queue of messages waiting for
// each device, and the to-device stream of /sync that delivers them.
// https://spec.matrix.org/v1.19/client-server-api/#send-to-device-messaging
//
// A message is stored once per recipient device with the next position of
// the stream, and stays until the device acknowledges it: a sync whose
// since token's to-device position is at or past the message's. So a
// response that is lost (the client retries with the same since) delivers
// the same messages again, and none is delivered after its
// acknowledgement.
type ToDevice struct {
	db       *database.DB
	users    *users.Service
	notifier *Notifier
	// pos is the stream's latest committed position. It is advanced only
	// after the commit, so a sync that reads it finds every message up to
	// it in the database.
	pos streampos.Position
	// remote queues messages for other servers' users (todevice_remote.go);
	// nil drops them.
	remote RemoteSender
	// onDelivered, if set, is told of the recipients of committed
	// messages (appservice.go).
	onDelivered func(userIDs []string)
	// announce and follower share the stream with the other processes of
	// a deployment (todevice_cluster.go); nil for one process.
	announce Announcer
	follower *streampos.Follower

	// acked remembers how far each device's queue is known deleted
	// (Page); a device deleted and recreated starts from nothing, as its
	// queue was dropped with it.
	ackedMu sync.Mutex
	acked   map[string]int64
}

// maxToDevicePerSync bounds the messages of one response, as the spec
// recommends; the rest come with the next sync.
const maxToDevicePerSync = 100

// toDeviceTxnLifetime is how long a /sendToDevice transaction ID is
// remembered: a retry after that is a new request.
const toDeviceTxnLifetime = 24 * time.Hour

// toDeviceIndex is the to-device stream's place in a token.
var toDeviceIndex = slices.Index(streamNames, "to_device")

func newToDeviceStream(ctx context.Context, db *database.DB, us *users.Service, n *Notifier) (*ToDevice, error) {
	t := &ToDevice{db: db, users: us, notifier: n}
	var pos int64
	if err := db.QueryRowContext(ctx, `SELECT pos FROM syncapi_stream_positions WHERE stream = 'to_device'`).Scan(&pos); err != nil {
		return nil, fmt.Errorf("to-device position: %w", err)
	}
	t.pos.Advance(pos)
	return t, nil
}

// ToDevice is the server's send-to-device messaging.
func (s *Service) ToDevice() *ToDevice {
	for _, st := range s.streams {
		if t, ok := st.(*ToDevice); ok {
			return t
		}
	}
	return nil
}

// toDeviceMessage is one message for one device.
type toDeviceMessage struct {
	userID, deviceID string
	content          json.RawMessage
}

// Send queues the messages of one /sendToDevice request: messages maps a
// user ID to a map from device ID (or "*", every device of the user not
// named on its own) to the content for that device. A transaction already
// done by the sending device is not done again.
//
// Messages for other servers' users go to their servers (see
// sendRemote); those for our devices that do not exist are dropped, as in
// Synapse.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3sendtodeviceeventtypetxnid
func (t *ToDevice) Send(ctx context.Context, sender, senderDevice, txnID, evType string, messages map[string]map[string]json.RawMessage) error {
	if evType == "" {
		return mxerr.InvalidParam("Missing event type")
	}
	recipients := make([]string, 0, len(messages))
	remote := map[string]map[string]json.RawMessage{}
	for userID, byDevice := range messages {
		uid, err := spec.NewUserID(userID, true)
		if err != nil {
			return mxerr.InvalidParam("Invalid user ID %q in messages", userID)
		}
		for deviceID, content := range byDevice {
			if !isJSONObject(content) {
				return mxerr.BadJSON("The message for %s's device %q is not a JSON object", userID, deviceID)
			}
		}
		if uid.Domain() == t.users.ServerName() {
			recipients = append(recipients, userID)
		} else {
			remote[userID] = byDevice
		}
	}
	out, err := t.expand(ctx, recipients, messages)
	if err != nil {
		return err
	}
	var last int64
	err = t.db.WithTx(ctx, func(tx *database.Tx) error {
		now := time.Now().UnixMilli()
		if senderDevice != "" && txnID != "" {
			if _, err := tx.ExecContext(ctx, `DELETE FROM to_device_txns WHERE created_ts < $1`,
				now-toDeviceTxnLifetime.Milliseconds()); err != nil {
				return fmt.Errorf("prune to-device transactions: %w", err)
			}
			res, err := tx.ExecContext(ctx, `INSERT INTO to_device_txns (user_id, device_id, txn_id, created_ts)
				VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, device_id, txn_id) DO NOTHING`,
				sender, senderDevice, txnID, now)
			if err != nil {
				return fmt.Errorf("record to-device transaction: %w", err)
			}
			if n, _ := res.RowsAffected(); n == 0 {
				out, remote = nil, nil // a retry: the messages are queued already
				return nil
			}
		}
		var err error
		last, err = t.queueMessages(ctx, tx, sender, evType, out)
		return err
	})
	if err != nil {
		return err
	}
	t.sendRemote(ctx, sender, evType, remote)
	t.delivered(last, out)
	return nil
}

// DevicesDeleted drops the queues (and remembered transactions) of
// devices that no longer exist, so that a device created later with the
// same ID does not receive its predecessor's messages.
func (t *ToDevice) DevicesDeleted(ctx context.Context, userID string, deviceIDs []string) error {
	_, err := t.dropQueues(ctx, userID, deviceIDs, math.MaxInt64)
	return err
}

// dropQueues deletes the devices' messages up to stream position upTo and
// their remembered transactions, and says how many messages went.
func (t *ToDevice) dropQueues(ctx context.Context, userID string, deviceIDs []string, upTo int64) (int64, error) {
	var n int64
	err := t.db.WithTx(ctx, func(tx *database.Tx) error {
		n = 0
		for _, d := range deviceIDs {
			res, err := tx.ExecContext(ctx, `DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = $2 AND stream_pos <= $3`,
				userID, d, upTo)
			if err != nil {
				return fmt.Errorf("delete to-device queue: %w", err)
			}
			k, _ := res.RowsAffected()
			n += k
			if _, err := tx.ExecContext(ctx, `DELETE FROM to_device_txns WHERE user_id = $1 AND device_id = $2`, userID, d); err != nil {
				return fmt.Errorf("delete to-device transactions: %w", err)
			}
		}
		return nil
	})
	return n, err
}

// Prune drops, for the housekeeping job, the queues of devices that no
// longer exist: left behind when a device is deleted while a message for
// it is being queued, or when the deletion hook failed. Messages queued
// after the check began are left alone (their device may be new).
func (t *ToDevice) Prune(ctx context.Context, _ time.Time) (int64, error) {
	var upTo int64
	if err := t.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(stream_pos), 0) FROM to_device_messages`).Scan(&upTo); err != nil {
		return 0, fmt.Errorf("to-device queues: %w", err)
	}
	users, queued, err := database.GroupedStrings(ctx, t.db, `SELECT DISTINCT user_id, device_id FROM to_device_messages
		WHERE stream_pos <= $1 ORDER BY user_id, device_id`, upTo)
	if err != nil {
		return 0, fmt.Errorf("to-device queues: %w", err)
	}
	var total int64
	for _, userID := range users {
		devices, err := t.users.Devices(ctx, userID)
		if err != nil {
			return total, err
		}
		exists := make(map[string]bool, len(devices))
		for _, d := range devices {
			exists[d.DeviceID] = true
		}
		var gone []string
		for _, d := range queued[userID] {
			if !exists[d] {
				gone = append(gone, d)
			}
		}
		if len(gone) == 0 {
			continue
		}
		n, err := t.dropQueues(ctx, userID, gone, upTo)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func (t *ToDevice) current(context.Context) (int64, error) { return t.pos.Load(), nil }

// fill first drops the messages the device has acknowledged (those at or
// before since), then delivers the next ones up to now, in order, at most
// maxToDevicePerSync. When more are waiting, the response's token stops at
// the last one delivered, so the next sync carries on from there.
func (t *ToDevice) fill(ctx context.Context, sc *syncContext, since, now int64) (bool, error) {
	userID, deviceID := sc.req.UserID, sc.req.DeviceID
	if deviceID == "" {
		return false, nil
	}
	if !sc.initial && since > 0 {
		if err := t.ack(ctx, userID, deviceID, since); err != nil {
			return false, err
		}
	}
	if since >= now {
		return false, nil
	}
	rows, err := t.db.QueryContext(ctx, `SELECT stream_pos, sender, type, content FROM to_device_messages
		WHERE user_id = $1 AND device_id = $2 AND stream_pos > $3 AND stream_pos <= $4
		ORDER BY stream_pos LIMIT $5`, userID, deviceID, since, now, maxToDevicePerSync+1)
	if err != nil {
		return false, fmt.Errorf("to-device messages: %w", err)
	}
	defer rows.Close()
	n, lastPos := 0, int64(0)
	for rows.Next() {
		var (
			pos                  int64
			sender, typ, content string
		)
		if err := rows.Scan(&pos, &sender, &typ, &content); err != nil {
			return false, fmt.Errorf("to-device messages: %w", err)
		}
		if n == maxToDevicePerSync {
			// More are waiting: the token stops at the last one sent.
			sc.next[toDeviceIndex] = lastPos
			break
		}
		sc.resp.ToDevice.Events = append(sc.resp.ToDevice.Events, map[string]any{
			"sender": sender, "type": typ, "content": json.RawMessage(content),
		})
		n, lastPos = n+1, pos
	}
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("to-device messages: %w", err)
	}
	return n > 0, nil
}

// ack deletes the device's messages at or before pos. It looks before it
// writes, as most syncs have nothing to acknowledge.
func (t *ToDevice) ack(ctx context.Context, userID, deviceID string, pos int64) error {
	var one int
	err := t.db.QueryRowContext(ctx, `SELECT 1 FROM to_device_messages
		WHERE user_id = $1 AND device_id = $2 AND stream_pos <= $3 LIMIT 1`, userID, deviceID, pos).Scan(&one)
	if isNoRows(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("to-device acknowledgement: %w", err)
	}
	if _, err := t.db.ExecContext(ctx, `DELETE FROM to_device_messages
		WHERE user_id = $1 AND device_id = $2 AND stream_pos <= $3`, userID, deviceID, pos); err != nil {
		return fmt.Errorf("to-device acknowledgement: %w", err)
	}
	return nil
}

func isJSONObject(raw json.RawMessage) bool {
	for _, c := range raw {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		case '{':
			return json.Valid(raw)
		}
		return false
	}
	return false
}

func compactJSON(raw json.RawMessage) json.RawMessage {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return raw
	}
	return b.Bytes()
}

func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

// DeviceEvents pages through the to-device messages of a device that does
// not sync: a dehydrated device (MSC3814), drained by the login that
// rehydrates it. nextBatch is "" for the first page, or the next_batch of
// the page before, which acknowledges (deletes) what that page carried.
// It returns up to maxToDevicePerSync messages and the token of the next
// page; an empty page means the device has no more.
func (t *ToDevice) DeviceEvents(ctx context.Context, userID, deviceID, nextBatch string) ([]map[string]any, string, error) {
	var since int64
	if nextBatch != "" {
		v, err := strconv.ParseInt(nextBatch, 10, 64)
		if err != nil || v < 0 {
			return nil, "", mxerr.InvalidParam("Invalid next_batch %q", nextBatch)
		}
		since = v
	}
	events, last, err := t.Page(ctx, userID, deviceID, since, maxToDevicePerSync)
	if err != nil {
		return nil, "", err
	}
	return events, strconv.FormatInt(last, 10), nil
}

// Page acknowledges (deletes) a device's messages at or before since, and
// returns the next ones, at most limit, with the stream position of the
// last one (since when there are none): the to_device extension of sliding
// sync, whose since and next_batch are these positions, and the
// dehydrated devices' pages.
func (t *ToDevice) Page(ctx context.Context, userID, deviceID string, since int64, limit int) ([]map[string]any, int64, error) {
	cur := t.pos.Load()
	if since > cur {
		// From another process that is ahead of this one (a deployment
		// of several): catch up rather than send back what it sent.
		if err := t.catchUp(ctx); err != nil {
			return nil, 0, err
		}
		cur = t.pos.Load()
	}
	since = min(since, cur)
	if since > 0 && !t.ackedUpTo(userID, deviceID, since) {
		if err := t.ack(ctx, userID, deviceID, since); err != nil {
			return nil, 0, err
		}
		t.setAcked(userID, deviceID, since)
	}
	if since >= cur {
		return []map[string]any{}, since, nil // nothing can be newer
	}
	rows, err := t.db.QueryContext(ctx, `SELECT stream_pos, sender, type, content FROM to_device_messages
		WHERE user_id = $1 AND device_id = $2 AND stream_pos > $3 AND stream_pos <= $4
		ORDER BY stream_pos LIMIT $5`, userID, deviceID, since, cur, limit)
	if err != nil {
		return nil, 0, fmt.Errorf("to-device messages: %w", err)
	}
	defer rows.Close()
	events := []map[string]any{}
	last := since
	for rows.Next() {
		var (
			pos                  int64
			sender, typ, content string
		)
		if err := rows.Scan(&pos, &sender, &typ, &content); err != nil {
			return nil, 0, fmt.Errorf("to-device messages: %w", err)
		}
		events = append(events, map[string]any{"sender": sender, "type": typ, "content": json.RawMessage(content)})
		last = pos
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("to-device messages: %w", err)
	}
	return events, last, nil
}

// ackedUpTo reports whether the device's messages up to pos are known to
// be deleted already (a page asked with the same since again, as every
// sliding sync request without new messages does), which saves the query.
func (t *ToDevice) ackedUpTo(userID, deviceID string, pos int64) bool {
	t.ackedMu.Lock()
	defer t.ackedMu.Unlock()
	return t.acked[userID+"\x00"+deviceID] >= pos
}

func (t *ToDevice) setAcked(userID, deviceID string, pos int64) {
	t.ackedMu.Lock()
	defer t.ackedMu.Unlock()
	if t.acked == nil || len(t.acked) >= 100_000 {
		t.acked = map[string]int64{}
	}
	t.acked[userID+"\x00"+deviceID] = pos
}
