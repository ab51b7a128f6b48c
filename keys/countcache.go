package keys

import (
	"sync"
	"sync/atomic"
)

// countCache keeps each device's one-time key counts and unused fallback
// key types, which every /sync response carries: without it each sync of
// each device costs two queries for numbers that change only when keys are
// uploaded or claimed.
//
// Every write transaction of the key store bumps the generation once it
// has committed, dropping every entry; a reader takes the generation
// before it queries and caches its answer under it, so an answer read
// before a commit cannot outlive it. Writes are rare next to syncs.
type countCache struct {
	gen atomic.Uint64
	mu  sync.Mutex
	m   map[string]deviceCounts
}

type deviceCounts struct {
	gen       uint64
	otk       map[string]int
	fallbacks []string
	hasOTK    bool
	hasFB     bool
}

// maxCountEntries bounds the cache; when full it starts again empty.
const maxCountEntries = 20000

func countKey(userID, deviceID string) string { return userID + "\x00" + deviceID }

func (c *countCache) invalidate() {
	c.gen.Add(1)
	c.mu.Lock()
	c.m = nil
	c.mu.Unlock()
}

func (c *countCache) get(key string) deviceCounts {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[key]
	if e.gen != c.gen.Load() {
		return deviceCounts{}
	}
	return e
}

// update applies f to the entry of key if gen is still current.
func (c *countCache) update(key string, gen uint64, f func(*deviceCounts)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen.Load() {
		return
	}
	e := c.m[key]
	if e.gen != gen {
		e = deviceCounts{gen: gen}
	}
	f(&e)
	if c.m == nil || len(c.m) >= maxCountEntries {
		c.m = make(map[string]deviceCounts)
	}
	c.m[key] = e
}
