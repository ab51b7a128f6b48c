package syncapi

import (
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/roomserver"
	"github.com/tessera-hs/tessera/users"
)

// filter applies the parts of a sync filter that this sync serves.
// https://spec.matrix.org/v1.19/client-server-api/#filtering
type filter struct {
	timelineLimit int
	rooms         map[string]bool // nil: every room
	notRooms      map[string]bool
	includeLeave  bool
	timelineF     *roomserver.EventFilter
	stateF        *roomserver.EventFilter
	lazyMembers   bool
}

func set(list []string) map[string]bool {
	if list == nil {
		return nil
	}
	m := make(map[string]bool, len(list))
	for _, v := range list {
		m[v] = true
	}
	return m
}

func eventFilter(f *users.RoomEventFilter) *roomserver.EventFilter {
	if f == nil {
		return nil
	}
	return &roomserver.EventFilter{
		Types: f.Types, NotTypes: f.NotTypes, Senders: f.Senders, NotSenders: f.NotSenders,
		ContainsURL: f.ContainsURL, LazyLoadMembers: f.LazyLoadMembers, IncludeRedundant: f.IncludeRedundantMembers,
	}
}

func newFilter(uf *users.Filter) *filter {
	f := &filter{timelineLimit: defaultTimelineLimit}
	if uf == nil || uf.Room == nil {
		return f
	}
	r := uf.Room
	f.rooms, f.notRooms, f.includeLeave = set(r.Rooms), set(r.NotRooms), r.IncludeLeave
	if r.Timeline != nil {
		if r.Timeline.Limit != nil {
			f.timelineLimit = *r.Timeline.Limit
		}
		f.timelineF = eventFilter(r.Timeline)
	}
	if r.State != nil {
		f.stateF = eventFilter(r.State)
		f.lazyMembers = r.State.LazyLoadMembers
	}
	return f
}

func (f *filter) roomAllowed(roomID string) bool {
	if f.rooms != nil && !f.rooms[roomID] {
		return false
	}
	return !f.notRooms[roomID]
}

func (f *filter) timeline(evs []*roomserver.Event) []*roomserver.Event {
	if f.timelineF == nil {
		return evs
	}
	out := evs[:0:0]
	for _, ev := range evs {
		if f.timelineF.Match(ev) {
			out = append(out, ev)
		}
	}
	return out
}

// stateWanted applies the state filter and, for lazy-loading clients, keeps
// only the member events of the timeline's senders and the user's own.
// https://spec.matrix.org/v1.19/client-server-api/#lazy-loading-room-members
func (f *filter) stateWanted(ev *roomserver.Event, timeline []*roomserver.Event, userID string) bool {
	if f.stateF != nil && !f.stateF.Match(ev) {
		return false
	}
	if !f.lazyMembers || ev.Type() != spec.MRoomMember || ev.StateKey() == nil {
		return true
	}
	target := *ev.StateKey()
	if target == userID {
		return true
	}
	for _, t := range timeline {
		if string(t.SenderID()) == target {
			return true
		}
	}
	return false
}
