package users

import (
	"sync"
	"sync/atomic"
)

// authCache remembers recent successful token lookups, so that a request
// does not cost a database query to authenticate. Every request pays for
// authentication, and most come from a few long-lived sessions (a client
// long-polling /sync, a bot sending).
//
// Entries are invalidated wholesale: any commit that deletes tokens or
// devices, or deactivates an account, bumps the generation, and an entry
// from an older generation is a miss. Such changes are rare next to
// requests, and a generation cannot miss a case the way per-key eviction
// can. The generation is read before the database is, so a lookup that
// races with a logout caches its answer under the old generation, already
// invalid once the logout's commit bumps it.
type authCache struct {
	gen atomic.Uint64
	mu  sync.Mutex
	m   map[string]authEntry // by token hash
}

// maxAuthEntries bounds the cache; when full it starts again empty.
const maxAuthEntries = 10000

type authEntry struct {
	r        Requester
	expires  int64 // ms; 0 never
	lastSeen int64 // ms, as stored
	gen      uint64
}

// generation is the current generation, to read before a lookup.
func (c *authCache) generation() uint64 { return c.gen.Load() }

// invalidate drops every entry; call it after the commit of anything that
// may end a token's validity.
func (c *authCache) invalidate() {
	c.gen.Add(1)
	c.mu.Lock()
	c.m = nil
	c.mu.Unlock()
}

func (c *authCache) get(hash string) (authEntry, bool) {
	c.mu.Lock()
	e, ok := c.m[hash]
	c.mu.Unlock()
	if !ok || e.gen != c.gen.Load() {
		return authEntry{}, false
	}
	return e, true
}

func (c *authCache) put(hash string, e authEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e.gen != c.gen.Load() {
		return
	}
	if c.m == nil || len(c.m) >= maxAuthEntries {
		c.m = make(map[string]authEntry)
	}
	c.m[hash] = e
}
