package syncapi

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/tessera-hs/tessera/users"
)

// Typing keeps who is typing in which room, and is the typing stream of
// /sync, which delivers it as m.typing ephemeral events.
// https://spec.matrix.org/v1.19/client-server-api/#typing-notifications
//
// Typing is ephemeral, so it lives in memory only. Each user's typing ends
// on a timer (time.AfterFunc) at its timeout; nothing polls. Every change
// of a room's set of typing users takes the next stream position and wakes
// the room's members.
//
// Positions start at the clock's milliseconds when the server starts, not
// at 0, so that they keep growing across a restart: a token from before a
// restart is then older than every change after it, and a client that
// syncs with one misses nothing. (Should the clock have gone back, the
// token is from the future and sync takes it as now: the client misses
// the typing changes of that one sync, but neither waits forever nor
// loops.)
type Typing struct {
	notifier *Notifier

	mu      sync.Mutex
	pos     int64
	rooms   map[string]*typingRoom
	stopped bool
	// onChange, if set, is told of each change of a room's typing users
	// (appservice.go).
	onChange func(roomID string, userIDs []string)
	// cluster shares typing with the other processes of a deployment
	// (typing_cluster.go); nil for one process.
	cluster *typingCluster
}

// typingRoom is a room's typing users. It stays after the last user stops,
// so that a sync from before then learns that the set is now empty.
type typingRoom struct {
	users map[string]*typist
	pos   int64 // position of the room's latest change
}

// typist is one user typing, until the timer fires.
type typist struct {
	timer *time.Timer
}

// maxTypingTimeout caps a typing timeout, as Synapse does (120 s): a
// client that asks for more is typing for two minutes unless it says
// again.
const maxTypingTimeout = 2 * time.Minute

func newTypingStream(n *Notifier) *Typing {
	return &Typing{notifier: n, pos: time.Now().UnixMilli(), rooms: map[string]*typingRoom{}}
}

// Typing is the server's typing state.
func (s *Service) Typing() *Typing {
	for _, st := range s.streams {
		if t, ok := st.(*Typing); ok {
			return t
		}
	}
	return nil
}

// Set starts (typing true) or ends a user's typing in a room. A timeout is
// capped at two minutes; 0 or less ends the typing at once. Starting again
// while typing only moves the end: the set of typing users, which is all
// clients see, does not change. The caller checks that the user may type
// in the room.
func (t *Typing) Set(roomID, userID string, typing bool, timeout time.Duration) {
	if typing && timeout <= 0 {
		typing = false
	}
	timeout = min(timeout, maxTypingTimeout)
	if c := t.cluster; c != nil {
		if !c.Owns(roomID) {
			t.delegate(roomID, userID, typing, timeout)
			return
		}
		// Changes are stored in the order they are made.
		c.pubMu.Lock()
		defer c.pubMu.Unlock()
	}
	t.mu.Lock()
	if t.stopped {
		t.mu.Unlock()
		return
	}
	room := t.rooms[roomID]
	changed := false
	if typing {
		if room == nil {
			room = &typingRoom{users: map[string]*typist{}}
			t.rooms[roomID] = room
		}
		if old, ok := room.users[userID]; ok {
			old.stop()
		} else {
			changed = true
		}
		tp := &typist{}
		tp.timer = time.AfterFunc(timeout, func() { t.expire(roomID, userID, tp) })
		room.users[userID] = tp
	} else if room != nil {
		if old, ok := room.users[userID]; ok {
			old.stop()
			delete(room.users, userID)
			changed = true
		}
	}
	var now []string
	if changed {
		now = t.usersLocked(room)
		if t.cluster == nil {
			t.pos++
			room.pos = t.pos
		}
	}
	t.mu.Unlock()
	if changed {
		t.changed(roomID, now)
	}
}

// changed tells of a change of a room's typing users: it wakes the room's
// members and the change hook, or, in a deployment of several processes,
// stores the change for them all (typing_cluster.go).
func (t *Typing) changed(roomID string, now []string) {
	if t.cluster != nil {
		t.publish(roomID, now)
		return
	}
	t.notifier.WakeRoom(roomID)
	if t.onChange != nil {
		t.onChange(roomID, now)
	}
}

// stop stops the typist's timer; a typist another process keeps
// (typing_cluster.go) has none.
func (tp *typist) stop() {
	if tp.timer != nil {
		tp.timer.Stop()
	}
}

// expire ends a user's typing when its timer fires, unless the user has
// started again (a new typist) or stopped since.
func (t *Typing) expire(roomID, userID string, tp *typist) {
	if c := t.cluster; c != nil {
		c.pubMu.Lock()
		defer c.pubMu.Unlock()
	}
	t.mu.Lock()
	room := t.rooms[roomID]
	if t.stopped || room == nil || room.users[userID] != tp {
		t.mu.Unlock()
		return
	}
	delete(room.users, userID)
	if t.cluster == nil {
		t.pos++
		room.pos = t.pos
	}
	now := t.usersLocked(room)
	t.mu.Unlock()
	t.changed(roomID, now)
}

// Stop cancels every timer; later calls change nothing. For shutdown.
func (t *Typing) Stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stopped = true
	for _, room := range t.rooms {
		for _, tp := range room.users {
			tp.stop()
		}
	}
}

// Users lists the users typing in a room, sorted.
func (t *Typing) Users(roomID string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.usersLocked(t.rooms[roomID])
}

func (t *Typing) usersLocked(room *typingRoom) []string {
	out := []string{}
	if room == nil {
		return out
	}
	for u := range room.users {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}

func (t *Typing) current(context.Context) (int64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pos, nil
}

// fill gives each joined room whose typing set changed after since its
// current set: m.typing replaces what the client knew, so one event with
// the set as it is now says everything. An initial sync gets the rooms
// where someone is typing, and so does a room the user joined since the
// token.
func (t *Typing) fill(_ context.Context, sc *syncContext, since, now int64) (bool, error) {
	if len(sc.joined) == 0 || !ephemeralWanted(sc.req.Filter, "m.typing") {
		return false, nil
	}
	var joinedNow map[string]bool
	if !sc.initial {
		joinedNow, _ = joinsInResponse(sc)
		if since >= now && len(joinedNow) == 0 {
			return false, nil
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	news := false
	for _, roomID := range sc.joined {
		room := t.rooms[roomID]
		if room == nil {
			continue
		}
		switch {
		case sc.initial || joinedNow[roomID]:
			if len(room.users) == 0 {
				continue
			}
		case room.pos <= since || room.pos > now:
			// Unchanged, or changed after this response's token (the
			// next sync has it).
			continue
		}
		jr := sc.joinedRoom(roomID)
		jr.Ephemeral.Events = append(jr.Ephemeral.Events, map[string]any{
			"type": "m.typing", "content": map[string]any{"user_ids": t.usersLocked(room)},
		})
		news = true
	}
	return news, nil
}

// ephemeralWanted applies the room filter's ephemeral section to an
// ephemeral event type.
func ephemeralWanted(f *users.Filter, typ string) bool {
	if f == nil || f.Room == nil || f.Room.Ephemeral == nil {
		return true
	}
	return filterTypeWanted(&f.Room.Ephemeral.EventFilter, typ)
}
