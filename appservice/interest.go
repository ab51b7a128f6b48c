package appservice

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/roomserver"
)

// Which events a service is interested in: those sent by a user in its
// namespaces, member events about one (invites to its users), and every
// event of a room with an ID in its rooms namespaces, an alias in its
// aliases namespaces, or a joined member in its users namespaces.
// https://spec.matrix.org/v1.19/application-service-api/#namespaces

// maxInterestRooms bounds the membership cache; past it, it starts afresh.
const maxInterestRooms = 50_000

// aliasTTL is how long a room's local aliases are cached: creating an
// alias is no event, so the cache cannot be told.
const aliasTTL = 10 * time.Second

type interest struct {
	rooms      Rooms
	serverName string

	mu    sync.Mutex
	cache map[string]*roomInterest
	// memberGen counts the member events observed: a room read while it
	// moved may have missed one, and is used but not cached.
	memberGen uint64
	// observedPos is the stream position of the last event observed: the
	// cache holds every membership change up to it. An event after it
	// (a sender can read committed events before the listener has run)
	// is judged on the members read afresh.
	observedPos int64
}

// roomInterest is what is cached of one room.
type roomInterest struct {
	members map[string]bool
	// byService is, per service ID, whether a joined member is in its
	// user namespaces; dropped whenever the membership changes.
	byService map[string]bool
	aliases   []string
	aliasesAt time.Time
}

func newInterest(rooms Rooms, serverName string) *interest {
	return &interest{rooms: rooms, serverName: serverName, cache: map[string]*roomInterest{}}
}

// observe applies committed member events to the cached rooms (a room not
// cached is read whole when it is next needed) and forgets the aliases of
// rooms whose canonical alias changed.
func (in *interest) observe(evs []*roomserver.Event) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, ev := range evs {
		in.observedPos = max(in.observedPos, ev.StreamPos)
		if ev.Type() == spec.MRoomMember {
			in.memberGen++
		}
		ri, ok := in.cache[ev.RoomID]
		if !ok || ev.StateKey() == nil {
			continue
		}
		switch ev.Type() {
		case spec.MRoomMember:
			target := *ev.StateKey()
			if m, _ := ev.Membership(); m == spec.Join {
				ri.members[target] = true
			} else {
				delete(ri.members, target)
			}
			clear(ri.byService)
		case "m.room.canonical_alias":
			ri.aliasesAt = time.Time{}
		}
	}
}

// load returns the room's cache entry, reading its members on a miss,
// or when the cache may not have caught up with stream position pos yet.
func (in *interest) load(ctx context.Context, roomID string, pos int64) (*roomInterest, error) {
	in.mu.Lock()
	ri, ok := in.cache[roomID]
	gen := in.memberGen
	behind := pos > in.observedPos
	in.mu.Unlock()
	if ok && !behind {
		return ri, nil
	}
	list, err := in.rooms.JoinedUsers(ctx, roomID)
	if err != nil {
		return nil, err
	}
	ri = &roomInterest{members: make(map[string]bool, len(list)), byService: map[string]bool{}}
	for _, u := range list {
		ri.members[u] = true
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if behind {
		return ri, nil // fresh, but the cache is left to the listener
	}
	if cur, ok := in.cache[roomID]; ok {
		return cur, nil
	}
	if in.memberGen != gen {
		// A member event committed meanwhile may or may not be in
		// what was read: good for now (it is at least as new as the
		// events being sent), not to keep.
		return ri, nil
	}
	if len(in.cache) >= maxInterestRooms {
		in.cache = map[string]*roomInterest{}
	}
	in.cache[roomID] = ri
	return ri, nil
}

// membersInterest reports whether a joined member of the room is in the
// service's user namespaces.
func (in *interest) membersInterest(ctx context.Context, r *Registration, roomID string) bool {
	v, _ := in.membersInterestErr(ctx, r, roomID, 0)
	return v
}

// membersInterestErr is membersInterest for an event at stream position
// pos (0: now).
func (in *interest) membersInterestErr(ctx context.Context, r *Registration, roomID string, pos int64) (bool, error) {
	ri, err := in.load(ctx, roomID, pos)
	if err != nil {
		return false, err
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if v, ok := ri.byService[r.ID]; ok {
		return v, nil
	}
	v := false
	for u := range ri.members {
		if r.InterestedInUser(u, in.serverName) {
			v = true
			break
		}
	}
	ri.byService[r.ID] = v
	return v, nil
}

// aliasInterest reports whether one of the room's local aliases is in
// the service's alias namespaces.
func (in *interest) aliasInterest(ctx context.Context, r *Registration, roomID string) (bool, error) {
	if len(r.Namespaces.Aliases) == 0 {
		return false, nil
	}
	ri, err := in.load(ctx, roomID, 0)
	if err != nil {
		return false, err
	}
	in.mu.Lock()
	aliases, fresh := ri.aliases, time.Since(ri.aliasesAt) < aliasTTL
	in.mu.Unlock()
	if !fresh {
		if aliases, err = in.rooms.Aliases(ctx, roomID); err != nil {
			return false, err
		}
		in.mu.Lock()
		ri.aliases, ri.aliasesAt = aliases, time.Now()
		in.mu.Unlock()
	}
	for _, a := range aliases {
		if r.InterestedInAlias(a) {
			return true, nil
		}
	}
	return false, nil
}

// room reports whether the service is interested in everything that
// happens in the room (false when that cannot be read: for ephemeral
// events, which are not retried).
func (in *interest) room(ctx context.Context, r *Registration, roomID string) bool {
	v, _ := in.roomErr(ctx, r, roomID, 0)
	return v
}

func (in *interest) roomErr(ctx context.Context, r *Registration, roomID string, pos int64) (bool, error) {
	if r.InterestedInRoom(roomID) {
		return true, nil
	}
	if v, err := in.membersInterestErr(ctx, r, roomID, pos); v || err != nil {
		return v, err
	}
	return in.aliasInterest(ctx, r, roomID)
}

// event reports whether the service is interested in the event; an
// error (the room's members could not be read) makes the caller try again
// rather than skip the event.
func (in *interest) event(ctx context.Context, r *Registration, serverName string, ev *roomserver.Event) (bool, error) {
	if r.InterestedInUser(string(ev.SenderID()), serverName) {
		return true, nil
	}
	if sk := ev.StateKey(); sk != nil {
		switch ev.Type() {
		case spec.MRoomMember:
			if r.InterestedInUser(*sk, serverName) {
				return true, nil
			}
		case "m.room.canonical_alias":
			var c struct {
				Alias      string   `json:"alias"`
				AltAliases []string `json:"alt_aliases"`
			}
			if json.Unmarshal(ev.Content(), &c) == nil {
				for _, a := range append(c.AltAliases, c.Alias) {
					if a != "" && r.InterestedInAlias(a) {
						return true, nil
					}
				}
			}
		}
	}
	return in.roomErr(ctx, r, ev.RoomID, ev.StreamPos)
}
