// Package gencache is a bounded in-memory cache of values read from the
// database, invalidated wholesale by a generation counter.
//
// It suits data read on every request and written rarely (access tokens,
// ignore lists, key counts): any commit that may change any entry calls
// Invalidate once it has committed. A reader takes the generation with
// Generation before it reads the database, and Put stores its answer only
// if no invalidation happened since, so an answer read before a commit
// never outlives it. Invalidating everything is coarse, but it cannot miss
// a case the way per-key eviction can.
package gencache

import (
	"sync"
	"sync/atomic"
)

// Cache maps K to V; the zero value is not usable, use New.
type Cache[K comparable, V any] struct {
	max int
	gen atomic.Uint64
	mu  sync.Mutex
	m   map[K]entry[V]
}

type entry[V any] struct {
	gen uint64
	v   V
}

// New returns a cache of at most max entries; when full it starts again
// empty.
func New[K comparable, V any](max int) *Cache[K, V] { return &Cache[K, V]{max: max} }

// Generation is the current generation, to read before the database.
func (c *Cache[K, V]) Generation() uint64 { return c.gen.Load() }

// Get returns the cached value of k, if any is current.
func (c *Cache[K, V]) Get(k K) (V, bool) {
	c.mu.Lock()
	e, ok := c.m[k]
	c.mu.Unlock()
	if !ok || e.gen != c.gen.Load() {
		var zero V
		return zero, false
	}
	return e.v, true
}

// Put stores v for k, read at generation gen; nothing is stored when an
// invalidation came since.
func (c *Cache[K, V]) Put(k K, gen uint64, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen.Load() {
		return
	}
	if c.m == nil || len(c.m) >= c.max {
		c.m = make(map[K]entry[V])
	}
	c.m[k] = entry[V]{gen: gen, v: v}
}

// Invalidate drops every entry; call it after the commit of anything that
// may change one.
func (c *Cache[K, V]) Invalidate() {
	c.gen.Add(1)
	c.mu.Lock()
	c.m = nil
	c.mu.Unlock()
}
