package appservice

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/roomserver"
)

// A sender delivers one service's transactions, one at a time, in order.
// https://spec.matrix.org/v1.19/application-service-api/#put_matrixappv1transactionstxnid

// maxEphemeralQueue bounds the ephemeral events waiting for a service
// that is down; past it the oldest are dropped (they are ephemeral).
const maxEphemeralQueue = 10_000

// maxToDevicePerTxn bounds the to-device messages, and the ephemeral
// events, of one transaction.
const maxToDevicePerTxn = 100

// scanBatch is how many events or messages are read at a time from a
// cursor.
const scanBatch = 256

// cursorSaveInterval throttles saving a cursor moved past events the
// service is not interested in: losing such a save only makes the next
// start read them again, and skip them again.
const cursorSaveInterval = time.Second

type sender struct {
	s      *Service
	reg    *Registration
	log    logrus.FieldLogger
	wakeCh chan struct{}
	ctx    context.Context
	cancel context.CancelFunc

	// Owned by run.
	eventPos, toDevicePos int64
	epoch, seq            int64
	pending               *pendingTxn
	savedEventPos         int64
	savedToDevicePos      int64
	savedAt               time.Time
	// unrecorded: a delivered transaction is still stored as pending.
	// The next transaction's store overwrites it (one write per
	// transaction under load); with no next one, saveCursor clears it.
	unrecorded bool

	mu            sync.Mutex
	ephemeral     []json.RawMessage
	deviceChanged map[string]bool
	// claimed are the service's users' devices whose one-time or
	// fallback keys someone claimed (MSC3202): their counts go in the
	// next transaction.
	claimed map[[2]string]bool
}

// pendingTxn is the transaction being delivered, and where it takes the
// cursors.
type pendingTxn struct {
	id                    string
	body                  []byte
	eventPos, toDevicePos int64
	// acks are the to-device messages it carries, per device, deleted
	// once it is delivered (not stored: after a restart they are
	// simply left, behind the cursor).
	acks map[[2]string]int64
	// events is how many room events it carries (for the log).
	events int
}

func (s *Service) newSender(ctx context.Context, r *Registration) (*sender, error) {
	w := &sender{
		s: s, reg: r, log: s.log.WithField("appservice", r.ID),
		wakeCh:        make(chan struct{}, 1),
		deviceChanged: map[string]bool{},
		claimed:       map[[2]string]bool{},
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	var tdPos int64
	if s.toDevice != nil {
		tdPos = s.toDevice.Pos()
	}
	// A service seen for the first time starts now, not with history.
	if _, err := s.db.ExecContext(ctx, `INSERT INTO appservice_senders (as_id, event_pos, to_device_pos, epoch, txn_seq)
		VALUES ($1, $2, $3, $4, 0) ON CONFLICT (as_id) DO NOTHING`, r.ID, s.rooms.CurrentPos(), tdPos, time.Now().UnixMilli()); err != nil {
		return nil, fmt.Errorf("application service %s: sender state: %w", r.ID, err)
	}
	var (
		pendingID, pendingBody sql.NullString
		pendingEv, pendingTD   sql.NullInt64
	)
	if err := s.db.QueryRowContext(ctx, `SELECT event_pos, to_device_pos, epoch, txn_seq, pending_txn, pending_body,
		pending_event_pos, pending_to_device_pos FROM appservice_senders WHERE as_id = $1`, r.ID).Scan(
		&w.eventPos, &w.toDevicePos, &w.epoch, &w.seq, &pendingID, &pendingBody, &pendingEv, &pendingTD); err != nil {
		return nil, fmt.Errorf("application service %s: sender state: %w", r.ID, err)
	}
	if pendingID.Valid {
		w.pending = &pendingTxn{id: pendingID.String, body: []byte(pendingBody.String),
			eventPos: pendingEv.Int64, toDevicePos: pendingTD.Int64}
	}
	w.savedEventPos, w.savedToDevicePos = w.eventPos, w.toDevicePos
	return w, nil
}

func (w *sender) wake() {
	select {
	case w.wakeCh <- struct{}{}:
	default:
	}
}

func (w *sender) stopped() bool {
	select {
	case <-w.s.stop:
		return true
	default:
		return false
	}
}

// sleep waits d, or until the service stops (false).
func (w *sender) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-w.s.stop:
		return false
	}
}

func (w *sender) wantsToDevice() bool { return w.reg.Ephemeral() || w.reg.MSC3202 }

func (w *sender) addEphemeral(ev map[string]any) {
	raw, err := json.Marshal(ev)
	if err != nil {
		return
	}
	w.mu.Lock()
	w.ephemeral = append(w.ephemeral, raw)
	if n := len(w.ephemeral); n > maxEphemeralQueue {
		w.ephemeral = append([]json.RawMessage(nil), w.ephemeral[n-maxEphemeralQueue:]...)
	}
	w.mu.Unlock()
	w.wake()
}

func (w *sender) deviceListChanged(userID string) {
	w.mu.Lock()
	if len(w.deviceChanged) < maxEphemeralQueue {
		w.deviceChanged[userID] = true
	}
	w.mu.Unlock()
	w.wake()
}

func (w *sender) keysClaimed(userID string, deviceIDs []string) {
	w.mu.Lock()
	for _, d := range deviceIDs {
		if len(w.claimed) < maxEphemeralQueue {
			w.claimed[[2]string{userID, d}] = true
		}
	}
	w.mu.Unlock()
	w.wake()
}

func (w *sender) run() {
	defer w.saveCursor(true)
	var backoff time.Duration
	for !w.stopped() {
		if w.pending == nil {
			p, err := w.build(w.ctx)
			if err != nil {
				if w.stopped() {
					return
				}
				w.log.WithError(err).Error("appservice: building a transaction")
				if !w.sleep(w.s.cfg.MinBackoff) {
					return
				}
				continue
			}
			if p == nil {
				w.saveCursor(false)
				select {
				case <-w.wakeCh:
				case <-w.s.stop:
					return
				}
				continue
			}
			w.pending = p
		}
		err := w.deliver(w.ctx, w.pending)
		if err == nil {
			backoff = 0
			continue
		}
		if w.stopped() {
			return
		}
		if backoff == 0 {
			backoff = w.s.cfg.MinBackoff
		} else {
			backoff = min(2*backoff, w.s.cfg.MaxBackoff)
		}
		w.log.WithError(err).WithFields(logrus.Fields{"txn_id": w.pending.id, "retry_in": backoff}).
			Warn("appservice: transaction not delivered, retrying")
		if !w.sleep(backoff) {
			return
		}
	}
}

// build reads what came after the cursors and, if the service is
// interested in any of it, stores it as the pending transaction. nil
// means nothing to send (the cursors moved past what was read).
func (w *sender) build(ctx context.Context) (*pendingTxn, error) {
	s := w.s
	serverName := s.set.ServerName()
	evPos := w.eventPos
	var events []roomserver.ClientEvent
	joined, left := map[string]bool{}, map[string]bool{}
scan:
	for {
		evs, err := s.rooms.EventsAfter(ctx, evPos, scanBatch)
		if err != nil {
			return nil, err
		}
		for _, ev := range evs {
			interested, err := s.interest.event(ctx, w.reg, serverName, ev)
			if err != nil {
				return nil, err
			}
			if interested {
				if len(events) == s.cfg.MaxEvents {
					break scan
				}
				// unsigned.transaction_id for the events the service's
				// own users sent, so that it knows its echoes.
				var viewer roomserver.Viewer
				if ev.TxnID != "" && w.reg.InterestedInUser(ev.TxnUser, serverName) {
					viewer = roomserver.Viewer{UserID: ev.TxnUser, DeviceID: ev.TxnDevice}
				}
				events = append(events, ev.ToClient(viewer, nil))
				if w.reg.MSC3202 {
					w.memberDeviceLists(ctx, ev, joined, left)
				}
			}
			evPos = ev.StreamPos
		}
		if len(evs) < scanBatch {
			break
		}
	}
	tdPos := w.toDevicePos
	var toDevice []map[string]any
	acks := map[[2]string]int64{}
	if s.toDevice != nil && w.wantsToDevice() {
	scanTD:
		for {
			msgs, err := s.toDevice.MessagesAfter(ctx, tdPos, scanBatch)
			if err != nil {
				return nil, err
			}
			for _, m := range msgs {
				if w.reg.InterestedInUser(m.UserID, serverName) {
					if len(toDevice) == maxToDevicePerTxn {
						break scanTD
					}
					toDevice = append(toDevice, map[string]any{"type": m.Type, "sender": m.Sender,
						"to_user_id": m.UserID, "to_device_id": m.DeviceID, "content": m.Content})
					acks[[2]string{m.UserID, m.DeviceID}] = m.Pos
				}
				tdPos = m.Pos
			}
			if len(msgs) < scanBatch {
				break
			}
		}
	} else if s.toDevice != nil {
		tdPos = s.toDevice.Pos()
	}
	w.mu.Lock()
	n := min(len(w.ephemeral), maxToDevicePerTxn)
	ephemeral := w.ephemeral[:n:n]
	w.ephemeral = w.ephemeral[n:]
	for u := range w.deviceChanged {
		joined[u] = true
	}
	clear(w.deviceChanged)
	counted := make([][2]string, 0, len(w.claimed))
	for dev := range w.claimed {
		counted = append(counted, dev)
	}
	clear(w.claimed)
	w.mu.Unlock()
	var changed, gone []string
	for u := range joined {
		changed = append(changed, u)
	}
	for u := range left {
		gone = append(gone, u)
	}

	if len(events) == 0 && len(toDevice) == 0 && len(ephemeral) == 0 && len(changed) == 0 && len(gone) == 0 &&
		(len(counted) == 0 || !w.reg.MSC3202) {
		w.eventPos, w.toDevicePos = evPos, tdPos
		return nil, nil
	}
	body := map[string]any{"events": events}
	if events == nil {
		body["events"] = []any{}
	}
	if len(ephemeral) > 0 {
		body["ephemeral"] = ephemeral
		body["de.sorunome.msc2409.ephemeral"] = ephemeral
	}
	if len(toDevice) > 0 {
		body["de.sorunome.msc2409.to_device"] = toDevice
	}
	if w.reg.MSC3202 {
		if len(changed) > 0 || len(gone) > 0 {
			sort.Strings(changed)
			sort.Strings(gone)
			body["org.matrix.msc3202.device_lists"] = map[string]any{"changed": nonNil(changed), "left": nonNil(gone)}
		}
		for _, m := range toDevice {
			counted = append(counted, [2]string{m["to_user_id"].(string), m["to_device_id"].(string)})
		}
		if err := w.keyCounts(ctx, body, counted); err != nil {
			return nil, err
		}
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	p := &pendingTxn{id: fmt.Sprintf("%d.%d", w.epoch, w.seq+1), body: raw, eventPos: evPos, toDevicePos: tdPos,
		acks: acks, events: len(events)}
	// The cursors are written too: they are where the last delivered
	// transaction took them, which this replaces as the pending one.
	if _, err := s.db.ExecContext(ctx, `UPDATE appservice_senders SET txn_seq = $2, pending_txn = $3, pending_body = $4,
		pending_event_pos = $5, pending_to_device_pos = $6, event_pos = $7, to_device_pos = $8 WHERE as_id = $1`,
		w.reg.ID, w.seq+1, p.id, string(raw), evPos, tdPos, w.eventPos, w.toDevicePos); err != nil {
		// The ephemeral events taken are lost with it; the rest is read
		// again from the cursors.
		return nil, fmt.Errorf("store transaction: %w", err)
	}
	w.seq++
	w.unrecorded = false
	w.savedEventPos, w.savedToDevicePos, w.savedAt = w.eventPos, w.toDevicePos, time.Now()
	return p, nil
}

// keyCounts adds the one-time key counts and unused fallback key types of
// devices (MSC3202): those whose keys were claimed, and those the
// transaction's to-device messages are for (an olm message usually follows
// a claim).
func (w *sender) keyCounts(ctx context.Context, body map[string]any, devices [][2]string) error {
	if w.s.keys == nil || len(devices) == 0 {
		return nil
	}
	otks := map[string]map[string]map[string]int{}
	fallbacks := map[string]map[string][]string{}
	for _, dev := range devices {
		u, d := dev[0], dev[1]
		if _, done := otks[u][d]; done {
			continue
		}
		counts, err := w.s.keys.OneTimeKeyCounts(ctx, u, d)
		if err != nil {
			return err
		}
		fb, err := w.s.keys.UnusedFallbackKeyTypes(ctx, u, d)
		if err != nil {
			return err
		}
		if otks[u] == nil {
			otks[u], fallbacks[u] = map[string]map[string]int{}, map[string][]string{}
		}
		otks[u][d] = counts
		if fb == nil {
			fb = []string{}
		}
		fallbacks[u][d] = fb
	}
	body["org.matrix.msc3202.device_one_time_keys_count"] = otks
	body["org.matrix.msc3202.device_unused_fallback_key_types"] = fallbacks
	return nil
}

// deliver makes one attempt at the pending transaction; on success the
// cursors move to its positions and it is cleared.
func (w *sender) deliver(ctx context.Context, p *pendingTxn) error {
	status, answer, err := w.s.client.Do(ctx, w.reg, http.MethodPut,
		"/_matrix/app/v1/transactions/"+url.PathEscape(p.id), nil, json.RawMessage(p.body))
	if err != nil {
		return err
	}
	if status < 200 || status > 299 {
		if len(answer) > 200 {
			answer = answer[:200]
		}
		return fmt.Errorf("the service answered %d: %s", status, answer)
	}
	// The service has it. That is recorded by the next transaction's
	// store, or by saveCursor when there is none; should the process die
	// first, the next start resends it under the same ID, which the
	// service drops as a repeat.
	w.eventPos, w.toDevicePos = p.eventPos, p.toDevicePos
	w.pending = nil
	w.unrecorded = true
	if w.reg.MSC3202 && w.s.toDevice != nil {
		// Its devices do not sync: nobody else would ever delete these.
		for dev, pos := range p.acks {
			if err := w.s.toDevice.AckDevice(context.Background(), dev[0], dev[1], pos); err != nil {
				w.log.WithError(err).Warn("appservice: deleting delivered to-device messages")
			}
		}
	}
	w.log.WithFields(logrus.Fields{"txn_id": p.id, "events": p.events}).Debug("appservice: transaction delivered")
	return nil
}

// saveCursor stores cursors moved past events of no interest, at most
// once a second unless forced.
func (w *sender) saveCursor(force bool) {
	// Only while no transaction is pending: its positions are what
	// the cursors become when it is delivered.
	if w.pending != nil {
		return
	}
	if !w.unrecorded {
		if w.eventPos == w.savedEventPos && w.toDevicePos == w.savedToDevicePos {
			return
		}
		if !force && time.Since(w.savedAt) < cursorSaveInterval {
			return
		}
	}
	if _, err := w.s.db.ExecContext(context.Background(), `UPDATE appservice_senders SET event_pos = $2, to_device_pos = $3,
		pending_txn = NULL, pending_body = NULL, pending_event_pos = NULL, pending_to_device_pos = NULL
		WHERE as_id = $1`, w.reg.ID, w.eventPos, w.toDevicePos); err != nil {
		if !errors.Is(err, context.Canceled) {
			w.log.WithError(err).Warn("appservice: saving the cursor")
		}
		return
	}
	w.savedEventPos, w.savedToDevicePos, w.savedAt = w.eventPos, w.toDevicePos, time.Now()
	w.unrecorded = false
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// memberDeviceLists notes, for MSC3202, the device lists a member event
// makes relevant or irrelevant to the service: a user who joins a room
// with the service's users (whose devices the service must now encrypt
// for: changed), and one who left the last room they shared with them
// (left), as /sync's device_lists does.
// https://github.com/matrix-org/matrix-spec-proposals/pull/3202
func (w *sender) memberDeviceLists(ctx context.Context, ev *roomserver.Event, joined, left map[string]bool) {
	if ev.Type() != "m.room.member" || ev.StateKey() == nil {
		return
	}
	u := *ev.StateKey()
	serverName := w.s.set.ServerName()
	m, _ := ev.Membership()
	if m != "join" && m != "leave" && m != "ban" {
		return
	}
	if !w.reg.InterestedInUser(u, serverName) {
		w.deviceListsOf(ctx, u, m == "join" && w.s.interest.membersInterest(ctx, w.reg, ev.RoomID), joined, left)
		return
	}
	// One of the service's users joined or left: the room's members are
	// newly shared with the service (their devices may have changed
	// unseen), or may no longer be.
	members, err := w.s.rooms.JoinedUsers(ctx, ev.RoomID)
	if err != nil {
		w.log.WithError(err).WithField("room_id", ev.RoomID).Warn("appservice: members for device lists")
		return
	}
	for _, other := range members {
		if other != u && !w.reg.InterestedInUser(other, serverName) {
			w.deviceListsOf(ctx, other, m == "join", joined, left)
		}
	}
}

// deviceListsOf files user as changed (shares is true: they share a room
// with the service's users) or, when they no longer share any, as left.
func (w *sender) deviceListsOf(ctx context.Context, user string, shares bool, joined, left map[string]bool) {
	if !shares {
		rooms, err := w.s.rooms.JoinedRooms(ctx, user)
		if err != nil {
			return
		}
		for _, r := range rooms {
			if w.s.interest.membersInterest(ctx, w.reg, r) {
				return // still shares a room with the service's users
			}
		}
		left[user] = true
		delete(joined, user)
		return
	}
	joined[user] = true
	delete(left, user)
}
