package roomserver

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"sort"
	"sync/atomic"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/database"
)

// Reads for /sync. Positions are stream positions: every committed event
// has one, in commit order, across all rooms.

// CurrentPos is the stream position of the last committed event.
func (s *Service) CurrentPos() int64 { return atomic.LoadInt64(&s.commit.published) }

// LocalPos is the last stream position this process committed: the
// events whose listeners (push evaluation above all) run here. It is
// CurrentPos in one process; in a cluster, other processes evaluate their
// own events (docs/scaling.md).
func (s *Service) LocalPos() int64 { return atomic.LoadInt64(&s.commit.localPublished) }

// MembershipChange is a user's current membership of a room and the
// stream position of the event that set it.
type MembershipChange struct {
	RoomID     string
	Membership string
	EventID    string
	StreamPos  int64
}

// Memberships returns the user's current membership of every room they
// have not forgotten.
func (s *Service) Memberships(ctx context.Context, userID string) ([]MembershipChange, error) {
	if ms, ok := s.memberships.Get(userID); ok {
		return slices.Clone(ms), nil
	}
	gen := s.memberships.Generation()
	rows, err := s.db.QueryContext(ctx, `SELECT room_id, membership, event_id, stream_pos FROM memberships
		WHERE user_id = $1 AND forgotten = 0`, userID)
	if err != nil {
		return nil, fmt.Errorf("memberships: %w", err)
	}
	defer rows.Close()
	var out []MembershipChange
	for rows.Next() {
		var m MembershipChange
		if err := rows.Scan(&m.RoomID, &m.Membership, &m.EventID, &m.StreamPos); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	s.memberships.Put(userID, gen, slices.Clone(out))
	return out, nil
}

// ForgottenSince returns the user's memberships of the rooms they have
// forgotten whose last change (the leave, as a room is forgotten only
// after it is left) came after stream position pos. An incremental sync
// still reports that leave once, as Synapse does: the forget is no event,
// and the client (or the user's other clients) must learn the room is gone.
func (s *Service) ForgottenSince(ctx context.Context, userID string, pos int64) ([]MembershipChange, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT room_id, membership, event_id, stream_pos FROM memberships
		WHERE user_id = $1 AND forgotten = 1 AND stream_pos > $2`, userID, pos)
	if err != nil {
		return nil, fmt.Errorf("forgotten memberships: %w", err)
	}
	defer rows.Close()
	var out []MembershipChange
	for rows.Next() {
		var m MembershipChange
		if err := rows.Scan(&m.RoomID, &m.Membership, &m.EventID, &m.StreamPos); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// MembershipAt is a user's membership of a room just after stream
// position pos ("" for none), found by following their member events back
// from eventID, their current one. It reads past /forget: sync must say
// what happened before the forget. A chain longer than maxHops counts as
// no membership, which makes the caller send the room afresh: more than
// needed, never less.
func (s *Service) MembershipAt(ctx context.Context, eventID string, pos int64) string {
	const maxHops = 20
	id := eventID
	for i := 0; i < maxHops && id != ""; i++ {
		ev, err := s.event(ctx, id)
		if err != nil {
			return ""
		}
		if ev.StreamPos <= pos {
			membership, _ := ev.Membership()
			return membership
		}
		id = ev.ReplacesState
	}
	return ""
}

// Timeline returns, in stream order, the last limit events of a room with
// from < stream_pos <= to that the user may see, and whether older events
// in the range were left out.
func (s *Service) Timeline(ctx context.Context, roomID, userID string, from, to int64, limit int) ([]*Event, bool, error) {
	out, limited, err := s.timelineEvents(ctx, roomID, from, to, limit)
	if err != nil {
		return nil, false, fmt.Errorf("timeline: %w", err)
	}
	if len(out) == 0 && !limited {
		return out, false, nil
	}
	vf, err := s.newVisibilityFilter(ctx, roomID, userID)
	if err != nil {
		return nil, false, err
	}
	out, err = vf.filter(ctx, out)
	return out, limited, err
}

// timelineEvents is the newest limit events of the room with from <
// stream_pos <= to, oldest first, from memory when it can be.
func (s *Service) timelineEvents(ctx context.Context, roomID string, from, to int64, limit int) ([]*Event, bool, error) {
	if ids, limited, ok := s.recent.window(roomID, from, to, limit); ok {
		if len(ids) == 0 {
			return nil, limited, nil
		}
		evs, err := s.events(ctx, s.db, ids)
		if err != nil {
			return nil, false, err
		}
		out := make([]*Event, 0, len(ids))
		for _, id := range ids {
			if ev, ok := evs[id]; ok {
				out = append(out, ev)
			}
		}
		return out, limited, nil
	}
	newest, err := s.queryEvents(ctx, `SELECT event_id FROM events WHERE room_id = $1 AND stream_pos > $2 AND stream_pos <= $3
		ORDER BY stream_pos DESC LIMIT $4`, roomID, from, to, limit+1)
	if err != nil {
		return nil, false, err
	}
	limited := len(newest) > limit
	if limited {
		newest = newest[:limit]
	}
	slices.Reverse(newest)
	return newest, limited, nil
}

// StateAt returns the state of a room just after stream position pos (the
// state after the room's last event at or before pos), as events.
func (s *Service) StateAt(ctx context.Context, roomID string, pos int64) (map[StateKey]*Event, error) {
	var group int64
	err := s.db.QueryRowContext(ctx, `SELECT state_group FROM events WHERE room_id = $1 AND stream_pos > 0 AND stream_pos <= $2
		ORDER BY stream_pos DESC LIMIT 1`, roomID, pos).Scan(&group)
	if err != nil && !isNoRows(err) {
		return nil, fmt.Errorf("state at %d: %w", pos, err)
	}
	ids, err := s.stateOfGroup(ctx, s.db, group)
	if err != nil {
		return nil, err
	}
	evs, err := s.stateEvents(ctx, s.db, ids)
	if err != nil {
		return nil, err
	}
	out := make(map[StateKey]*Event, len(evs))
	for t, ev := range evs {
		out[StateKey(t)] = ev
	}
	return out, nil
}

// StateBefore returns the state a timeline starts from: the state after
// the event before ev.
func (s *Service) StateBefore(ctx context.Context, roomID string, ev *Event) (map[StateKey]*Event, error) {
	if ev.StateGroup == 0 {
		return s.StateAt(ctx, roomID, ev.StreamPos-1)
	}
	// The event's own state: where branches of the DAG meet, or in a room
	// joined over federation (whose state came with the join and has no
	// stream positions), the state after the previous event in the stream
	// is not it.
	st, err := s.stateBeforeStateEvent(ctx, ev)
	if err != nil {
		return nil, err
	}
	out := make(map[StateKey]*Event, len(st))
	for t, e := range st {
		out[StateKey(t)] = e
	}
	return out, nil
}

// StateKey is a state tuple: (event type, state key).
type StateKey struct{ Type, StateKey string }

// SortByStream returns the events of a state map in stream order.
func SortByStream(m map[StateKey]*Event) []*Event {
	out := make([]*Event, 0, len(m))
	for _, ev := range m {
		out = append(out, ev)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].StreamPos < out[j].StreamPos })
	return out
}

// StrippedState is the state an invited or knocking user is shown: enough
// to render the invite.
// https://spec.matrix.org/v1.19/client-server-api/#stripped-state
func (s *Service) StrippedState(ctx context.Context, roomID string, pos int64) ([]*Event, error) {
	st, err := s.StateAt(ctx, roomID, pos)
	if err != nil {
		return nil, err
	}
	var out []*Event
	for _, t := range []string{spec.MRoomCreate, spec.MRoomJoinRules, "m.room.name", "m.room.avatar",
		"m.room.canonical_alias", "m.room.encryption", "m.room.topic"} {
		if ev, ok := st[StateKey{t, ""}]; ok {
			out = append(out, ev)
		}
	}
	return out, nil
}

// JoinedUsers lists a room's joined users, for the notifier.
func (s *Service) JoinedUsers(ctx context.Context, roomID string) ([]string, error) {
	out, err := database.Strings(ctx, s.db, `SELECT user_id FROM memberships WHERE room_id = $1 AND membership = 'join'`, roomID)
	if err != nil {
		return nil, fmt.Errorf("joined users: %w", err)
	}
	return out, nil
}

// SharedUsers returns every user joined to a room the user is joined to,
// the user included: those whose device lists concern them.
func (s *Service) SharedUsers(ctx context.Context, userID string) (map[string]bool, error) {
	users, err := database.Strings(ctx, s.db, `SELECT DISTINCT o.user_id FROM memberships m
		JOIN memberships o ON o.room_id = m.room_id AND o.membership = 'join'
		WHERE m.user_id = $1 AND m.membership = 'join'`, userID)
	if err != nil {
		return nil, fmt.Errorf("users sharing a room: %w", err)
	}
	out := make(map[string]bool, len(users)+1)
	out[userID] = true
	for _, u := range users {
		out[u] = true
	}
	return out, nil
}

// MemberChange is a membership event of a room: who, and what it set.
type MemberChange struct {
	RoomID, UserID, Membership string
}

// MemberChanges returns the membership changes committed at stream
// positions in (from, to] in the given rooms, oldest first.
func (s *Service) MemberChanges(ctx context.Context, roomIDs []string, from, to int64) ([]MemberChange, error) {
	if from >= to || from >= s.commit.lastMember.Load() || len(roomIDs) == 0 {
		return nil, nil
	}
	rooms := make(map[string]bool, len(roomIDs))
	for _, r := range roomIDs {
		rooms[r] = true
	}
	// The window is short for an incremental sync: scanning its member
	// events and keeping those of the user's rooms beats one query per room.
	rows, err := s.db.QueryContext(ctx, `SELECT room_id, state_key, `+s.db.JSONText("json", "content", "membership")+` FROM events
		WHERE stream_pos > $1 AND stream_pos <= $2 AND type = 'm.room.member' AND state_key IS NOT NULL
		ORDER BY stream_pos`, from, to)
	if err != nil {
		return nil, fmt.Errorf("membership changes: %w", err)
	}
	defer rows.Close()
	var out []MemberChange
	for rows.Next() {
		var c MemberChange
		var m sql.NullString
		if err := rows.Scan(&c.RoomID, &c.UserID, &m); err != nil {
			return nil, err
		}
		if rooms[c.RoomID] {
			c.Membership = m.String
			out = append(out, c)
		}
	}
	return out, rows.Err()
}

// TimelineHasGap reports whether one of the events, a /sync timeline,
// follows an event that is not in the room's history here: after a long
// partition only the newest events are fetched, so the timeline misses
// events before them and is incomplete (limited) even when it is shorter
// than the client's limit. A rejected prev event is no gap.
func (s *Service) TimelineHasGap(ctx context.Context, evs []*Event) (bool, error) {
	if len(evs) == 0 {
		return false, nil
	}
	ids := make([]string, len(evs))
	for i, ev := range evs {
		ids[i] = ev.EventID()
	}
	ph, args := placeholders(ids, 0)
	var one int
	err := s.db.QueryRowContext(ctx, `SELECT 1 FROM event_edges ed WHERE ed.event_id IN (`+ph+`)
		AND NOT EXISTS (SELECT 1 FROM events p WHERE p.event_id = ed.prev_event_id AND (p.stream_pos > 0 OR p.state_group != 0))
		AND NOT EXISTS (SELECT 1 FROM rejected_events r WHERE r.event_id = ed.prev_event_id)
		LIMIT 1`, args...).Scan(&one)
	if isNoRows(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("gaps in a timeline: %w", err)
	}
	return true, nil
}
