package push

import (
	"maps"
	"sync"
)

// countCache keeps the unread counts of the (user, room) pairs that syncs
// have asked for, so that a sync does not query them again: the
// evaluation goroutine adds each new notification to the counts it
// affects, and a change of receipts in a room, or an event a user sends
// there, drops the room's (or the user's) counts, to be counted afresh.
//
// A count being computed is registered first; a change that touches it
// meanwhile marks it dirty, and a dirty result is returned but not kept.
type countCache struct {
	mu      sync.Mutex
	entries map[countKey]*countEntry
	byRoom  map[string]map[string]bool // room -> users with an entry
}

type countKey struct{ userID, roomID string }

type countEntry struct {
	computing, dirty bool
	read             readUpTo
	byThread         map[string]Counts
}

// maxCountEntries bounds the cache; it is emptied when full.
const maxCountEntries = 200_000

func newCountCache() *countCache {
	return &countCache{entries: map[countKey]*countEntry{}, byRoom: map[string]map[string]bool{}}
}

// lookup returns the cached counts of a user in a room, by thread.
func (c *countCache) lookup(userID, roomID string) (map[string]Counts, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[countKey{userID, roomID}]
	if !ok || e.computing {
		return nil, false
	}
	return maps.Clone(e.byThread), true
}

// begin registers a count about to be computed; nil if another is being
// computed (the caller computes without caching).
func (c *countCache) begin(userID, roomID string) *countEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := countKey{userID, roomID}
	if e, ok := c.entries[k]; ok && e.computing {
		return nil
	}
	if len(c.entries) >= maxCountEntries {
		c.entries, c.byRoom = map[countKey]*countEntry{}, map[string]map[string]bool{}
	}
	e := &countEntry{computing: true}
	c.entries[k] = e
	users := c.byRoom[roomID]
	if users == nil {
		users = map[string]bool{}
		c.byRoom[roomID] = users
	}
	users[userID] = true
	return e
}

// finish keeps a computed count, unless it went stale while computed.
// A nil byThread (a failed count) drops the entry.
func (c *countCache) finish(userID, roomID string, e *countEntry, read readUpTo, byThread map[string]Counts) {
	if e == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	k := countKey{userID, roomID}
	if c.entries[k] != e {
		return
	}
	if e.dirty || byThread == nil {
		c.remove(k)
		return
	}
	e.computing, e.read, e.byThread = false, read, maps.Clone(byThread)
}

// addRows counts new notifications in the entries they affect.
func (c *countCache) addRows(rows []actionRow) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range rows {
		e, ok := c.entries[countKey{r.userID, r.roomID}]
		switch {
		case !ok:
		case e.computing:
			e.dirty = true
		case !e.read.isRead(r.threadID, r.pos):
			n := e.byThread[r.threadID]
			if r.outcome.Notify {
				n.Notifications++
				if rings(r.actions) {
					n.calls++
				}
			}
			if r.outcome.Highlight {
				n.Highlights++
			}
			e.byThread[r.threadID] = n
		}
	}
}

// invalidate drops (or marks dirty) the counts of a user in a room.
func (c *countCache) invalidate(userID, roomID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.invalidateLocked(countKey{userID, roomID})
}

// invalidateRoom drops (or marks dirty) every user's counts in a room.
func (c *countCache) invalidateRoom(roomID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for u := range c.byRoom[roomID] {
		c.invalidateLocked(countKey{u, roomID})
	}
}

func (c *countCache) invalidateLocked(k countKey) {
	e, ok := c.entries[k]
	switch {
	case !ok:
	case e.computing:
		e.dirty = true
	default:
		c.remove(k)
	}
}

func (c *countCache) remove(k countKey) {
	delete(c.entries, k)
	if users := c.byRoom[k.roomID]; users != nil {
		delete(users, k.userID)
		if len(users) == 0 {
			delete(c.byRoom, k.roomID)
		}
	}
}

// invalidateAll drops (or marks dirty) every count.
func (c *countCache) invalidateAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.entries {
		c.invalidateLocked(k)
	}
}
