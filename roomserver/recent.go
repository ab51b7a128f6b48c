package roomserver

import (
	"slices"
	"sync"
)

// recentEvents remembers the stream positions and IDs of each room's latest
// events, as the committer writes them, so that the question every
// incremental sync asks of every room, "which events are new here since my
// token", is answered without a query. The events themselves come from the
// event cache, which keeps redactions right.
//
// The committer is the only writer of events and writes them in stream
// order, so a ring created while a batch is added holds every event of its
// room after that batch's start.
type recentEvents struct {
	mu       sync.Mutex
	perRoom  int
	maxRooms int
	// complete: every event after this position is in the ring of its room;
	// a room without a ring had no events since.
	complete int64
	rooms    map[string]*recentRing
}

type recentRing struct {
	// floor: every event of the room after this position is in evs.
	floor int64
	evs   []recentEvent // ascending stream position
}

type recentEvent struct {
	pos int64
	id  string
}

func newRecentEvents(perRoom, maxRooms int, startPos int64) *recentEvents {
	return &recentEvents{perRoom: perRoom, maxRooms: maxRooms, complete: startPos, rooms: map[string]*recentRing{}}
}

// add records a committed batch: the events after batchStart, in stream
// order.
func (r *recentEvents) add(batchStart int64, evs []*Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.rooms) >= r.maxRooms {
		// Too many rooms: start again, complete from this batch on.
		r.rooms = map[string]*recentRing{}
		r.complete = batchStart
	}
	for _, ev := range evs {
		ring := r.rooms[ev.RoomID]
		if ring == nil {
			ring = &recentRing{floor: batchStart}
			r.rooms[ev.RoomID] = ring
		}
		if len(ring.evs) == r.perRoom {
			ring.floor = ring.evs[0].pos
			copy(ring.evs, ring.evs[1:])
			ring.evs = ring.evs[:len(ring.evs)-1]
		}
		ring.evs = append(ring.evs, recentEvent{pos: ev.StreamPos, id: ev.EventID()})
	}
}

// window returns the IDs of the newest limit events of the room with
// from < position <= to, oldest first, and whether older ones in the range
// were left out. ok is false when the answer is not known from memory.
func (r *recentEvents) window(roomID string, from, to int64, limit int) (ids []string, limited, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ring := r.rooms[roomID]
	if ring == nil {
		return nil, false, from >= r.complete
	}
	hi := len(ring.evs)
	for hi > 0 && ring.evs[hi-1].pos > to {
		hi--
	}
	lo := hi
	for lo > 0 && ring.evs[lo-1].pos > from && hi-lo <= limit {
		lo--
	}
	n := hi - lo
	switch {
	case n > limit:
		lo++ // the ring holds more than limit: the answer is limited
		limited = true
	case from >= ring.floor || (lo > 0 && ring.evs[lo-1].pos <= from):
		// Every event of the range is in the ring.
	default:
		return nil, false, false
	}
	ids = make([]string, 0, hi-lo)
	for _, e := range ring.evs[lo:hi] {
		ids = append(ids, e.id)
	}
	return ids, limited, true
}

// remove drops purged events from the room's ring. Every event after the
// floor that still exists stays in the ring, so the ring stays complete.
func (r *recentEvents) remove(roomID string, ids []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ring := r.rooms[roomID]
	if ring == nil {
		return
	}
	gone := make(map[string]bool, len(ids))
	for _, id := range ids {
		gone[id] = true
	}
	ring.evs = slices.DeleteFunc(ring.evs, func(e recentEvent) bool { return gone[e.id] })
}
