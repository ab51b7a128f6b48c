// Package delayed holds events a client scheduled to be sent later
// (MSC4140, unstable prefix org.matrix.msc4140). Element Call uses it for
// MatrixRTC: it schedules a "left the call" membership state event and keeps
// restarting its timer while the call runs, so that the event fires when the
// client vanishes.
//
// Events are stored in the database and survive a restart. One timer serves
// the whole service: it is armed for the earliest scheduled send time, and
// when it fires every due event is sent through the room server as its
// owner, as if the owner had sent it then.
//
// https://github.com/matrix-org/matrix-spec-proposals/pull/4140
package delayed

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/roomserver"
)

// Rooms is what the service needs of the room server.
type Rooms interface {
	Send(ctx context.Context, req roomserver.SendRequest) (*roomserver.Event, error)
	Membership(ctx context.Context, roomID, userID string) (string, error)
}

// Config tunes the service.
type Config struct {
	// MaxDelay is the longest delay a client may ask for; 0 turns delayed
	// events off.
	MaxDelay time.Duration
	// MaxPerUser caps a user's scheduled events (Synapse's
	// max_delayed_events_per_user); 0 means DefaultMaxPerUser.
	MaxPerUser int
	// Retention is how long finalised events stay listed; 0 means
	// DefaultRetention.
	Retention time.Duration
	// Owns, in a deployment of several processes (docs/scaling.md),
	// reports whether this process owns a room: its timer sends the
	// events of the rooms it owns, so that each is sent once and by the
	// room's sequencer. nil: every room.
	Owns func(roomID string) bool
	// Elsewhere is told, inside the transaction that schedules an event
	// in a room another process owns, to wake that process's timer (Wake)
	// once it commits. nil with Owns nil.
	Elsewhere func(ctx context.Context, tx *database.Tx, roomID string) error
}

// owns reports whether this process's timer sends roomID's events.
func (s *Service) owns(roomID string) bool {
	return s.cfg.Owns == nil || s.cfg.Owns(roomID)
}

// Wake makes the timer look again for the next due event: another
// process scheduled one in a room this one owns.
func (s *Service) Wake() { s.kick() }

const (
	// DefaultMaxPerUser matches Synapse's default.
	DefaultMaxPerUser = 100
	// DefaultRetention keeps outcomes for a day: long enough for a client
	// that was offline to learn what happened to its events.
	DefaultRetention = 24 * time.Hour
	// batchSize bounds how many due events one timer tick sends before it
	// looks again, so a backlog after downtime does not hold one huge query.
	batchSize = 100
	// retryAfter is when the timer tries again after a database error.
	retryAfter = 5 * time.Second
	// pruneEvery spaces out the deletion of old finalised events.
	pruneEvery = time.Hour
)

// Action is what a client asks of a scheduled event.
type Action string

const (
	Restart Action = "restart"
	SendNow Action = "send"
	Cancel  Action = "cancel"
)

// Service schedules, sends and cancels delayed events.
type Service struct {
	db    *database.DB
	rooms Rooms
	cfg   Config
	log   logrus.FieldLogger

	// wake tells the timer loop to look again for the next due event (a
	// new event may be due before the one it waits for).
	wake chan struct{}
	// cancel stops the loop and any send in progress; done closes when
	// the loop has returned.
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// New creates the tables. Start begins sending.
func New(ctx context.Context, db *database.DB, rooms Rooms, cfg Config, log logrus.FieldLogger) (*Service, error) {
	if err := db.Migrate(ctx, "delayed", migrations); err != nil {
		return nil, fmt.Errorf("delayed events: %w", err)
	}
	if cfg.MaxPerUser <= 0 {
		cfg.MaxPerUser = DefaultMaxPerUser
	}
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	return &Service{db: db, rooms: rooms, cfg: cfg, log: log, wake: make(chan struct{}, 1)}, nil
}

// Enabled reports whether clients may schedule events.
func (s *Service) Enabled() bool { return s.cfg.MaxDelay > 0 }

// MaxDelay is the longest delay allowed.
func (s *Service) MaxDelay() time.Duration { return s.cfg.MaxDelay }

// Start starts the timer. Events that fell due while the server was down
// are sent at once, and sends a crash cut short are tried again.
func (s *Service) Start(ctx context.Context) error {
	if err := s.resetInterrupted(ctx); err != nil {
		return err
	}
	// The loop outlives the start-up context: Stop ends it.
	loopCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	s.done = make(chan struct{})
	go s.run(loopCtx)
	return nil
}

// Stop stops the timer and waits for a send in progress. Call it before
// the room server and the database close.
func (s *Service) Stop() {
	s.once.Do(func() {
		if s.cancel == nil {
			return
		}
		s.cancel()
		<-s.done
	})
}

// ScheduleRequest is an event to send later.
type ScheduleRequest struct {
	UserID, DeviceID string
	// TxnKey, when set, makes the request idempotent: a retry with the
	// same key gets the first delay_id back.
	TxnKey   string
	RoomID   string
	Type     string
	StateKey *string // nil for a message event
	Content  json.RawMessage
	Delay    time.Duration
}

// Schedule stores an event to send after req.Delay and returns its
// delay_id. Power levels are checked when it fires, as the MSC says; now
// only the sender's membership is.
func (s *Service) Schedule(ctx context.Context, req ScheduleRequest) (string, error) {
	if !s.Enabled() {
		return "", mxerr.Forbidden("Sending delayed events has been disallowed")
	}
	if req.Delay < 0 {
		return "", mxerr.InvalidParam("The delay must not be negative")
	}
	if req.Delay > s.cfg.MaxDelay {
		// The shape Synapse answers and matrix-js-sdk's MatrixRTC
		// MembershipManager looks for (errcode M_UNKNOWN with the unstable
		// errcode beside it) to shorten its delay and retry.
		maxMS := s.cfg.MaxDelay.Milliseconds()
		return "", mxerr.Unknown(http.StatusBadRequest,
			"The requested delay (%dms) exceeds the allowed maximum (%dms)", req.Delay.Milliseconds(), maxMS).
			With("org.matrix.msc4140.errcode", "M_MAX_DELAY_EXCEEDED").
			With("org.matrix.msc4140.max_delay", maxMS).
			With("max_delay", maxMS)
	}
	if req.Type == "" {
		return "", mxerr.InvalidParam("Event type must not be empty")
	}
	if req.Type == spec.MRoomRedaction {
		return "", mxerr.InvalidParam("Use /redact to redact events")
	}
	m, err := s.rooms.Membership(ctx, req.RoomID, req.UserID)
	if err != nil {
		return "", fmt.Errorf("delayed events: membership: %w", err)
	}
	if m != spec.Join {
		return "", mxerr.Forbidden("User %s not in room %s", req.UserID, req.RoomID)
	}
	var txnKey *string
	if req.TxnKey != "" {
		txnKey = &req.TxnKey
	}
	var delayID string
	err = s.db.WithTx(ctx, func(tx *database.Tx) error {
		if txnKey != nil {
			err := tx.QueryRowContext(ctx, `SELECT delay_id FROM delayed_events
				WHERE user_id = $1 AND device_id = $2 AND txn_key = $3`,
				req.UserID, req.DeviceID, req.TxnKey).Scan(&delayID)
			if err == nil {
				return nil
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("look up transaction: %w", err)
			}
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM delayed_events
			WHERE user_id = $1 AND finalised_ts IS NULL`, req.UserID).Scan(&n); err != nil {
			return fmt.Errorf("count scheduled: %w", err)
		}
		if n >= s.cfg.MaxPerUser {
			// As Synapse answers it.
			return mxerr.Unknown(http.StatusBadRequest, "The maximum number of delayed events has been reached.").
				With("org.matrix.msc4140.errcode", "M_MAX_DELAY_UNSUPPORTED")
		}
		delayID = newDelayID()
		now := time.Now().UnixMilli()
		_, err := tx.ExecContext(ctx, `INSERT INTO delayed_events
			(delay_id, user_id, device_id, room_id, type, state_key, content, delay_ms, send_ts, txn_key)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			delayID, req.UserID, req.DeviceID, req.RoomID, req.Type, req.StateKey, string(req.Content),
			req.Delay.Milliseconds(), now+req.Delay.Milliseconds(), txnKey)
		if err != nil {
			return fmt.Errorf("insert: %w", err)
		}
		if !s.owns(req.RoomID) && s.cfg.Elsewhere != nil {
			return s.cfg.Elsewhere(ctx, tx, req.RoomID)
		}
		return nil
	})
	if err != nil {
		if _, ok := mxerr.As(err); ok {
			return "", err
		}
		return "", fmt.Errorf("delayed events: schedule: %w", err)
	}
	s.kick()
	return delayID, nil
}

// Update runs a client's action on one of its scheduled events. An event
// that is not the user's, or not scheduled any more, is M_NOT_FOUND. With
// userID "" the delay ID alone is the authority: MSC4140 lets anyone who
// knows it (a service the client delegated it to) act on it.
func (s *Service) Update(ctx context.Context, userID, delayID string, action Action) error {
	now := time.Now().UnixMilli()
	var (
		res sql.Result
		err error
	)
	switch action {
	case Restart:
		// One indexed UPDATE: clients call this every few seconds. The
		// timer is not told: a later send time never makes it late, and
		// when it fires early it finds nothing due and re-arms.
		res, err = s.db.ExecContext(ctx, `UPDATE delayed_events SET send_ts = $1 + delay_ms
			WHERE delay_id = $2 AND ($3 = '' OR user_id = $3) AND finalised_ts IS NULL AND processing = 0`,
			now, delayID, userID)
	case Cancel:
		res, err = s.db.ExecContext(ctx, `UPDATE delayed_events
			SET finalised_ts = $1, outcome = 'cancel', reason = 'action'
			WHERE delay_id = $2 AND ($3 = '' OR user_id = $3) AND finalised_ts IS NULL AND processing = 0`,
			now, delayID, userID)
	case SendNow:
		return s.fire(ctx, delayID, userID, "action")
	default:
		return mxerr.InvalidParam("'action' is not one of 'cancel', 'restart', 'send'")
	}
	if err != nil {
		return fmt.Errorf("delayed events: %s: %w", action, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("delayed events: %s: %w", action, err)
	} else if n == 0 {
		return mxerr.NotFound("Delayed event not found")
	}
	return nil
}

// StateChanged cancels other users' scheduled events for a piece of state
// that sender has just set, as Synapse does: their delayed update was
// written against state that is no longer current. The sender's own stay
// scheduled (Element Call refreshes its membership while its delayed
// "leave" waits).
func (s *Service) StateChanged(ctx context.Context, roomID, evType, stateKey, sender string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE delayed_events
		SET finalised_ts = $1, outcome = 'cancel', reason = 'action'
		WHERE room_id = $2 AND type = $3 AND state_key = $4 AND user_id <> $5
			AND finalised_ts IS NULL AND processing = 0`,
		time.Now().UnixMilli(), roomID, evType, stateKey, sender)
	if err != nil {
		return fmt.Errorf("delayed events: cancel for changed state: %w", err)
	}
	return nil
}

// kick wakes the timer loop without blocking.
func (s *Service) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run is the one timer: it sends what is due, then sleeps until the next
// send time or until kicked.
func (s *Service) run(ctx context.Context) {
	defer close(s.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var lastPrune time.Time
	for {
		next, err := s.sendDue(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.log.WithError(err).Error("sending delayed events")
			next = time.Now().Add(retryAfter)
		}
		if time.Since(lastPrune) > pruneEvery {
			lastPrune = time.Now()
			if err := s.prune(ctx); err != nil && ctx.Err() == nil {
				s.log.WithError(err).Warn("pruning finalised delayed events")
			}
		}
		if !next.IsZero() {
			timer.Reset(time.Until(next))
		}
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		case <-s.wake:
			timer.Stop()
		}
	}
}

// resetInterrupted makes the sends a crash cut short due again: those
// of the rooms this process owns (another process's may be in progress).
func (s *Service) resetInterrupted(ctx context.Context) error {
	if s.cfg.Owns == nil {
		if _, err := s.db.ExecContext(ctx,
			`UPDATE delayed_events SET processing = 0 WHERE processing = 1 AND finalised_ts IS NULL`); err != nil {
			return fmt.Errorf("delayed events: reset interrupted sends: %w", err)
		}
		return nil
	}
	rows, err := s.db.QueryContext(ctx, `SELECT delay_id, room_id FROM delayed_events WHERE processing = 1 AND finalised_ts IS NULL`)
	if err != nil {
		return fmt.Errorf("delayed events: find interrupted sends: %w", err)
	}
	ids, err := s.ownedIDs(rows)
	if err != nil {
		return fmt.Errorf("delayed events: find interrupted sends: %w", err)
	}
	for _, id := range ids {
		if _, err := s.db.ExecContext(ctx, `UPDATE delayed_events SET processing = 0
			WHERE delay_id = $1 AND processing = 1 AND finalised_ts IS NULL`, id); err != nil {
			return fmt.Errorf("delayed events: reset interrupted sends: %w", err)
		}
	}
	return nil
}

// ownedIDs reads rows of (delay_id, room_id) and returns the IDs of the
// events of rooms this process owns, in order, then closes rows.
func (s *Service) ownedIDs(rows *sql.Rows) ([]string, error) {
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id, roomID string
		if err := rows.Scan(&id, &roomID); err != nil {
			return nil, err
		}
		if s.owns(roomID) {
			ids = append(ids, id)
		}
	}
	return ids, rows.Err()
}

// sendDue sends every event due now and returns the next send time (zero
// when nothing is scheduled).
func (s *Service) sendDue(ctx context.Context) (time.Time, error) {
	if s.cfg.Owns != nil {
		return s.sendDueOwned(ctx)
	}
	for {
		ids, err := database.Strings(ctx, s.db, `SELECT delay_id FROM delayed_events
			WHERE finalised_ts IS NULL AND processing = 0 AND send_ts <= $1
			ORDER BY send_ts LIMIT $2`, time.Now().UnixMilli(), batchSize)
		if err != nil {
			return time.Time{}, fmt.Errorf("list due: %w", err)
		}
		if err := s.fireAll(ctx, ids); err != nil {
			return time.Time{}, err
		}
		if len(ids) < batchSize {
			break
		}
	}
	var next sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT MIN(send_ts) FROM delayed_events
		WHERE finalised_ts IS NULL AND processing = 0`).Scan(&next); err != nil {
		return time.Time{}, fmt.Errorf("next due: %w", err)
	}
	if !next.Valid {
		return time.Time{}, nil
	}
	return time.UnixMilli(next.Int64), nil
}

// sendDueOwned is sendDue in a cluster: the due events of the rooms this
// process owns, and the next send time among them. Ownership is a hash
// of the room ID, which SQL cannot filter on: every due row is read (the
// due ones are few but while an owner is down), and the next time per
// room.
func (s *Service) sendDueOwned(ctx context.Context) (time.Time, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT delay_id, room_id FROM delayed_events
		WHERE finalised_ts IS NULL AND processing = 0 AND send_ts <= $1 ORDER BY send_ts`, time.Now().UnixMilli())
	if err != nil {
		return time.Time{}, fmt.Errorf("list due: %w", err)
	}
	ids, err := s.ownedIDs(rows)
	if err != nil {
		return time.Time{}, fmt.Errorf("list due: %w", err)
	}
	if err := s.fireAll(ctx, ids); err != nil {
		return time.Time{}, err
	}
	rows, err = s.db.QueryContext(ctx, `SELECT room_id, MIN(send_ts) FROM delayed_events
		WHERE finalised_ts IS NULL AND processing = 0 GROUP BY room_id`)
	if err != nil {
		return time.Time{}, fmt.Errorf("next due: %w", err)
	}
	defer rows.Close()
	var next int64
	for rows.Next() {
		var roomID string
		var ts int64
		if err := rows.Scan(&roomID, &ts); err != nil {
			return time.Time{}, fmt.Errorf("next due: %w", err)
		}
		if s.owns(roomID) && (next == 0 || ts < next) {
			next = ts
		}
	}
	if err := rows.Err(); err != nil {
		return time.Time{}, fmt.Errorf("next due: %w", err)
	}
	if next == 0 {
		return time.Time{}, nil
	}
	return time.UnixMilli(next), nil
}

// fireAll sends the events ids. A failed send is recorded as the event's
// outcome; only database trouble stops the batch.
func (s *Service) fireAll(ctx context.Context, ids []string) error {
	for _, id := range ids {
		if err := s.fire(ctx, id, "", "delay"); err != nil {
			if _, ok := mxerr.As(err); !ok {
				return err
			}
		}
	}
	return nil
}

// fire sends one scheduled event now. userID, when set, must own it. The
// row is claimed first so that a concurrent restart, cancel or send finds
// it gone; the outcome, event or error, is recorded after.
func (s *Service) fire(ctx context.Context, delayID, userID, reason string) error {
	var (
		ev       pending
		stateKey sql.NullString
		content  string
	)
	err := s.db.WithTx(ctx, func(tx *database.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE delayed_events SET processing = 1
			WHERE delay_id = $1 AND ($2 = '' OR user_id = $2) AND finalised_ts IS NULL AND processing = 0`,
			delayID, userID)
		if err != nil {
			return fmt.Errorf("claim: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("claim: %w", err)
		} else if n == 0 {
			return mxerr.NotFound("Delayed event not found")
		}
		err = tx.QueryRowContext(ctx, `SELECT user_id, device_id, room_id, type, state_key, content
			FROM delayed_events WHERE delay_id = $1`, delayID).
			Scan(&ev.userID, &ev.deviceID, &ev.roomID, &ev.evType, &stateKey, &content)
		if err != nil {
			return fmt.Errorf("load: %w", err)
		}
		return nil
	})
	if err != nil {
		if _, ok := mxerr.As(err); ok {
			return err
		}
		return fmt.Errorf("delayed events: send %s: %w", delayID, err)
	}
	req := roomserver.SendRequest{RoomID: ev.roomID, Sender: ev.userID, Type: ev.evType, Content: json.RawMessage(content)}
	if stateKey.Valid {
		req.StateKey = &stateKey.String
	}
	sent, sendErr := s.rooms.Send(ctx, req)
	if sendErr != nil && ctx.Err() != nil {
		// Shutting down: leave the row claimed; Start retries it.
		return fmt.Errorf("delayed events: send %s: %w", delayID, sendErr)
	}
	if _, refused := mxerr.As(sendErr); sendErr != nil && !refused && !s.owns(ev.roomID) {
		// The room's owner, which sends for an action here, could not
		// be reached: the event stays scheduled (its timer sends it
		// when due), and the action may be retried.
		if _, err := s.db.ExecContext(context.WithoutCancel(ctx), `UPDATE delayed_events SET processing = 0
			WHERE delay_id = $1`, delayID); err != nil {
			return fmt.Errorf("delayed events: unclaim %s: %w", delayID, err)
		}
		s.log.WithError(sendErr).WithField("room_id", ev.roomID).Warn("delayed events: the room's owner could not send an event")
		return mxerr.Unknown(http.StatusBadGateway, "The process that owns this room is unavailable; retry later")
	}
	log := s.log.WithFields(logrus.Fields{"delay_id": httpx.LogID(delayID), "room_id": ev.roomID, "user_id": ev.userID})
	var eventID, errJSON sql.NullString
	if sendErr != nil {
		log.WithError(sendErr).Info("delayed event could not be sent")
		body := map[string]any{"errcode": "M_UNKNOWN", "error": "Internal server error"}
		if mx, ok := mxerr.As(sendErr); ok {
			body = mx.Body()
		}
		b, _ := json.Marshal(body)
		errJSON = sql.NullString{String: string(b), Valid: true}
		reason = "error"
	} else {
		eventID = sql.NullString{String: sent.EventID(), Valid: true}
	}
	// The outcome is recorded even if the request that asked for the send
	// has gone away.
	rctx := context.WithoutCancel(ctx)
	if _, err := s.db.ExecContext(rctx, `UPDATE delayed_events
		SET processing = 0, finalised_ts = $1, outcome = 'send', reason = $2, event_id = $3, error = $4
		WHERE delay_id = $5`, time.Now().UnixMilli(), reason, eventID, errJSON, delayID); err != nil {
		return fmt.Errorf("delayed events: record outcome of %s: %w", delayID, err)
	}
	if sendErr != nil {
		return sendErr
	}
	if req.StateKey != nil {
		if err := s.StateChanged(rctx, ev.roomID, ev.evType, *req.StateKey, ev.userID); err != nil {
			log.WithError(err).Warn("cancelling delayed events for the state just sent")
		}
	}
	return nil
}

type pending struct{ userID, deviceID, roomID, evType string }

// prune deletes finalised events older than the retention period.
func (s *Service) prune(ctx context.Context) error {
	cutoff := time.Now().Add(-s.cfg.Retention).UnixMilli()
	if _, err := s.db.ExecContext(ctx,
		`DELETE FROM delayed_events WHERE finalised_ts IS NOT NULL AND finalised_ts < $1`, cutoff); err != nil {
		return fmt.Errorf("delayed events: prune: %w", err)
	}
	return nil
}

// newDelayID is a random ID: whoever knows it can act on the event once
// authenticated as its owner, and nobody should guess another's.
func newDelayID() string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return "syd_" + string(b)
}
