package roomserver

// State resolution v2.1 (room version 12) around a gomatrixserverlib bug.
//
// gomatrixserverlib's ResolveConflictsNew, for v2.1, starts from an empty
// partial state, as the algorithm says, but then sorts the conflicted
// power events by their senders' power, which in v12 needs the create
// event (creators rank above every level): it reads it from the partial
// state, where nothing has put it yet, and panics with "missing resolved
// create event" whenever a power event (power levels, join rules, a kick
// or ban) is conflicted. In v12 the create event is known before any
// resolution (the room ID is its hash, and every auth check uses it), so
// we run the steps through the entry point that takes the conflicted and
// unconflicted sets from us (ResolveStateConflictsV2), which puts the
// create event in the partial state first; the full conflicted set of
// v2.1 (with the auth difference and the conflicted subgraph) is worked
// out here, and the unconflicted state is laid over the result.
// https://spec.matrix.org/v1.19/rooms/v12/#state-resolution

import (
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// resolveV21 resolves sets by state resolution v2.1. byID holds every
// event of the sets and of their auth chains.
func resolveV21(sets []map[tuple]*Event, byID map[string]*Event) (map[tuple]*Event, bool) {
	// Unconflicted: the same event for a key in every set.
	unconflicted := map[tuple]*Event{}
	conflicted := map[string]*Event{}
	keys := map[tuple]bool{}
	for _, set := range sets {
		for t := range set {
			keys[t] = true
		}
	}
	for t := range keys {
		first := sets[0][t]
		same := first != nil
		for _, set := range sets[1:] {
			if ev := set[t]; ev == nil || first == nil || ev.EventID() != first.EventID() {
				same = false
			}
		}
		if same {
			unconflicted[t] = first
			continue
		}
		for _, set := range sets {
			if ev := set[t]; ev != nil {
				conflicted[ev.EventID()] = ev
			}
		}
	}
	create := unconflicted[tuple{spec.MRoomCreate, ""}]
	if create == nil {
		return nil, false // no agreed create event: not a room we can resolve
	}

	// The auth chain of a set of events, by event ID.
	chainOf := func(evs []*Event) map[string]bool {
		seen := map[string]bool{}
		var next []string
		for _, ev := range evs {
			next = append(next, ev.AuthEventIDs()...)
		}
		for len(next) > 0 {
			id := next[len(next)-1]
			next = next[:len(next)-1]
			if seen[id] {
				continue
			}
			if ev := byID[id]; ev != nil {
				seen[id] = true
				next = append(next, ev.AuthEventIDs()...)
			}
		}
		return seen
	}

	full := map[string]*Event{}
	for id, ev := range conflicted {
		full[id] = ev
	}
	// The auth difference: in the auth chain of some set but not all.
	union, inAll := map[string]int{}, len(sets)
	for _, set := range sets {
		evs := make([]*Event, 0, len(set))
		for _, ev := range set {
			evs = append(evs, ev)
		}
		for id := range chainOf(evs) {
			union[id]++
		}
	}
	for id, n := range union {
		if n < inAll {
			full[id] = byID[id]
		}
	}
	// The conflicted subgraph: events on an auth path from one
	// conflicted event to another.
	conflictedList := make([]*Event, 0, len(conflicted))
	for _, ev := range conflicted {
		conflictedList = append(conflictedList, ev)
	}
	reaches := map[string]bool{}
	visiting := map[string]bool{}
	var reachesConflicted func(id string) bool
	reachesConflicted = func(id string) bool {
		if r, ok := reaches[id]; ok {
			return r
		}
		ev := byID[id]
		if ev == nil || visiting[id] {
			return false
		}
		visiting[id] = true
		r := false
		for _, a := range ev.AuthEventIDs() {
			if conflicted[a] != nil || reachesConflicted(a) {
				r = true
			}
		}
		reaches[id] = r
		return r
	}
	for id := range chainOf(conflictedList) {
		if reachesConflicted(id) {
			full[id] = byID[id]
		}
	}

	fullPDUs := make([]gomatrixserverlib.PDU, 0, len(full))
	for id, ev := range full {
		if id != create.EventID() && ev != nil {
			fullPDUs = append(fullPDUs, ev.PDU)
		}
	}
	authPDUs := make([]gomatrixserverlib.PDU, 0, len(byID))
	for _, ev := range byID {
		authPDUs = append(authPDUs, ev.PDU)
	}
	// The partial state starts from the unconflicted state, not from the
	// create event alone as v2.1 says: gomatrixserverlib's fallback to an
	// event's own auth events for state the partial state lacks adds the
	// event itself instead (authAndApplyEvents, addFromAuthEventsIfNotRejected),
	// so from an (almost) empty start every conflicted event would fail its
	// checks for want of its sender's membership. This is v2's start; the
	// rest of the steps are v2.1's.
	startPDUs := make([]gomatrixserverlib.PDU, 0, len(unconflicted))
	for _, ev := range unconflicted {
		startPDUs = append(startPDUs, ev.PDU)
	}
	resolved := gomatrixserverlib.ResolveStateConflictsV2(fullPDUs, startPDUs, authPDUs, UserIDForSender,
		func(string) bool { return false }) // rejected events never reach a state set
	out := make(map[tuple]*Event, len(resolved)+len(unconflicted))
	for _, p := range resolved {
		if sk := p.StateKey(); sk != nil {
			if ev := byID[p.EventID()]; ev != nil {
				out[tuple{p.Type(), *sk}] = ev
			}
		}
	}
	// Last, the unconflicted state goes over what was resolved.
	for t, ev := range unconflicted {
		out[t] = ev
	}
	return out, true
}
