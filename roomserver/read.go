package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// currentState reads a room's current state from the database (the
// sequencer's in-memory copy belongs to its goroutine).
func (s *Service) currentState(ctx context.Context, roomID string) (*roomState, error) {
	rs, err := s.loadRoomState(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if rs == nil {
		return nil, mxerr.NotFound("Unknown room")
	}
	return rs, nil
}

// EventFilter is the part of a RoomEventFilter that /messages and /context
// apply.
type EventFilter struct {
	Types, NotTypes     []string
	Senders, NotSenders []string
	ContainsURL         *bool
	LazyLoadMembers     bool
	IncludeRedundant    bool
}

// Match reports whether ev passes the filter (a nil filter passes all).
func (f *EventFilter) Match(ev *Event) bool { return f.match(ev) }

func (f *EventFilter) match(ev *Event) bool {
	if f == nil {
		return true
	}
	if len(f.Types) > 0 && !matchAny(f.Types, ev.Type()) {
		return false
	}
	if matchAny(f.NotTypes, ev.Type()) {
		return false
	}
	if len(f.Senders) > 0 && !contains(f.Senders, string(ev.SenderID())) {
		return false
	}
	if contains(f.NotSenders, string(ev.SenderID())) {
		return false
	}
	if f.ContainsURL != nil {
		var c struct {
			URL *string `json:"url"`
		}
		_ = json.Unmarshal(ev.Content(), &c)
		if (c.URL != nil) != *f.ContainsURL {
			return false
		}
	}
	return true
}

// matchAny matches event types with the filter's '*' wildcards.
func matchAny(patterns []string, typ string) bool {
	for _, p := range patterns {
		if p == typ {
			return true
		}
		if prefix, ok := strings.CutSuffix(p, "*"); ok && strings.HasPrefix(typ, prefix) {
			return true
		}
	}
	return false
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// MessagesRequest is /messages's parameters.
type MessagesRequest struct {
	RoomID    string
	UserID    string
	From, To  *Token
	Backwards bool
	Limit     int
	Filter    *EventFilter
	// ServerAdmin reads as the admin API does: every event, whatever the
	// user's membership and the history visibility.
	ServerAdmin bool
}

// MessagesResponse is /messages's result.
type MessagesResponse struct {
	Chunk []*Event
	Start Token
	End   *Token // nil: no more events in this direction
	State []*Event
}

// maxScanFactor bounds how many events a page may read while skipping
// events the filter or history visibility hides.
const maxScanFactor = 10

// maxBackfillsPerPage bounds the backfill requests one /messages page
// makes to other servers.
const maxBackfillsPerPage = 3

// Messages pages through a room's history.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomidmessages
func (s *Service) Messages(ctx context.Context, req MessagesRequest) (*MessagesResponse, error) {
	if req.ServerAdmin {
		if _, err := s.RoomVersion(ctx, req.RoomID); err != nil {
			return nil, err
		}
	} else if _, err := s.checkCanRead(ctx, req.RoomID, req.UserID); err != nil {
		return nil, err
	}
	vf, err := s.newVisibilityFilter(ctx, req.RoomID, req.UserID)
	if err != nil {
		return nil, err
	}
	vf.everything = req.ServerAdmin
	// Sync tokens become positions in the room before any comparison.
	if req.From, err = s.placeOptional(ctx, req.RoomID, req.From); err != nil {
		return nil, err
	}
	if req.To, err = s.placeOptional(ctx, req.RoomID, req.To); err != nil {
		return nil, err
	}
	from := Token{Depth: math.MaxInt64, Stream: math.MaxInt64}
	if !req.Backwards {
		from = Token{}
	}
	if req.From != nil {
		from = *req.From
	}
	resp := &MessagesResponse{Start: from}
	pos := from
	scanned := 0
	backfills := 0
	for len(resp.Chunk) < req.Limit && scanned < req.Limit*maxScanFactor {
		page, err := s.scan(ctx, req.RoomID, pos, req.To, req.Backwards, req.Limit-len(resp.Chunk))
		if err != nil {
			return nil, err
		}
		if len(page) == 0 {
			// Our copy ran out: a room joined over federation has
			// history before our join on other servers.
			if req.Backwards && s.history != nil && !s.purgedBelowOrErr(ctx, req.RoomID, pos) {
				if backfills == maxBackfillsPerPage {
					// The budget is spent, not the history: an end at
					// pos lets the next page backfill on, even when the
					// filter or visibility left this one empty.
					end := pos
					resp.End = &end
					break
				}
				backfills++
				n, err := s.Backfill(ctx, req.RoomID, pos, req.Limit, s.history)
				if err != nil {
					s.log.WithError(err).WithField("room_id", req.RoomID).Warn("backfill from other servers failed")
				} else if n > 0 {
					continue
				}
			}
			resp.End = nil
			break
		}
		scanned += len(page)
		last := page[len(page)-1]
		if req.Backwards {
			pos = before(last)
		} else {
			pos = after(last)
		}
		end := pos
		resp.End = &end
		var kept []*Event
		for _, ev := range page {
			if req.Filter.match(ev) {
				kept = append(kept, ev)
			}
		}
		if kept, err = vf.filter(ctx, kept); err != nil {
			return nil, err
		}
		resp.Chunk = append(resp.Chunk, kept...)
	}
	if req.Filter != nil && req.Filter.LazyLoadMembers && len(resp.Chunk) > 0 {
		if resp.State, err = s.membersFor(ctx, resp.Chunk); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

// scan reads up to limit events from pos in one direction, stopping at to.
func (s *Service) scan(ctx context.Context, roomID string, pos Token, to *Token, backwards bool, limit int) ([]*Event, error) {
	var q string
	args := []any{roomID, pos.Depth, pos.Stream}
	if backwards {
		q = `SELECT event_id FROM events e WHERE e.room_id = $1 AND ` + HistorySQL + ` AND (depth < $2 OR (depth = $2 AND stream_pos <= $3))`
		if to != nil {
			q += ` AND (depth > $4 OR (depth = $4 AND stream_pos > $5))`
		}
		q += ` ORDER BY depth DESC, stream_pos DESC`
	} else {
		q = `SELECT event_id FROM events e WHERE e.room_id = $1 AND ` + HistorySQL + ` AND (depth > $2 OR (depth = $2 AND stream_pos > $3))`
		if to != nil {
			q += ` AND (depth < $4 OR (depth = $4 AND stream_pos <= $5))`
		}
		q += ` ORDER BY depth ASC, stream_pos ASC`
	}
	if to != nil {
		args = append(args, to.Depth, to.Stream)
	}
	args = append(args, limit)
	q += fmt.Sprintf(` LIMIT $%d`, len(args))
	evs, err := s.queryEvents(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("scan room events: %w", err)
	}
	return evs, nil
}

// membersFor returns, for lazy-loading clients, the member events of the
// senders of evs, each from the state at the sender's first event in evs.
// (The state at any single event would miss senders who joined later in a
// forward chunk.)
// https://spec.matrix.org/v1.19/client-server-api/#lazy-loading-room-members
func (s *Service) membersFor(ctx context.Context, evs []*Event) ([]*Event, error) {
	seen := map[string]bool{}
	var ids []string
	for _, ev := range evs {
		sender := string(ev.SenderID())
		if seen[sender] {
			continue
		}
		seen[sender] = true
		st, err := s.stateOfGroup(ctx, s.db, ev.StateGroup)
		if err != nil {
			return nil, err
		}
		if id, ok := st[tuple{spec.MRoomMember, sender}]; ok {
			ids = append(ids, id)
		}
	}
	m, err := s.events(ctx, s.db, ids)
	if err != nil {
		return nil, err
	}
	out := make([]*Event, 0, len(ids))
	for _, id := range ids {
		if ev, ok := m[id]; ok {
			out = append(out, ev)
		}
	}
	return out, nil
}

// Event returns one event the user may see; 404 M_NOT_FOUND otherwise, so
// that a hidden event cannot be told from a missing one.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomideventeventid
func (s *Service) Event(ctx context.Context, roomID, userID, eventID string) (*Event, error) {
	if _, err := s.checkCanRead(ctx, roomID, userID); err != nil {
		// The spec gives this endpoint one refusal, 404, "not found or you
		// do not have permission" (Synapse answers the same): a
		// non-member learns nothing, not even that the room exists.
		if me, ok := mxerr.As(err); ok && me.Status == 403 {
			return nil, mxerr.NotFound("Event not found")
		}
		return nil, err
	}
	ev, err := s.event(ctx, eventID)
	if err != nil || ev.RoomID != roomID {
		return nil, mxerr.NotFound("Event not found")
	}
	vf, err := s.newVisibilityFilter(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	ok, err := vf.allowed(ctx, ev)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, mxerr.NotFound("Event not found")
	}
	return ev, nil
}

// Redaction returns the event that redacted ev, for unsigned.redacted_because.
func (s *Service) Redaction(ctx context.Context, ev *Event) *Event {
	if ev.RedactedBy == "" {
		return nil
	}
	red, err := s.event(ctx, ev.RedactedBy)
	if err != nil {
		return nil
	}
	return red
}

// ContextResponse is /context's result.
type ContextResponse struct {
	Event         *Event
	Before, After []*Event
	Start, End    Token
	State         []*Event
}

// Context returns an event with the events around it.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomidcontexteventid
func (s *Service) Context(ctx context.Context, roomID, userID, eventID string, limit int, filter *EventFilter) (*ContextResponse, error) {
	// Like /messages, 403 for users who may not read the room at all;
	// Event's 404 is for events that are missing or hidden.
	if _, err := s.checkCanRead(ctx, roomID, userID); err != nil {
		return nil, err
	}
	ev, err := s.Event(ctx, roomID, userID, eventID)
	if err != nil {
		return nil, err
	}
	nBefore := limit / 2
	nAfter := limit - nBefore
	resp := &ContextResponse{Event: ev, Start: before(ev), End: after(ev)}
	if nBefore > 0 {
		from := before(ev)
		m, err := s.Messages(ctx, MessagesRequest{RoomID: roomID, UserID: userID, From: &from, Backwards: true, Limit: nBefore, Filter: filter})
		if err != nil {
			return nil, err
		}
		resp.Before = m.Chunk
		if m.End != nil {
			resp.Start = *m.End
		} else if len(m.Chunk) > 0 {
			resp.Start = before(m.Chunk[len(m.Chunk)-1])
		}
	}
	if nAfter > 0 {
		from := after(ev)
		m, err := s.Messages(ctx, MessagesRequest{RoomID: roomID, UserID: userID, From: &from, Limit: nAfter, Filter: filter})
		if err != nil {
			return nil, err
		}
		resp.After = m.Chunk
		if m.End != nil {
			resp.End = *m.End
		} else if len(m.Chunk) > 0 {
			resp.End = after(m.Chunk[len(m.Chunk)-1])
		}
	}
	// The state at the event; only the members the events need when lazy
	// loading.
	all := append(append([]*Event{ev}, resp.Before...), resp.After...)
	if filter != nil && filter.LazyLoadMembers {
		resp.State, err = s.membersFor(ctx, all)
		return resp, err
	}
	st, err := s.stateOfGroup(ctx, s.db, ev.StateGroup)
	if err != nil {
		return nil, err
	}
	evs, err := s.stateEvents(ctx, s.db, st)
	if err != nil {
		return nil, err
	}
	resp.State = sortedState(evs)
	return resp, nil
}

func sortedState(m map[tuple]*Event) []*Event {
	out := make([]*Event, 0, len(m))
	for _, ev := range m {
		out = append(out, ev)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].StreamPos < out[j].StreamPos })
	return out
}

// stateForReader returns the state a user may read: the current state if
// they are joined (or the room is world readable), the state when they
// left if they have left.
func (s *Service) stateForReader(ctx context.Context, roomID, userID string) (map[tuple]*Event, error) {
	m, err := s.checkCanRead(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	if m == "leave" || m == "ban" {
		var group int64
		err := s.db.QueryRowContext(ctx, `SELECT e.state_group FROM memberships m JOIN events e ON e.event_id = m.event_id
			WHERE m.room_id = $1 AND m.user_id = $2`, roomID, userID).Scan(&group)
		if err != nil {
			return nil, fmt.Errorf("state at leave: %w", err)
		}
		st, err := s.stateOfGroup(ctx, s.db, group)
		if err != nil {
			return nil, err
		}
		return s.stateEvents(ctx, s.db, st)
	}
	rs, err := s.currentState(ctx, roomID)
	if err != nil {
		return nil, err
	}
	return rs.state, nil
}

// State returns the room state the user may read.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomidstate
func (s *Service) State(ctx context.Context, roomID, userID string) ([]*Event, error) {
	st, err := s.stateForReader(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	return sortedState(st), nil
}

// StateEvent returns one state event the user may read.
func (s *Service) StateEvent(ctx context.Context, roomID, userID, typ, key string) (*Event, error) {
	st, err := s.stateForReader(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	ev, ok := st[tuple{typ, key}]
	if !ok {
		return nil, mxerr.NotFound("Event not found")
	}
	return ev, nil
}

// Members returns the member events of a room, optionally at a pagination
// token and filtered by membership.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomidmembers
func (s *Service) Members(ctx context.Context, roomID, userID string, at *Token, membership, notMembership string) ([]*Event, error) {
	var st map[tuple]*Event
	var err error
	if at != nil {
		if _, err := s.checkCanRead(ctx, roomID, userID); err != nil {
			return nil, err
		}
		// A sync token (matrix-js-sdk's lazy member loading sends its
		// latest next_batch) is placed in the room first.
		pos, err := s.Place(ctx, roomID, *at)
		if err != nil {
			return nil, err
		}
		at = &pos
		var group int64
		var eventID string
		err = s.db.QueryRowContext(ctx, `SELECT event_id FROM events WHERE room_id = $1 AND stream_pos > 0
			AND (depth < $2 OR (depth = $2 AND stream_pos <= $3)) ORDER BY depth DESC, stream_pos DESC LIMIT 1`,
			roomID, at.Depth, at.Stream).Scan(&eventID)
		if err != nil && !isNoRows(err) {
			return nil, fmt.Errorf("members at: %w", err)
		}
		if eventID != "" {
			// The state at a point of the timeline is only for those who
			// may see the timeline there (as in Synapse): a user who left
			// must not learn who joined after them.
			ev, err := s.event(ctx, eventID)
			if err != nil {
				return nil, err
			}
			vf, err := s.newVisibilityFilter(ctx, roomID, userID)
			if err != nil {
				return nil, err
			}
			ok, err := vf.allowed(ctx, ev)
			if err != nil {
				return nil, err
			}
			if !ok {
				return nil, mxerr.Forbidden("You may not see the room's members at this point")
			}
			group = ev.StateGroup
		}
		ids, err := s.stateOfGroup(ctx, s.db, group)
		if err != nil {
			return nil, err
		}
		if st, err = s.stateEvents(ctx, s.db, ids); err != nil {
			return nil, err
		}
	} else if st, err = s.stateForReader(ctx, roomID, userID); err != nil {
		return nil, err
	}
	var out []*Event
	for t, ev := range st {
		if t.Type != spec.MRoomMember {
			continue
		}
		m, _ := ev.Membership()
		if (membership != "" && m != membership) || (notMembership != "" && m == notMembership) {
			continue
		}
		out = append(out, ev)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].StreamPos < out[j].StreamPos })
	return out, nil
}

// JoinedMember is a joined member's profile in the room.
type JoinedMember struct {
	DisplayName *string `json:"display_name,omitempty"`
	AvatarURL   *string `json:"avatar_url,omitempty"`
}

// JoinedMembers lists the joined members; only members may ask (or anyone,
// in a world-readable room).
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomidjoined_members
func (s *Service) JoinedMembers(ctx context.Context, roomID, userID string) (map[string]JoinedMember, error) {
	rs, err := s.currentState(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if rs.membership(userID) != "join" {
		if ev := rs.get(spec.MRoomHistoryVisibility, ""); ev == nil || historyVisibility(ev.Content()) != "world_readable" {
			return nil, mxerr.Forbidden("You are not a member of this room")
		}
	}
	out := map[string]JoinedMember{}
	for t, ev := range rs.state {
		if t.Type != spec.MRoomMember {
			continue
		}
		if m, _ := ev.Membership(); m != "join" {
			continue
		}
		var c struct {
			DisplayName *string `json:"displayname"`
			AvatarURL   *string `json:"avatar_url"`
		}
		_ = json.Unmarshal(ev.Content(), &c)
		out[t.StateKey] = JoinedMember{DisplayName: c.DisplayName, AvatarURL: c.AvatarURL}
	}
	return out, nil
}
