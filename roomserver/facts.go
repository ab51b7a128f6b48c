package roomserver

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
)

// bumpTypes are the event types that move a room up a sliding sync room
// list: "proper" activity, as MSC4186 and Synapse define it. A topic
// change or a member joining does not bump a room.
// https://github.com/matrix-org/matrix-spec-proposals/blob/main/proposals/4186-simplified-sliding-sync.md
var bumpTypes = map[string]bool{
	spec.MRoomCreate: true, "m.room.message": true, "m.room.encrypted": true, "m.sticker": true,
	"m.call.invite": true, "m.poll.start": true, "m.beacon_info": true,
}

// IsBumpType reports whether an event of this type bumps its room.
func IsBumpType(typ string) bool { return bumpTypes[typ] }

// RoomFacts is what a room list is sorted and filtered by, for a room this
// server holds state of.
type RoomFacts struct {
	// Known is false for a room the server holds no state of (a remote
	// invite, say); the other fields are then zero.
	Known bool
	// Type is the m.room.create content's type ("" for none).
	Type string
	// Encrypted: the room has an m.room.encryption state event.
	Encrypted bool
	// BumpPos is the stream position of the room's latest event of a bump
	// type (0 for none in its timeline, as in a room joined over
	// federation whose create event is not part of our timeline).
	BumpPos int64
}

// roomFacts caches RoomFacts. Committed events keep it current; a
// resolved state (which may change anything) drops the room's entry.
type roomFacts struct {
	mu    sync.Mutex
	rooms map[string]RoomFacts
}

func newRoomFacts() *roomFacts { return &roomFacts{rooms: map[string]RoomFacts{}} }

// observe updates the cache with a committed timeline event.
func (f *roomFacts) observe(ev *Event, resolved bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	rf, ok := f.rooms[ev.RoomID]
	if !ok {
		return // loaded from the database when first asked for
	}
	if resolved {
		delete(f.rooms, ev.RoomID)
		return
	}
	if IsBumpType(ev.Type()) && ev.StreamPos > rf.BumpPos {
		rf.BumpPos = ev.StreamPos
	}
	if ev.Type() == "m.room.encryption" && ev.StateKey() != nil && *ev.StateKey() == "" {
		rf.Encrypted = true
	}
	f.rooms[ev.RoomID] = rf
}

// factsChunk bounds the room IDs of one query.
const factsChunk = 500

// RoomFacts returns the facts of each of the rooms, from memory when it
// can, else in one query per few hundred rooms.
func (s *Service) RoomFacts(ctx context.Context, roomIDs []string) (map[string]RoomFacts, error) {
	out := make(map[string]RoomFacts, len(roomIDs))
	var missing []string
	s.facts.mu.Lock()
	for _, id := range roomIDs {
		if rf, ok := s.facts.rooms[id]; ok {
			out[id] = rf
		} else {
			missing = append(missing, id)
		}
	}
	s.facts.mu.Unlock()
	for len(missing) > 0 {
		n := min(len(missing), factsChunk)
		chunk := missing[:n]
		missing = missing[n:]
		loaded, err := s.loadRoomFacts(ctx, chunk)
		if err != nil {
			return nil, err
		}
		s.facts.mu.Lock()
		for _, id := range chunk {
			rf := loaded[id]
			out[id] = rf
			if rf.Known {
				// A commit since the read may have moved it on; the
				// larger bump and a once-seen encryption win.
				if cur, ok := s.facts.rooms[id]; ok {
					rf.BumpPos = max(rf.BumpPos, cur.BumpPos)
					rf.Encrypted = rf.Encrypted || cur.Encrypted
				}
				s.facts.rooms[id] = rf
			}
		}
		s.facts.mu.Unlock()
	}
	return out, nil
}

func (s *Service) loadRoomFacts(ctx context.Context, roomIDs []string) (map[string]RoomFacts, error) {
	args := make([]any, len(roomIDs))
	marks := make([]string, len(roomIDs))
	for i, id := range roomIDs {
		args[i] = id
		marks[i] = fmt.Sprintf("$%d", i+1)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT r.room_id, r.bump_pos,
		(SELECT e.json FROM current_state cs JOIN events e ON e.event_id = cs.event_id
			WHERE cs.room_id = r.room_id AND cs.type = 'm.room.create' AND cs.state_key = ''),
		EXISTS (SELECT 1 FROM current_state cs
			WHERE cs.room_id = r.room_id AND cs.type = 'm.room.encryption' AND cs.state_key = '')
		FROM rooms r WHERE r.room_id IN (`+strings.Join(marks, ",")+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("room facts: %w", err)
	}
	defer rows.Close()
	out := make(map[string]RoomFacts, len(roomIDs))
	for rows.Next() {
		var (
			id         string
			rf         RoomFacts
			createJSON *string
		)
		if err := rows.Scan(&id, &rf.BumpPos, &createJSON, &rf.Encrypted); err != nil {
			return nil, fmt.Errorf("room facts: %w", err)
		}
		if createJSON == nil {
			continue // no state here: a room known only from an invite
		}
		rf.Known = true
		if t := gjson.Get(*createJSON, "content.type"); t.Type == gjson.String {
			rf.Type = t.Str
		}
		out[id] = rf
	}
	return out, rows.Err()
}

// OwnMembershipEvent returns a membership event by ID without a
// visibility check: for a user's own membership events, which they may
// always see (sliding sync reads who kicked or banned them).
func (s *Service) OwnMembershipEvent(ctx context.Context, userID, eventID string) (*Event, error) {
	ev, err := s.event(ctx, eventID)
	if err != nil {
		return nil, err
	}
	if ev.Type() != spec.MRoomMember || ev.StateKey() == nil || *ev.StateKey() != userID {
		return nil, fmt.Errorf("event %s is not %s's membership", eventID, userID)
	}
	return ev, nil
}
