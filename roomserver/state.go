package roomserver

import (
	"context"
	"fmt"
	"sync"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/database"
)

// tuple is a state key: (event type, state_key).
type tuple struct{ Type, StateKey string }

// stateIDs maps each state tuple to the event ID that holds it.
type stateIDs map[tuple]string

// maxChainLen is how many delta groups may follow a full snapshot before
// the next state change writes a full snapshot again. It bounds both reads
// (one query walks at most this many groups) and writes (a full snapshot is
// written once per this many state changes).
const maxChainLen = 64

// stateGroupCache keeps recently read state snapshots. A group never
// changes once written, so entries never go stale.
type stateGroupCache struct {
	mu     sync.Mutex
	max    int
	groups map[int64]stateIDs
}

func (c *stateGroupCache) get(g int64) stateIDs {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.groups[g]
}

func (c *stateGroupCache) put(g int64, s stateIDs) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.groups) >= c.max {
		for k := range c.groups {
			delete(c.groups, k)
			break
		}
	}
	c.groups[g] = s
}

// stateOfGroup reads the full state of a state group, walking its delta
// chain in one recursive query.
func (s *Service) stateOfGroup(ctx context.Context, q database.Querier, group int64) (stateIDs, error) {
	if group == 0 {
		return stateIDs{}, nil
	}
	if st := s.groupCache.get(group); st != nil {
		return st, nil
	}
	rows, err := q.QueryContext(ctx, `
		WITH RECURSIVE chain(g, n) AS (
			SELECT CAST($1 AS BIGINT), 0
			UNION ALL
			SELECT sg.prev_group, chain.n + 1 FROM state_groups sg JOIN chain ON sg.group_id = chain.g
			WHERE sg.prev_group IS NOT NULL
		)
		SELECT chain.n, e.type, e.state_key, e.event_id
		FROM chain JOIN state_group_entries e ON e.group_id = chain.g
		ORDER BY chain.n DESC`, group)
	if err != nil {
		return nil, fmt.Errorf("read state group %d: %w", group, err)
	}
	defer rows.Close()
	st := stateIDs{}
	for rows.Next() {
		var n int
		var t tuple
		var id string
		if err := rows.Scan(&n, &t.Type, &t.StateKey, &id); err != nil {
			return nil, err
		}
		st[t] = id
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	s.groupCache.put(group, st)
	return st, nil
}

// stateEvents loads the events of a state map.
func (s *Service) stateEvents(ctx context.Context, q database.Querier, st stateIDs) (map[tuple]*Event, error) {
	ids := make([]string, 0, len(st))
	for _, id := range st {
		ids = append(ids, id)
	}
	evs, err := s.events(ctx, q, ids)
	if err != nil {
		return nil, err
	}
	out := make(map[tuple]*Event, len(st))
	for t, id := range st {
		if ev, ok := evs[id]; ok {
			out[t] = ev
		}
	}
	return out, nil
}

// roomState is a room's current state as its sequencer keeps it.
type roomState struct {
	roomID      string
	version     gomatrixserverlib.IRoomVersion
	state       map[tuple]*Event
	group       int64 // state group of the current state
	chainLen    int   // deltas since the last full snapshot
	extremities []string
	depth       int64 // the greatest depth in the room
	// annotations are those sent in the batch being built, which the
	// database does not hold yet (see checkRelation).
	annotations map[annotationKey]bool
}

func (rs *roomState) get(typ, key string) *Event { return rs.state[tuple{typ, key}] }

// AuthEventProvider over the current state.

func (rs *roomState) pdu(typ, key string) (gomatrixserverlib.PDU, error) {
	if ev := rs.get(typ, key); ev != nil {
		return ev.PDU, nil
	}
	return nil, nil
}
func (rs *roomState) Create() (gomatrixserverlib.PDU, error) { return rs.pdu(spec.MRoomCreate, "") }
func (rs *roomState) JoinRules() (gomatrixserverlib.PDU, error) {
	return rs.pdu(spec.MRoomJoinRules, "")
}
func (rs *roomState) PowerLevels() (gomatrixserverlib.PDU, error) {
	return rs.pdu(spec.MRoomPowerLevels, "")
}
func (rs *roomState) Member(k spec.SenderID) (gomatrixserverlib.PDU, error) {
	return rs.pdu(spec.MRoomMember, string(k))
}
func (rs *roomState) ThirdPartyInvite(k string) (gomatrixserverlib.PDU, error) {
	return rs.pdu(spec.MRoomThirdPartyInvite, k)
}
func (rs *roomState) Valid() bool { return true }

var _ gomatrixserverlib.AuthEventProvider = (*roomState)(nil)

// membership returns a user's current membership ("" if none).
func (rs *roomState) membership(userID string) string {
	ev := rs.get(spec.MRoomMember, userID)
	if ev == nil {
		return ""
	}
	m, _ := ev.Membership()
	return m
}

// loadRoomState reads a room's current state from the database; nil if
// the room is unknown.
func (s *Service) loadRoomState(ctx context.Context, roomID string) (*roomState, error) {
	var version string
	var group int64
	err := s.db.QueryRowContext(ctx, `SELECT room_version, state_group FROM rooms WHERE room_id = $1`, roomID).
		Scan(&version, &group)
	if isNoRows(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load room %s: %w", roomID, err)
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(version))
	if err != nil {
		return nil, err
	}
	rs := &roomState{roomID: roomID, version: verImpl, group: group}
	if err := s.db.QueryRowContext(ctx, `SELECT chain_len FROM state_groups WHERE group_id = $1`, group).Scan(&rs.chainLen); err != nil {
		return nil, fmt.Errorf("load room %s state group: %w", roomID, err)
	}
	ids, err := s.stateOfGroup(ctx, s.db, group)
	if err != nil {
		return nil, err
	}
	if rs.state, err = s.stateEvents(ctx, s.db, ids); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT f.event_id, e.depth FROM forward_extremities f
		JOIN events e ON e.event_id = f.event_id WHERE f.room_id = $1`, roomID)
	if err != nil {
		return nil, fmt.Errorf("load extremities: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var depth int64
		if err := rows.Scan(&id, &depth); err != nil {
			return nil, err
		}
		rs.extremities = append(rs.extremities, id)
		rs.depth = max(rs.depth, depth)
	}
	return rs, rows.Err()
}
