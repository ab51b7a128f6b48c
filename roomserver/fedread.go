package roomserver

// Federated reads of a room's history. Inbound: what other servers read of
// a room, the state at an event, an event's auth chain, history
// (backfill) and the space hierarchy. Outbound: Backfill fetches the
// history from before we joined from another server.
// https://spec.matrix.org/v1.19/server-server-api/#retrieving-events
// https://spec.matrix.org/v1.19/server-server-api/#backfilling-and-retrieving-missing-events

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// MaxBackfill bounds the events one backfill request gets, as in Synapse:
// a server wanting more asks again from the oldest it got.
const MaxBackfill = 100

// checkServerCanRead lets a server read a room's events and state if it
// has a member joined to the room, or if anyone may read the room's
// history (world_readable, as for a client peeking). Anyone else gets 403
// M_FORBIDDEN, unknown rooms included, so that a room's existence does not
// leak.
func (s *Service) checkServerCanRead(ctx context.Context, roomID string, origin spec.ServerName) error {
	ok, err := s.serverInRoom(ctx, roomID, origin)
	if err != nil {
		return err
	}
	if ok {
		return nil
	}
	readable, err := s.worldReadable(ctx, roomID)
	if err != nil {
		return err
	}
	if !readable {
		return mxerr.Forbidden("Your server has no member in this room")
	}
	return nil
}

// worldReadable reports whether the room's current history visibility is
// world_readable.
func (s *Service) worldReadable(ctx context.Context, roomID string) (bool, error) {
	var id string
	err := s.db.QueryRowContext(ctx, `SELECT event_id FROM current_state WHERE room_id = $1 AND type = $2 AND state_key = ''`,
		roomID, spec.MRoomHistoryVisibility).Scan(&id)
	if isNoRows(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("history visibility: %w", err)
	}
	ev, err := s.event(ctx, id)
	if err != nil {
		return false, err
	}
	return historyVisibility(ev.Content()) == spec.WorldReadable, nil
}

// roomEvent loads an event of the room; 404 M_NOT_FOUND for an unknown
// event or one of another room.
func (s *Service) roomEvent(ctx context.Context, roomID, eventID string) (*Event, error) {
	ev, err := s.event(ctx, eventID)
	if err != nil {
		return nil, err
	}
	if ev.RoomID != roomID {
		return nil, mxerr.NotFound("Event not found in this room")
	}
	return ev, nil
}

// stateBefore is the state before ev. Every event stored with state keeps
// the state after it (its state_group): for a non-state event that is the
// state before it too; a state event is taken back out of its own state.
// Outliers without state (the state and auth events a join brought) have
// none to give: 404.
func (s *Service) stateBefore(ctx context.Context, ev *Event) (map[tuple]*Event, error) {
	if ev.StateGroup == 0 {
		return nil, mxerr.NotFound("The state at this event is not known here")
	}
	if ev.StateKey() != nil {
		return s.stateBeforeStateEvent(ctx, ev)
	}
	ids, err := s.stateOfGroup(ctx, s.db, ev.StateGroup)
	if err != nil {
		return nil, err
	}
	return s.stateEvents(ctx, s.db, ids)
}

// StateForServer answers GET /state and /state_ids: the state of the room
// before an event, and the auth chain of that state.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1stateroomid
func (s *Service) StateForServer(ctx context.Context, origin spec.ServerName, roomID, eventID string) (state, authChain []*Event, err error) {
	if err := s.checkServerCanRead(ctx, roomID, origin); err != nil {
		return nil, nil, err
	}
	ev, err := s.roomEvent(ctx, roomID, eventID)
	if err != nil {
		return nil, nil, err
	}
	st, err := s.stateBefore(ctx, ev)
	if err != nil {
		return nil, nil, err
	}
	state = SortByStreamTuple(st)
	if authChain, err = s.authChain(ctx, state); err != nil {
		return nil, nil, err
	}
	return state, authChain, nil
}

// EventAuthForServer answers GET /event_auth: the auth chain of an event.
// From room version 12 the create event, which the room ID names, is part
// of every event's auth events (AuthEventIDs includes it), so it is in the
// chain too.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1event_authroomideventid
func (s *Service) EventAuthForServer(ctx context.Context, origin spec.ServerName, roomID, eventID string) ([]*Event, error) {
	if err := s.checkServerCanRead(ctx, roomID, origin); err != nil {
		return nil, err
	}
	ev, err := s.roomEvent(ctx, roomID, eventID)
	if err != nil {
		return nil, err
	}
	return s.authChain(ctx, []*Event{ev})
}

// BackfillForServer answers GET /backfill: the events from (included) and
// those before them, walking prev_events back, newest first (by depth),
// at most limit of them.
//
// The walk keeps to the room's history: timeline events, and outliers
// whose state we know (soft-failed events, which the spec says backfill
// returns when the walk reaches them, and history we backfilled
// ourselves). Outliers without state, the state and auth events a join
// brought, are not history we hold; the walk stops there.
//
// Events the asking server may not see, by the history visibility at each
// (it had no member then and the room was not shared), are sent redacted,
// as Synapse's filter_events_for_server does.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1backfillroomid
func (s *Service) BackfillForServer(ctx context.Context, origin spec.ServerName, roomID string, from []string, limit int) ([]*Event, error) {
	if err := s.checkServerCanRead(ctx, roomID, origin); err != nil {
		return nil, err
	}
	limit = min(max(limit, 0), MaxBackfill)
	q := &eventQueue{}
	seen := map[string]bool{}
	push := func(ids []string) error {
		var fresh []string
		for _, id := range ids {
			if !seen[id] {
				seen[id] = true
				fresh = append(fresh, id)
			}
		}
		if len(fresh) == 0 {
			return nil
		}
		evs, err := s.events(ctx, s.db, fresh)
		if err != nil {
			return err
		}
		for _, id := range fresh {
			if ev := evs[id]; ev != nil && ev.RoomID == roomID && inHistory(ev) {
				heap.Push(q, ev)
			}
		}
		return nil
	}
	if err := push(from); err != nil {
		return nil, err
	}
	var out []*Event
	for q.Len() > 0 && len(out) < limit {
		ev := heap.Pop(q).(*Event)
		out = append(out, ev)
		if err := push(ev.PrevEventIDs()); err != nil {
			return nil, err
		}
	}
	return s.filterForServer(ctx, origin, out)
}

// inHistory reports whether a stored event is part of the room's history
// as we serve it: in the timeline, or an outlier whose state we know.
func inHistory(ev *Event) bool { return ev.StreamPos > 0 || ev.StateGroup != 0 }

// eventQueue is a max-heap of events, newest (deepest) first.
type eventQueue []*Event

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	if q[i].Depth() != q[j].Depth() {
		return q[i].Depth() > q[j].Depth()
	}
	return q[i].StreamPos > q[j].StreamPos
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(*Event)) }
func (q *eventQueue) Pop() any {
	old := *q
	ev := old[len(old)-1]
	*q = old[:len(old)-1]
	return ev
}

// serverSight is what a server may see at one state of a room.
type serverSight struct {
	visibility      string
	joined, invited bool // a member of the server was joined, invited
}

// filterForServer returns evs as origin may see them: an event whose
// history visibility is joined or invited is redacted unless the server
// had a member joined (or, for invited, invited) at it.
// https://spec.matrix.org/v1.19/client-server-api/#history-visibility
func (s *Service) filterForServer(ctx context.Context, origin spec.ServerName, evs []*Event) ([]*Event, error) {
	byGroup := map[int64]serverSight{}
	out := make([]*Event, 0, len(evs))
	for _, ev := range evs {
		sight, ok := byGroup[ev.StateGroup]
		if !ok {
			var err error
			if sight, err = s.sightAt(ctx, origin, ev.StateGroup); err != nil {
				return nil, err
			}
			byGroup[ev.StateGroup] = sight
		}
		vis := sight.visibility
		if ev.Type() == spec.MRoomHistoryVisibility && ev.StateKeyEquals("") && len(ev.PrevContent) > 0 {
			// As for users (visibility.go): a change of visibility is
			// judged by the more permissive of the two settings.
			if old := historyVisibility(ev.PrevContent); visibilityRank[old] < visibilityRank[vis] {
				vis = old
			}
		}
		visible := vis == spec.WorldReadable || vis == "shared" || sight.joined || (vis == "invited" && sight.invited)
		if visible || ev.Redacted() {
			out = append(out, ev)
			continue
		}
		red, err := redactedCopy(ev)
		if err != nil {
			return nil, err
		}
		out = append(out, red)
	}
	return out, nil
}

// sightAt reads the history visibility and origin's memberships in a
// state group.
func (s *Service) sightAt(ctx context.Context, origin spec.ServerName, group int64) (serverSight, error) {
	sight := serverSight{visibility: "shared"}
	st, err := s.stateOfGroup(ctx, s.db, group)
	if err != nil {
		return sight, err
	}
	var ids []string
	for t, id := range st {
		if t.Type == spec.MRoomHistoryVisibility && t.StateKey == "" {
			ids = append(ids, id)
		} else if t.Type == spec.MRoomMember && userDomain(t.StateKey) == origin {
			ids = append(ids, id)
		}
	}
	evs, err := s.events(ctx, s.db, ids)
	if err != nil {
		return sight, err
	}
	for _, ev := range evs {
		if ev.Type() == spec.MRoomHistoryVisibility {
			sight.visibility = historyVisibility(ev.Content())
			continue
		}
		switch m, _ := ev.Membership(); m {
		case spec.Join:
			sight.joined = true
		case spec.Invite:
			sight.invited = true
		}
	}
	return sight, nil
}

func userDomain(userID string) spec.ServerName {
	u, err := spec.NewUserID(userID, true)
	if err != nil {
		return ""
	}
	return u.Domain()
}

// redactedCopy is ev with its content stripped as a redaction would.
func redactedCopy(ev *Event) (*Event, error) {
	verImpl, err := gomatrixserverlib.GetRoomVersion(ev.Version())
	if err != nil {
		return nil, err
	}
	js, err := verImpl.RedactEventJSON(ev.JSON())
	if err != nil {
		return nil, fmt.Errorf("redact %s: %w", ev.EventID(), err)
	}
	pdu, err := verImpl.NewEventFromTrustedJSONWithEventID(ev.EventID(), js, true)
	if err != nil {
		return nil, fmt.Errorf("redact %s: %w", ev.EventID(), err)
	}
	return &Event{PDU: pdu, RoomID: ev.RoomID, StreamPos: ev.StreamPos, StateGroup: ev.StateGroup}, nil
}

// SpaceHierarchy is GET /hierarchy's answer over federation: the room, and
// those of its children (its m.space.child state) this server knows.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1hierarchyroomid
type SpaceHierarchy struct {
	Room     HierarchyRoom   `json:"room"`
	Children []HierarchyRoom `json:"children"`
	// InaccessibleChildren are children we know that the asking server
	// could neither peek nor join.
	InaccessibleChildren []string `json:"inaccessible_children"`
}

// HierarchyRoom is a room's summary with its m.space.child events.
type HierarchyRoom struct {
	RoomSummary
	ChildrenState []ChildState `json:"children_state"`
}

// ChildState is an m.space.child event in stripped form, with its
// origin_server_ts.
type ChildState struct {
	Type           string          `json:"type"`
	StateKey       string          `json:"state_key"`
	Content        json.RawMessage `json:"content"`
	Sender         string          `json:"sender"`
	OriginServerTS int64           `json:"origin_server_ts"`
}

// SpaceHierarchyForServer answers another server's GET /hierarchy. The
// room must be one the server could peek or join, or 404 M_NOT_FOUND (as
// for an unknown room, so that private rooms do not leak). Children we do
// not know are left out, as the spec says; children the server could not
// peek or join are listed by ID only. Unlike the client API, this one
// does not paginate nor go deeper than the room's children: the asking
// server walks the tree itself.
func (s *Service) SpaceHierarchyForServer(ctx context.Context, origin spec.ServerName, roomID string, suggestedOnly bool) (*SpaceHierarchy, error) {
	infos, err := s.roomInfos(ctx, `r.room_id = $1`, roomID)
	if err != nil {
		return nil, err
	}
	info := infos[roomID]
	if info == nil {
		return nil, mxerr.NotFound("Room not found")
	}
	root, err := s.hierarchyRoom(ctx, info, suggestedOnly)
	if err != nil {
		return nil, err
	}
	if ok, err := s.serverMayPeekOrJoin(ctx, origin, root.RoomSummary); err != nil {
		return nil, err
	} else if !ok {
		return nil, mxerr.NotFound("Room not found or not accessible to your server")
	}
	resp := &SpaceHierarchy{Room: root, Children: []HierarchyRoom{}, InaccessibleChildren: []string{}}
	for _, c := range root.ChildrenState {
		if c.StateKey == roomID {
			continue
		}
		infos, err := s.roomInfos(ctx, `r.room_id = $1`, c.StateKey)
		if err != nil {
			return nil, err
		}
		info := infos[c.StateKey]
		if info == nil {
			continue // nothing to tell of it
		}
		child, err := s.hierarchyRoom(ctx, info, suggestedOnly)
		if err != nil {
			return nil, err
		}
		ok, err := s.serverMayPeekOrJoin(ctx, origin, child.RoomSummary)
		if err != nil {
			return nil, err
		}
		if ok {
			resp.Children = append(resp.Children, child)
		} else {
			resp.InaccessibleChildren = append(resp.InaccessibleChildren, c.StateKey)
		}
	}
	return resp, nil
}

// hierarchyRoom summarises a room with its valid m.space.child events
// (those with a non-empty via), suggested ones only if asked, in the
// spec's order: by order, then origin_server_ts, then room ID.
// https://spec.matrix.org/v1.19/client-server-api/#mspacechild
func (s *Service) hierarchyRoom(ctx context.Context, info *roomInfo, suggestedOnly bool) (HierarchyRoom, error) {
	hr := HierarchyRoom{RoomSummary: RoomSummary{
		PublicRoom:  info.publicRoom(),
		RoomVersion: info.version,
		Encryption:  info.contentString(spec.MRoomEncryption, "algorithm"),
	}, ChildrenState: []ChildState{}}
	switch hr.JoinRule {
	case spec.Restricted, spec.KnockRestricted:
		hr.AllowedRoomIDs = allowedRoomIDs(info.state[spec.MRoomJoinRules])
	}
	evs, err := s.queryEvents(ctx, `SELECT event_id FROM current_state WHERE room_id = $1 AND type = $2`, info.roomID, spec.MSpaceChild)
	if err != nil {
		return hr, fmt.Errorf("space children: %w", err)
	}
	type child struct {
		ChildState
		order string
	}
	var children []child
	for _, ev := range evs {
		var c struct {
			Via       []string `json:"via"`
			Order     any      `json:"order"`
			Suggested bool     `json:"suggested"`
		}
		if json.Unmarshal(ev.Content(), &c) != nil || len(c.Via) == 0 || (suggestedOnly && !c.Suggested) || ev.StateKey() == nil {
			continue
		}
		order, _ := c.Order.(string)
		if !validChildOrder(order) {
			order = ""
		}
		children = append(children, child{ChildState: ChildState{
			Type: ev.Type(), StateKey: *ev.StateKey(), Content: ev.Content(),
			Sender: string(ev.SenderID()), OriginServerTS: int64(ev.OriginServerTS()),
		}, order: order})
	}
	sort.Slice(children, func(i, j int) bool {
		a, b := children[i], children[j]
		// Children with an order come first, by it.
		if (a.order != "") != (b.order != "") {
			return a.order != ""
		}
		if a.order != b.order {
			return a.order < b.order
		}
		if a.OriginServerTS != b.OriginServerTS {
			return a.OriginServerTS < b.OriginServerTS
		}
		return a.StateKey < b.StateKey
	})
	for _, c := range children {
		hr.ChildrenState = append(hr.ChildrenState, c.ChildState)
	}
	return hr, nil
}

// validChildOrder: an m.space.child order is at most 50 printable ASCII
// characters; any other is ignored.
func validChildOrder(o string) bool {
	if len(o) == 0 || len(o) > 50 {
		return false
	}
	for _, r := range o {
		if r < 0x20 || r > 0x7e {
			return false
		}
	}
	return true
}

// serverMayPeekOrJoin reports whether a server could peek into or join a
// room, as Synapse decides for federated /hierarchy: anyone may find a
// room open to the public (join rule public, knock or knock_restricted,
// or world-readable history); a server with a user joined to or invited
// into it may; and for a restricted room, a server with a user in one of
// the rooms its join rule allows.
func (s *Service) serverMayPeekOrJoin(ctx context.Context, origin spec.ServerName, sum RoomSummary) (bool, error) {
	switch sum.JoinRule {
	case spec.Public, spec.Knock, spec.KnockRestricted:
		return true, nil
	}
	if sum.WorldReadable {
		return true, nil
	}
	if ok, err := s.serverHasMember(ctx, sum.RoomID, origin, spec.Join, spec.Invite); err != nil || ok {
		return ok, err
	}
	if sum.JoinRule == spec.Restricted {
		for _, id := range sum.AllowedRoomIDs {
			if ok, err := s.serverHasMember(ctx, id, origin, spec.Join); err != nil || ok {
				return ok, err
			}
		}
	}
	return false, nil
}

// serverHasMember reports whether a user of server has one of the
// memberships in the room.
func (s *Service) serverHasMember(ctx context.Context, roomID string, server spec.ServerName, memberships ...string) (bool, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT user_id, membership FROM memberships WHERE room_id = $1`, roomID)
	if err != nil {
		return false, fmt.Errorf("memberships: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var uid, m string
		if err := rows.Scan(&uid, &m); err != nil {
			return false, err
		}
		if contains(memberships, m) && userDomain(uid) == server {
			return true, nil
		}
	}
	return false, rows.Err()
}

// HistoryFetcher asks other servers for a room's history. The federation
// edge implements it and checks the hashes and signatures of every event
// that comes back.
type HistoryFetcher interface {
	// Backfill is GET /backfill: up to limit events, from (included)
	// backwards.
	Backfill(ctx context.Context, server spec.ServerName, roomID string, from []string, limit int) ([]gomatrixserverlib.PDU, error)
	// StateBefore is GET /state: the room's state before an event, and
	// the auth chain of that state.
	StateBefore(ctx context.Context, server spec.ServerName, roomID, eventID string) (state, authChain []gomatrixserverlib.PDU, err error)
}

// Backfilled events are older than our join: they are stored as outliers,
// with negative stream positions, so that no sync ever takes them for new
// events, and with the state at each (fetched where we lack it), so that
// history visibility applies to them as to any event. What tells them from
// the other outliers (the state and auth events a join brought, soft
// failed events), so that /messages shows them, is the backfilled_events
// table (migration 5).

// HistorySQL is the condition that the event e (an alias of events) is in
// the room's history as /messages pages through it: the timeline, and
// what Backfill stored.
const HistorySQL = `(e.stream_pos > 0 OR e.event_id IN (SELECT event_id FROM backfilled_events))`

// maxBackwardExtremities bounds the events one backfill request asks
// before, as in Synapse.
const maxBackwardExtremities = 5

// backfillLocks serialises the backfills of each room: two /messages
// requests at the bottom of the same history would otherwise fetch and
// store the same events at once.
var backfillLocks sync.Map // room ID -> *sync.Mutex

// Backfill fetches up to limit events of a room's history from before the
// events we have at depth at.Depth or below: the events of our history
// whose prev_events we lack (for a room joined over federation, the join
// at first). It asks the servers in the room, the servers of those events'
// senders first, until one answers, stores what comes back as history,
// and returns how many events it added to the history.
//
// Each event is checked as the spec says for events received over
// federation, against its auth events and the state before it: the state
// after its prev_events when we hold them, else the state the server says
// it had (GET /state). Events that fail are rejected and left out.
// https://spec.matrix.org/v1.19/server-server-api/#backfilling-and-retrieving-missing-events
func (s *Service) Backfill(ctx context.Context, roomID string, at Token, limit int, fetch HistoryFetcher) (int, error) {
	mu, _ := backfillLocks.LoadOrStore(roomID, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()

	ext, err := s.backwardExtremities(ctx, roomID, at.Depth)
	if err != nil || len(ext) == 0 {
		return 0, err
	}
	servers, err := s.ServersInRoom(ctx, roomID)
	if err != nil {
		return 0, err
	}
	// We ask from the prev_events we lack, not from our events that cite
	// them: the server answers the events it starts from too, and every
	// one we already hold would take a place of the limit (with many
	// branches, as a partition leaves, all of them).
	from, err := s.missingPrevs(ctx, ext)
	if err != nil {
		return 0, err
	}
	var order []spec.ServerName
	for _, ev := range ext {
		if d := userDomain(string(ev.SenderID())); slices.Contains(servers, d) && !slices.Contains(order, d) {
			order = append(order, d)
		}
	}
	for _, d := range servers {
		if !slices.Contains(order, d) {
			order = append(order, d)
		}
	}
	limit = min(max(limit, 1), MaxBackfill)
	var errs []error
	for _, srv := range order {
		if srv == s.cfg.ServerName {
			continue
		}
		pdus, err := fetch.Backfill(ctx, srv, roomID, from, limit)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", srv, err))
			continue
		}
		return s.storeBackfill(ctx, srv, roomID, pdus, fetch)
	}
	if len(errs) > 0 {
		return 0, fmt.Errorf("backfill %s: %w", roomID, errors.Join(errs...))
	}
	return 0, nil
}

// missingPrevs are the prev_events of evs that are not in the room's
// history here (unknown, or outliers without state) and not rejected.
func (s *Service) missingPrevs(ctx context.Context, evs []*Event) ([]string, error) {
	var ids []string
	for _, ev := range evs {
		for _, id := range ev.PrevEventIDs() {
			if !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
	}
	have, err := s.events(ctx, s.db, ids)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, id := range ids {
		if ev := have[id]; ev != nil && inHistory(ev) {
			continue
		}
		if rejected, err := s.anyRejected(ctx, []string{id}); err != nil {
			return nil, err
		} else if !rejected {
			out = append(out, id)
		}
	}
	return out, nil
}

// backwardExtremities are the events of the room's history at depth at
// most maxDepth, newest first, with a prev_event we do not hold the state
// at (unknown, or an outlier without state) and have not rejected.
func (s *Service) backwardExtremities(ctx context.Context, roomID string, maxDepth int64) ([]*Event, error) {
	evs, err := s.queryEvents(ctx, `SELECT e.event_id FROM events e
		WHERE e.room_id = $1 AND e.depth <= $2 AND `+HistorySQL+`
		AND EXISTS (SELECT 1 FROM event_edges ed WHERE ed.event_id = e.event_id
			AND NOT EXISTS (SELECT 1 FROM events p WHERE p.event_id = ed.prev_event_id AND (p.stream_pos > 0 OR p.state_group != 0))
			AND NOT EXISTS (SELECT 1 FROM rejected_events r WHERE r.event_id = ed.prev_event_id))
		ORDER BY e.depth DESC, e.stream_pos DESC LIMIT $3`, roomID, maxDepth, maxBackwardExtremities)
	if err != nil {
		return nil, fmt.Errorf("backward extremities: %w", err)
	}
	return evs, nil
}

// backfillBatch is one backfill response on its way into the database.
type backfillBatch struct {
	s      *Service
	roomID string
	ver    gomatrixserverlib.IRoomVersion
	srv    spec.ServerName
	fetch  HistoryFetcher

	// known holds the events this batch stores or has looked up, by ID.
	known map[string]*Event
	// pending are the events to store, in order; pendingIdx finds them.
	pending    []*pendingEvent
	pendingIdx map[string]int
	// existing are outliers we held without state that the batch gave a
	// state (copies: cached events are shared).
	existing []*Event
	// marks are the events that become history.
	marks []string
	// groups are the state groups the batch makes; groupState and
	// groupChain describe them and the stored groups read.
	groups     []*newStateGroup
	groupState map[int64]map[tuple]*Event
	groupChain map[int64]int
	// fetchFailures counts the events whose state the server did not give.
	fetchFailures int
	// redactedBy maps events the batch redacts to the redaction.
	redactedBy map[string]string
	// updates are stored events that a redaction in the batch strips.
	updates []*redaction
}

// storeBackfill checks and stores the events of one backfill response,
// oldest first, and returns how many became history.
func (s *Service) storeBackfill(ctx context.Context, srv spec.ServerName, roomID string, pdus []gomatrixserverlib.PDU, fetch HistoryFetcher) (int, error) {
	ver, err := s.RoomVersion(ctx, roomID)
	if err != nil {
		return 0, err
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil {
		return 0, err
	}
	b := &backfillBatch{s: s, roomID: roomID, ver: verImpl, srv: srv, fetch: fetch,
		known: map[string]*Event{}, pendingIdx: map[string]int{}, groupState: map[int64]map[tuple]*Event{},
		groupChain: map[int64]int{}, redactedBy: map[string]string{}}
	var batch []gomatrixserverlib.PDU
	seen := map[string]bool{}
	for _, p := range pdus {
		if p.RoomID().String() != roomID || p.Version() != ver || seen[p.EventID()] {
			continue
		}
		seen[p.EventID()] = true
		batch = append(batch, p)
	}
	// Oldest first: each event's state comes from those before it.
	sort.SliceStable(batch, func(i, j int) bool { return batch[i].Depth() < batch[j].Depth() })
	ids := make([]string, len(batch))
	for i, p := range batch {
		ids[i] = p.EventID()
	}
	have, err := s.events(ctx, s.db, ids)
	if err != nil {
		return 0, err
	}
	for _, p := range batch {
		ex := have[p.EventID()]
		if ex != nil && inHistory(ex) {
			// In the timeline, backfilled before, or soft failed (which
			// stays out of the history clients see).
			b.known[ex.EventID()] = ex
			continue
		}
		if err := b.add(ctx, p, ex); err != nil {
			// The events after this one may need it: stop here and
			// keep what came before.
			s.log.WithError(err).WithField("event_id", p.EventID()).WithField("room_id", roomID).Warn("backfill stopped")
			break
		}
	}
	if err := b.redactions(ctx); err != nil {
		return 0, err
	}
	if err := b.write(ctx); err != nil {
		return 0, err
	}
	return len(b.marks), nil
}

// add checks one backfilled event (ex: our outlier copy of it, if any) and
// adds it to the batch. An event that fails its checks is left out, with
// a nil error; an error means the batch can go no further.
func (b *backfillBatch) add(ctx context.Context, p gomatrixserverlib.PDU, ex *Event) error {
	id := p.EventID()
	// The checks in the spec's order: the auth events first, which needs
	// nothing from the network, then the state before the event.
	if ok, err := b.checkAuthEvents(ctx, p); err != nil || !ok {
		return err
	}
	before, beforeGroup, err := b.stateBefore(ctx, p)
	if err != nil {
		var fe *fetchError
		if errors.As(err, &fe) && b.fetchFailures < maxFetchFailures {
			// Later events may not need this one's state; a server
			// that keeps failing ends the batch.
			b.fetchFailures++
			b.s.log.WithError(err).WithField("event_id", id).Info("backfill: skipped an event whose state the server did not give")
			return nil
		}
		return err
	}
	if err := gomatrixserverlib.Allowed(p, &roomState{state: before}, UserIDForSender); err != nil {
		return b.s.rejectQuietly(ctx, &remoteReq{pdu: p, origin: b.srv}, "not allowed by the state before it: "+err.Error())
	}
	var ev *Event
	if ex != nil {
		cp := *ex
		ev = &cp
	} else {
		ev = &Event{PDU: p, RoomID: b.roomID, Origin: b.srv}
	}
	ev.StateGroup = beforeGroup
	if sk := p.StateKey(); sk != nil {
		t := tuple{p.Type(), *sk}
		if prev := before[t]; prev != nil {
			ev.ReplacesState, ev.PrevContent, ev.PrevSender = prev.EventID(), prev.Content(), string(prev.SenderID())
		}
		if ev.StateGroup, err = b.newGroup(ctx, beforeGroup, before, t, ev); err != nil {
			return err
		}
	}
	b.known[id] = ev
	b.marks = append(b.marks, id)
	if ex != nil {
		b.existing = append(b.existing, ev)
	} else {
		b.addPending(&pendingEvent{ev: ev, stateGroup: ev.StateGroup, outlier: true})
	}
	return nil
}

// maxFetchFailures is how many events of a batch may go without the state
// the server should have given before the batch ends.
const maxFetchFailures = 3

// fetchError is a failure to get the state before an event from a server.
type fetchError struct{ err error }

func (e *fetchError) Error() string { return e.err.Error() }
func (e *fetchError) Unwrap() error { return e.err }

// addPending queues an event to store; a backfilled event replaces the
// stateless outlier copy a /state answer may have queued for it.
func (b *backfillBatch) addPending(pe *pendingEvent) {
	if i, ok := b.pendingIdx[pe.ev.EventID()]; ok {
		b.pending[i] = pe
		return
	}
	b.pendingIdx[pe.ev.EventID()] = len(b.pending)
	b.pending = append(b.pending, pe)
}

// checkAuthEvents runs the auth rules on a backfilled event against its
// auth events; an event that fails is rejected.
func (b *backfillBatch) checkAuthEvents(ctx context.Context, p gomatrixserverlib.PDU) (bool, error) {
	rr := &remoteReq{pdu: p, origin: b.srv}
	if rejected, err := b.s.anyRejected(ctx, append([]string{p.EventID()}, p.AuthEventIDs()...)); err != nil || rejected {
		return false, err
	}
	auth, missing, err := b.lookup(ctx, p.AuthEventIDs())
	if err != nil {
		return false, err
	}
	if len(missing) > 0 {
		// Not rejected: another server may yet give us its auth events.
		b.s.log.WithField("event_id", p.EventID()).WithField("missing", missing).Info("backfill: skipped an event with unknown auth events")
		return false, nil
	}
	authPDUs := make([]gomatrixserverlib.PDU, 0, len(auth))
	for _, ev := range auth {
		authPDUs = append(authPDUs, ev.PDU)
	}
	ae, err := gomatrixserverlib.NewAuthEvents(authPDUs)
	if err != nil {
		return false, b.s.rejectQuietly(ctx, rr, err.Error())
	}
	if err := gomatrixserverlib.Allowed(p, ae, UserIDForSender); err != nil {
		return false, b.s.rejectQuietly(ctx, rr, "not allowed by its auth events: "+err.Error())
	}
	return true, nil
}

// rejectQuietly remembers a rejected event; only a failure to do so is an
// error.
func (s *Service) rejectQuietly(ctx context.Context, rr *remoteReq, reason string) error {
	var rej *RejectedError
	if err := s.reject(ctx, rr, reason); err != nil && !errors.As(err, &rej) {
		return err
	}
	return nil
}

// lookup finds events in the batch or the database; missing lists the IDs
// found in neither.
func (b *backfillBatch) lookup(ctx context.Context, ids []string) ([]*Event, []string, error) {
	var out []*Event
	var rest []string
	for _, id := range ids {
		if ev := b.known[id]; ev != nil {
			out = append(out, ev)
		} else {
			rest = append(rest, id)
		}
	}
	if len(rest) == 0 {
		return out, nil, nil
	}
	evs, err := b.s.events(ctx, b.s.db, rest)
	if err != nil {
		return nil, nil, err
	}
	var missing []string
	for _, id := range rest {
		if ev := evs[id]; ev != nil && ev.RoomID == b.roomID {
			out = append(out, ev)
		} else {
			missing = append(missing, id)
		}
	}
	return out, missing, nil
}

// stateBefore is the state before a backfilled event and its group: the
// state after its prev_events when they all have the same one (in a
// linear history, the event before), or else what the server says it was,
// whose events we store as outliers where we lack them. The create event
// has nothing before it (group 0).
func (b *backfillBatch) stateBefore(ctx context.Context, p gomatrixserverlib.PDU) (map[tuple]*Event, int64, error) {
	prevIDs := p.PrevEventIDs()
	if len(prevIDs) == 0 {
		return map[tuple]*Event{}, 0, nil
	}
	prevs, missing, err := b.lookup(ctx, prevIDs)
	if err != nil {
		return nil, 0, err
	}
	groups := map[int64]bool{}
	for _, ev := range prevs {
		groups[ev.StateGroup] = true
	}
	if len(missing) == 0 && len(groups) == 1 && !groups[0] {
		g := prevs[0].StateGroup
		st, err := b.stateOfGroup(ctx, g)
		return st, g, err
	}
	// Unknown prev_events, or branches meeting: ask. (Resolving the
	// branches here would need the auth chains of events not stored yet.)
	state, chain, err := b.fetch.StateBefore(ctx, b.srv, b.roomID, p.EventID())
	if err != nil {
		return nil, 0, &fetchError{fmt.Errorf("state before %s: %w", p.EventID(), err)}
	}
	byID := map[string]gomatrixserverlib.PDU{}
	var order []string
	for _, sp := range slices.Concat(chain, state) {
		if sp.RoomID().String() != b.roomID || sp.Version() != b.ver.Version() || byID[sp.EventID()] != nil {
			continue
		}
		byID[sp.EventID()] = sp
		order = append(order, sp.EventID())
	}
	have, _, err := b.lookup(ctx, order)
	if err != nil {
		return nil, 0, err
	}
	for _, ev := range have {
		b.known[ev.EventID()] = ev
	}
	for _, id := range order {
		if b.known[id] == nil {
			ev := &Event{PDU: byID[id], RoomID: b.roomID, Origin: b.srv}
			b.known[id] = ev
			b.addPending(&pendingEvent{ev: ev, outlier: true})
		}
	}
	before := map[tuple]*Event{}
	for _, sp := range state {
		if sk := sp.StateKey(); sk != nil && byID[sp.EventID()] != nil {
			before[tuple{sp.Type(), *sk}] = b.known[sp.EventID()]
		}
	}
	g := fullGroup(b.s.nextGroupID(), before)
	b.groups = append(b.groups, g)
	b.groupState[g.id], b.groupChain[g.id] = before, 0
	return before, g.id, nil
}

// stateOfGroup is the state of a group of the batch or of the database.
func (b *backfillBatch) stateOfGroup(ctx context.Context, g int64) (map[tuple]*Event, error) {
	if st, ok := b.groupState[g]; ok {
		return st, nil
	}
	ids, err := b.s.stateOfGroup(ctx, b.s.db, g)
	if err != nil {
		return nil, err
	}
	st, err := b.s.stateEvents(ctx, b.s.db, ids)
	if err != nil {
		return nil, err
	}
	b.groupState[g] = st
	return st, nil
}

// newGroup makes the state group after a backfilled state event: a delta
// on the group before it while its chain is short, else a full snapshot.
func (b *backfillBatch) newGroup(ctx context.Context, beforeGroup int64, before map[tuple]*Event, t tuple, ev *Event) (int64, error) {
	after := make(map[tuple]*Event, len(before)+1)
	for k, v := range before {
		after[k] = v
	}
	after[t] = ev
	chain := 0
	if beforeGroup != 0 {
		var ok bool
		if chain, ok = b.groupChain[beforeGroup]; !ok {
			if err := b.s.db.QueryRowContext(ctx, `SELECT chain_len FROM state_groups WHERE group_id = $1`, beforeGroup).Scan(&chain); err != nil {
				return 0, fmt.Errorf("state group %d: %w", beforeGroup, err)
			}
			b.groupChain[beforeGroup] = chain
		}
	}
	g := &newStateGroup{id: b.s.nextGroupID()}
	if beforeGroup == 0 || chain+1 >= maxChainLen {
		g.entries = fullGroup(g.id, after).entries
	} else {
		g.prev, g.chainLen = beforeGroup, chain+1
		g.entries = stateIDs{t: ev.EventID()}
	}
	b.groups = append(b.groups, g)
	b.groupState[g.id], b.groupChain[g.id] = after, g.chainLen
	return g.id, nil
}

// redactions applies redactions across the line between old and new
// history: a redaction we hold (sent after our join, of an event we did
// not have then) strips the backfilled event it targets, and a backfilled
// redaction strips its target, backfilled or stored. Without this a
// backfilled event would show content its sender took back.
func (b *backfillBatch) redactions(ctx context.Context) error {
	reds, err := b.s.queryEvents(ctx, `SELECT event_id FROM events WHERE room_id = $1 AND type = $2`, b.roomID, spec.MRoomRedaction)
	if err != nil {
		return fmt.Errorf("redactions: %w", err)
	}
	for _, id := range b.marks {
		if ev := b.known[id]; ev != nil && ev.Type() == spec.MRoomRedaction {
			reds = append(reds, ev)
		}
	}
	for _, red := range reds {
		if red.Redacted() {
			continue
		}
		targetID := redactsOf(red)
		target := b.known[targetID]
		isBatch := target != nil && slices.Contains(b.marks, targetID)
		if !isBatch {
			// A stored target matters only for a backfilled redaction.
			if !slices.Contains(b.marks, red.EventID()) {
				continue
			}
			if target == nil {
				evs, err := b.s.events(ctx, b.s.db, []string{targetID})
				if err != nil {
					return err
				}
				target = evs[targetID]
			}
		}
		// A stored event already stripped has its redaction; a
		// backfilled one may come stripped by the server that sent it,
		// and still wants to know what redacted it.
		if target == nil || target.RoomID != b.roomID || (!isBatch && target.Redacted()) || b.redactedBy[targetID] != "" {
			continue
		}
		if ok, err := b.mayRedact(ctx, red, target); err != nil {
			return err
		} else if !ok {
			continue
		}
		js, err := b.ver.RedactEventJSON(target.JSON())
		if err != nil {
			return fmt.Errorf("redact %s: %w", targetID, err)
		}
		b.redactedBy[targetID] = red.EventID()
		if i, ok := b.pendingIdx[targetID]; ok && isBatch {
			if !target.Redacted() {
				pdu, err := b.ver.NewEventFromTrustedJSONWithEventID(targetID, js, true)
				if err != nil {
					return err
				}
				b.pending[i].ev.PDU = pdu
			}
			continue
		}
		b.updates = append(b.updates, &redaction{targetID: targetID, redactedJSON: js})
	}
	return nil
}

// redactsOf is the event a redaction redacts (in content from room
// version 11).
func redactsOf(red *Event) string { return red.RedactsID() }

// RedactsID is the event a redaction redacts: the top-level redacts before
// room version 11, content.redacts from it on ("" for other events).
func (red *Event) RedactsID() string {
	if id := red.Redacts(); id != "" {
		return id
	}
	var c struct {
		Redacts string `json:"redacts"`
	}
	_ = json.Unmarshal(red.Content(), &c)
	return c.Redacts
}

// mayRedact: from room version 3 the server checks that a redaction's
// sender may redact the target: its own sender's server may, and so may
// anyone at the redact power level in the state at the redaction.
// https://spec.matrix.org/v1.19/rooms/v3/#handling-redactions
func (b *backfillBatch) mayRedact(ctx context.Context, red, target *Event) (bool, error) {
	if userDomain(string(red.SenderID())) == userDomain(string(target.SenderID())) {
		return true, nil
	}
	if red.StateGroup == 0 {
		return false, nil
	}
	st, err := b.stateOfGroup(ctx, red.StateGroup)
	if err != nil {
		return false, err
	}
	pl, err := powerLevels(&roomState{state: st, version: b.ver})
	if err != nil {
		return false, nil
	}
	return pl.UserLevel(red.SenderID()) >= pl.Redact, nil
}

// write stores the batch in three steps, each safe to cut short: the next
// backfill picks up where a failure left off.
//  1. The state groups and the marks. A group no event uses, or a mark of
//     an event not stored, is harmless; an event stored without its group
//     or its mark would be broken or lost to /messages for good.
//  2. The new events, through the room's sequencer.
//  3. The state of outliers we held, and redactions of stored events.
func (b *backfillBatch) write(ctx context.Context) error {
	s := b.s
	if err := s.db.WithTx(ctx, func(tx *database.Tx) error {
		for _, g := range b.groups {
			if err := writeStateGroup(ctx, tx, b.roomID, g); err != nil {
				return err
			}
		}
		for _, id := range b.marks {
			if _, err := tx.ExecContext(ctx, `INSERT INTO backfilled_events (event_id) VALUES ($1) ON CONFLICT (event_id) DO NOTHING`, id); err != nil {
				return fmt.Errorf("mark backfilled event: %w", err)
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("store backfilled state: %w", err)
	}
	if len(b.pending) > 0 {
		// The committer rewrites the room's forward extremities and
		// current state group with each batch: only in the room's
		// sequencer are the stored ones sure to be the latest.
		if err := s.inSequencer(ctx, b.roomID, func(ctx context.Context) error {
			ext, err := s.Extremities(ctx, b.roomID)
			if err != nil {
				return err
			}
			var group int64
			if err := s.db.QueryRowContext(ctx, `SELECT state_group FROM rooms WHERE room_id = $1`, b.roomID).Scan(&group); err != nil {
				return fmt.Errorf("room state group: %w", err)
			}
			return s.commit.submit(&commitReq{roomID: b.roomID, events: b.pending, extremities: ext, stateGroup: group})
		}); err != nil {
			return fmt.Errorf("store backfilled events: %w", err)
		}
	}
	if len(b.existing) == 0 && len(b.redactedBy) == 0 {
		return nil
	}
	var forget []string
	err := s.db.WithTx(ctx, func(tx *database.Tx) error {
		for _, ev := range b.existing {
			var unsigned *string
			if ev.ReplacesState != "" {
				js, _ := json.Marshal(unsignedExtra{PrevContent: ev.PrevContent, PrevSender: ev.PrevSender, ReplacesState: ev.ReplacesState})
				u := string(js)
				unsigned = &u
			}
			if _, err := tx.ExecContext(ctx, `UPDATE events SET state_group = $1, unsigned = COALESCE(unsigned, $2)
				WHERE event_id = $3 AND state_group = 0`, ev.StateGroup, unsigned, ev.EventID()); err != nil {
				return fmt.Errorf("give state to %s: %w", ev.EventID(), err)
			}
			forget = append(forget, ev.EventID())
		}
		for _, red := range b.updates {
			if _, err := tx.ExecContext(ctx, `UPDATE events SET json = $1, redacted_by = $2 WHERE event_id = $3 AND redacted_by IS NULL`,
				string(red.redactedJSON), b.redactedBy[red.targetID], red.targetID); err != nil {
				return fmt.Errorf("apply redaction: %w", err)
			}
			if err := unindexEvent(ctx, tx, red.targetID); err != nil {
				return err
			}
			if err := forgetRelation(ctx, tx, red.targetID); err != nil {
				return err
			}
			forget = append(forget, red.targetID)
		}
		for targetID, redID := range b.redactedBy {
			if _, ok := b.pendingIdx[targetID]; ok {
				// Stored redacted already; this names the redaction.
				if _, err := tx.ExecContext(ctx, `UPDATE events SET redacted_by = $1 WHERE event_id = $2`, redID, targetID); err != nil {
					return fmt.Errorf("mark redaction: %w", err)
				}
			}
		}
		tx.AfterCommit(func() {
			for _, id := range forget {
				s.cache.forget(id)
			}
		})
		return nil
	})
	if err != nil {
		return fmt.Errorf("update backfilled events: %w", err)
	}
	return nil
}

// errRanInSequencer ends a request that did its work in the room's
// sequencer and has no event to build.
var errRanInSequencer = errors.New("ran in the room's sequencer")

// inSequencer runs fn in the room's sequencer, between its batches of
// events, so that nothing else commits to the room meanwhile. It rides on
// a request's check, the one hook that runs there.
func (s *Service) inSequencer(ctx context.Context, roomID string, fn func(ctx context.Context) error) error {
	req := &buildReq{ctx: ctx, resp: make(chan buildResult, 1), check: func(ctx context.Context, _ *roomState) error {
		if err := fn(ctx); err != nil {
			return err
		}
		return errRanInSequencer
	}}
	_, err := s.enqueue(ctx, roomID, req)
	if errors.Is(err, errRanInSequencer) {
		return nil
	}
	return err
}
