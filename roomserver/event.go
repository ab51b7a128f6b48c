package roomserver

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/jsonx"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Event is a stored event with what the server knows about it beyond the
// PDU: its stream position and the unsigned data clients are shown.
type Event struct {
	gomatrixserverlib.PDU
	RoomID     string
	StreamPos  int64
	StateGroup int64  // the state after this event
	RedactedBy string // the redaction event's ID, if redacted
	// PrevContent and ReplacesState describe the state event this one
	// replaced, for unsigned.prev_content.
	PrevContent   json.RawMessage
	PrevSender    string
	ReplacesState string
	// TxnID is the client transaction ID, shown only to the sending device.
	TxnUser, TxnDevice, TxnID string
	// Origin is the server that sent us the event, "" for our own events;
	// Forward marks a remote event we must send on to the room's other
	// servers. Neither is stored: they matter only as the event commits.
	Origin  spec.ServerName
	Forward bool
}

// unsignedExtra is what the events table's unsigned column holds.
type unsignedExtra struct {
	PrevContent   json.RawMessage `json:"prev_content,omitempty"`
	PrevSender    string          `json:"prev_sender,omitempty"`
	ReplacesState string          `json:"replaces_state,omitempty"`
	// The client transaction that sent the event, for
	// unsigned.transaction_id.
	TxnUser   string `json:"txn_user,omitempty"`
	TxnDevice string `json:"txn_device,omitempty"`
	TxnID     string `json:"txn_id,omitempty"`
}

// ClientEvent is the spec's ClientEvent format.
// https://spec.matrix.org/v1.19/client-server-api/#room-event-format
type ClientEvent struct {
	Content        json.RawMessage `json:"content"`
	EventID        string          `json:"event_id"`
	OriginServerTS int64           `json:"origin_server_ts"`
	RoomID         string          `json:"room_id"`
	Sender         string          `json:"sender"`
	StateKey       *string         `json:"state_key,omitempty"`
	Type           string          `json:"type"`
	Redacts        string          `json:"redacts,omitempty"`
	Unsigned       map[string]any  `json:"unsigned,omitempty"`
}

// Viewer says who is looking at an event, for the fields only the sender's
// device sees.
type Viewer struct {
	UserID, DeviceID string
}

// ToClient formats ev for a client. redaction is the event that redacted
// ev, if any (it goes in unsigned.redacted_because). Events of timelines
// go through Service.ClientEvents, which adds aggregations and the
// viewer's membership.
func (ev *Event) ToClient(viewer Viewer, redaction *Event) ClientEvent {
	content, withheld := servable(ev.Content())
	ce := ClientEvent{
		Content:        content,
		EventID:        ev.EventID(),
		OriginServerTS: int64(ev.OriginServerTS()),
		RoomID:         ev.RoomID,
		Sender:         string(ev.SenderID()),
		StateKey:       ev.StateKey(),
		Type:           ev.Type(),
		Unsigned:       map[string]any{},
	}
	if ev.Type() == "m.room.redaction" {
		ce.Redacts = ev.Redacts()
		// Room v11+ carries redacts in content; clients read either.
		if ce.Redacts == "" {
			var c struct {
				Redacts string `json:"redacts"`
			}
			_ = json.Unmarshal(ev.Content(), &c)
			ce.Redacts = c.Redacts
		}
	}
	age := time.Now().UnixMilli() - int64(ev.OriginServerTS())
	if age < 0 {
		age = 0
	}
	ce.Unsigned["age"] = age
	if ev.ReplacesState != "" {
		ce.Unsigned["replaces_state"] = ev.ReplacesState
		if prev, bad := servable(ev.PrevContent); len(prev) > 0 && !bad {
			ce.Unsigned["prev_content"] = prev
			ce.Unsigned["prev_sender"] = ev.PrevSender
		}
	}
	if ev.TxnID != "" && viewer.UserID == ev.TxnUser && viewer.DeviceID == ev.TxnDevice {
		ce.Unsigned["transaction_id"] = ev.TxnID
	}
	if redaction != nil {
		ce.Unsigned["redacted_because"] = redaction.ToClient(Viewer{}, nil)
	}
	if withheld {
		ce.Unsigned[WithheldKey] = true
	}
	if ce.Content == nil {
		ce.Content = json.RawMessage("{}")
	}
	return ce
}

// WithheldKey marks, in unsigned, an event whose content is withheld
// because it cannot be served (see servable).
const WithheldKey = "io.tessera.withheld"

// servable is content as it may go to a client: content stored before the
// edges refused invalid UTF-8, lone surrogate escapes and deep nesting
// (see jsonx) is replaced by {} (withheld is true), so that one such
// event cannot break, for everyone who can see it, the /sync or
// /messages response it is part of, nor the clients that parse it.
func servable(content json.RawMessage) (_ json.RawMessage, withheld bool) {
	if len(content) == 0 || jsonx.Validate(content, jsonx.MaxDepth) == nil {
		return content, false
	}
	return json.RawMessage("{}"), true
}

// eventCache keeps recently used events in memory. Events are immutable
// except for redaction, which drops the cached entry.
//
// A read that loaded an event from the database just before its redaction
// committed must not put the unredacted copy back after the drop, or the
// original would be served again. So every drop bumps a generation, and a
// loaded event is cached only if it was not dropped after its read began.
type eventCache struct {
	mu     sync.Mutex
	max    int
	events map[string]*Event

	gen       uint64            // bumped by every forget
	forgotten map[string]uint64 // event ID -> generation of its last forget
	floor     uint64            // forgets up to here are no longer remembered
}

// maxForgotten bounds the memory of recent forgets.
const maxForgotten = 4096

func newEventCache(max int) *eventCache {
	return &eventCache{max: max, events: make(map[string]*Event, max), forgotten: map[string]uint64{}}
}

// generation is taken before a database read, for putLoaded.
func (c *eventCache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// putLoaded caches an event read from the database by a read that began at
// generation start, unless the event was dropped since (or may have been).
func (c *eventCache) putLoaded(ev *Event, start uint64) {
	c.mu.Lock()
	stale := start < c.floor
	if g, ok := c.forgotten[ev.EventID()]; ok && g > start {
		stale = true
	}
	c.mu.Unlock()
	if !stale {
		c.put(ev)
	}
}

func (c *eventCache) get(id string) *Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.events[id]
}

func (c *eventCache) put(ev *Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.events) >= c.max {
		// Drop an arbitrary tenth: cheaper than LRU bookkeeping on every
		// read, and the hot events (current state, recent timeline) come
		// straight back.
		n := c.max / 10
		for k := range c.events {
			delete(c.events, k)
			if n--; n <= 0 {
				break
			}
		}
	}
	c.events[ev.EventID()] = ev
}

func (c *eventCache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.events, id)
	c.gen++
	if len(c.forgotten) >= maxForgotten {
		// Forget the forgets; reads older than this are not cached.
		clear(c.forgotten)
		c.floor = c.gen
	}
	c.forgotten[id] = c.gen
}

const eventColumns = `e.event_id, e.room_id, e.stream_pos, e.state_group, e.json, e.unsigned, e.redacted_by, r.room_version`

// scanEvent reads one row of eventColumns.
func scanEvent(row interface{ Scan(...any) error }) (*Event, error) {
	var (
		eventID, roomID, js, version string
		unsigned, redactedBy         sql.NullString
		pos, group                   int64
	)
	if err := row.Scan(&eventID, &roomID, &pos, &group, &js, &unsigned, &redactedBy, &version); err != nil {
		return nil, err
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(version))
	if err != nil {
		return nil, err
	}
	pdu, err := verImpl.NewEventFromTrustedJSONWithEventID(eventID, []byte(js), redactedBy.Valid)
	if err != nil {
		return nil, fmt.Errorf("parse stored event %s: %w", eventID, err)
	}
	ev := &Event{PDU: pdu, RoomID: roomID, StreamPos: pos, StateGroup: group, RedactedBy: redactedBy.String}
	if unsigned.Valid {
		var u unsignedExtra
		if err := json.Unmarshal([]byte(unsigned.String), &u); err == nil {
			ev.PrevContent, ev.PrevSender, ev.ReplacesState = u.PrevContent, u.PrevSender, u.ReplacesState
			ev.TxnUser, ev.TxnDevice, ev.TxnID = u.TxnUser, u.TxnDevice, u.TxnID
		}
	}
	return ev, nil
}

// events loads events by ID, from the cache where it can. Missing IDs are
// left out of the result.
func (s *Service) events(ctx context.Context, q database.Querier, ids []string) (map[string]*Event, error) {
	out := make(map[string]*Event, len(ids))
	var missing []string
	for _, id := range ids {
		if ev := s.cache.get(id); ev != nil {
			out[id] = ev
		} else {
			missing = append(missing, id)
		}
	}
	start := s.cache.generation()
	for len(missing) > 0 {
		chunk := missing
		if len(chunk) > 500 {
			chunk = chunk[:500]
		}
		missing = missing[len(chunk):]
		args := make([]any, len(chunk))
		ph := make([]string, len(chunk))
		for i, id := range chunk {
			args[i] = id
			ph[i] = fmt.Sprintf("$%d", i+1)
		}
		rows, err := q.QueryContext(ctx, `SELECT `+eventColumns+` FROM events e JOIN rooms r ON r.room_id = e.room_id
			WHERE e.event_id IN (`+strings.Join(ph, ",")+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("load events: %w", err)
		}
		for rows.Next() {
			ev, err := scanEvent(rows)
			if err != nil {
				rows.Close()
				return nil, err
			}
			s.cache.putLoaded(ev, start)
			out[ev.EventID()] = ev
		}
		if err := rows.Close(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// queryEvents runs a query that selects event IDs and loads those events,
// in the query's order.
func (s *Service) queryEvents(ctx context.Context, query string, args ...any) ([]*Event, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
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
	evs, err := s.events(ctx, s.db, ids)
	if err != nil {
		return nil, err
	}
	out := make([]*Event, 0, len(ids))
	for _, id := range ids {
		if ev, ok := evs[id]; ok {
			out = append(out, ev)
		}
	}
	return out, nil
}

// event loads one event by ID; M_NOT_FOUND if unknown.
func (s *Service) event(ctx context.Context, id string) (*Event, error) {
	evs, err := s.events(ctx, s.db, []string{id})
	if err != nil {
		return nil, err
	}
	ev, ok := evs[id]
	if !ok {
		return nil, mxerr.NotFound("Event not found")
	}
	return ev, nil
}

func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }
