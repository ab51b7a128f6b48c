package roomserver

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// History visibility decides which events a user may see. It is applied
// on every read path: /messages, /context, /event, /state, /members.
// https://spec.matrix.org/v1.19/client-server-api/#history-visibility

var visibilityRank = map[string]int{"world_readable": 0, "shared": 1, "invited": 2, "joined": 3}

// historyVisibility reads the setting from a history visibility event's
// content; "shared" when absent or unknown, as the spec says.
func historyVisibility(content []byte) string {
	var c struct {
		HistoryVisibility string `json:"history_visibility"`
	}
	if json.Unmarshal(content, &c) == nil {
		if _, ok := visibilityRank[c.HistoryVisibility]; ok {
			return c.HistoryVisibility
		}
	}
	return "shared"
}

// visibilityFilter judges events for one user, caching the state lookups
// it needs: a page of events mostly shares a few state groups.
type visibilityFilter struct {
	s       *Service
	userID  string
	current string // the user's current membership of the room
	// lastJoin is just after the user's latest join, when they have
	// left since (nil if they never joined, or are joined now).
	lastJoin *Token
	byGroup  map[int64]visibilityAt
	// everything lets every event through (a server admin's read), but
	// those past the room's lifetime.
	everything bool
	// expiredBefore hides the messages (not state) sent before it, in
	// ms: they are past the room's retention lifetime. 0 for none.
	expiredBefore int64
}

type visibilityAt struct {
	visibility, membership string
}

func (s *Service) newVisibilityFilter(ctx context.Context, roomID, userID string) (*visibilityFilter, error) {
	m, err := s.Membership(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	f := &visibilityFilter{s: s, userID: userID, current: m, byGroup: map[int64]visibilityAt{}}
	if f.expiredBefore, err = s.expiredBefore(ctx, roomID); err != nil {
		return nil, err
	}
	if m == "leave" || m == "ban" {
		if f.lastJoin, err = s.lastJoin(ctx, roomID, userID); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// lastJoin finds the user's latest join to the room by walking back their
// member events (each names the one it replaced) from the current one.
// nil if they never joined.
func (s *Service) lastJoin(ctx context.Context, roomID, userID string) (*Token, error) {
	var id string
	err := s.db.QueryRowContext(ctx, `SELECT event_id FROM memberships WHERE room_id = $1 AND user_id = $2`, roomID, userID).Scan(&id)
	if isNoRows(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("membership event: %w", err)
	}
	for id != "" {
		ev, err := s.event(ctx, id)
		if err != nil {
			if me, ok := mxerr.As(err); ok && me.Code == "M_NOT_FOUND" {
				return nil, nil
			}
			return nil, err
		}
		if m, _ := ev.Membership(); m == "join" {
			t := after(ev)
			return &t, nil
		}
		id = ev.ReplacesState
	}
	return nil, nil
}

func (f *visibilityFilter) at(ctx context.Context, group int64) (visibilityAt, error) {
	if v, ok := f.byGroup[group]; ok {
		return v, nil
	}
	st, err := f.s.stateOfGroup(ctx, f.s.db, group)
	if err != nil {
		return visibilityAt{}, err
	}
	v := visibilityAt{visibility: "shared"}
	var ids []string
	hvID, hasHV := st[tuple{spec.MRoomHistoryVisibility, ""}]
	memID, hasMem := st[tuple{spec.MRoomMember, f.userID}]
	if hasHV {
		ids = append(ids, hvID)
	}
	if hasMem {
		ids = append(ids, memID)
	}
	evs, err := f.s.events(ctx, f.s.db, ids)
	if err != nil {
		return visibilityAt{}, err
	}
	if ev, ok := evs[hvID]; hasHV && ok {
		v.visibility = historyVisibility(ev.Content())
	}
	if ev, ok := evs[memID]; hasMem && ok {
		v.membership, _ = ev.Membership()
	}
	f.byGroup[group] = v
	return v, nil
}

// allowed reports whether the user may see ev.
func (f *visibilityFilter) allowed(ctx context.Context, ev *Event) (bool, error) {
	// As Synapse: a message past the room's lifetime is hidden even
	// before the housekeeping job purges it, from server admins too (the
	// admin API's /messages filters as /messages does); state stays (it is
	// kept).
	if ev.StateKey() == nil && int64(ev.OriginServerTS()) < f.expiredBefore {
		return false, nil
	}
	if f.everything {
		return true, nil
	}
	// Users always see their own membership events, so that, for one, a
	// rejected invite or a kick does not vanish from their view.
	if ev.Type() == spec.MRoomMember && ev.StateKeyEquals(f.userID) {
		return true, nil
	}
	v, err := f.at(ctx, ev.StateGroup)
	if err != nil {
		return false, err
	}
	vis := v.visibility
	if ev.Type() == spec.MRoomHistoryVisibility && ev.StateKeyEquals("") && len(ev.PrevContent) > 0 {
		// A change of visibility is judged by the more permissive of the
		// old and new settings.
		if old := historyVisibility(ev.PrevContent); visibilityRank[old] < visibilityRank[vis] {
			vis = old
		}
	}
	switch {
	case vis == "world_readable":
		return true, nil
	case v.membership == "join":
		return true, nil
	case vis == "shared" && f.joinedSince(ev):
		return true, nil
	case vis == "invited" && v.membership == "invite":
		return true, nil
	}
	return false, nil
}

// joinedSince reports whether the user joined the room at some point after
// ev: the spec's rule for "shared". A user who has left keeps seeing what
// came before their last join, as they could while joined.
// https://spec.matrix.org/v1.19/client-server-api/#server-behaviour-7
func (f *visibilityFilter) joinedSince(ev *Event) bool {
	if f.current == "join" {
		return true
	}
	if f.lastJoin == nil {
		return false
	}
	d, p := ev.Depth(), ev.StreamPos
	return d < f.lastJoin.Depth || (d == f.lastJoin.Depth && p < f.lastJoin.Stream)
}

// filter returns the events of evs the user may see, in order.
func (f *visibilityFilter) filter(ctx context.Context, evs []*Event) ([]*Event, error) {
	out := make([]*Event, 0, len(evs))
	for _, ev := range evs {
		ok, err := f.allowed(ctx, ev)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, ev)
		}
	}
	return out, nil
}

// checkCanRead is the entry check of the history read paths, as in
// Synapse: the user is or was a member of the room, or the room is world
// readable. Anyone else gets 403 without learning anything of the room.
func (s *Service) checkCanRead(ctx context.Context, roomID, userID string) (string, error) {
	var m string
	var forgotten bool
	err := s.db.QueryRowContext(ctx, `SELECT membership, forgotten FROM memberships WHERE room_id = $1 AND user_id = $2`,
		roomID, userID).Scan(&m, &forgotten)
	if err != nil && !isNoRows(err) {
		return "", fmt.Errorf("membership: %w", err)
	}
	if forgotten {
		// After /forget "a user will no longer be able to retrieve
		// history for this room": they read it as a non-member would.
		// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidforget
		m = ""
	}
	switch m {
	case "join", "leave", "ban":
		return m, nil
	}
	rs, err := s.loadRoomState(ctx, roomID)
	if err != nil {
		return "", err
	}
	if rs != nil {
		if ev := rs.get(spec.MRoomHistoryVisibility, ""); ev != nil && historyVisibility(ev.Content()) == "world_readable" {
			return m, nil
		}
	}
	return "", mxerr.Forbidden("You are not a member of this room")
}
