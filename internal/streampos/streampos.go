// Package streampos holds the in-memory copy of a stream's latest committed
// position, which sync reads on every response, and (Writers) the
// persisted position of a stream whose writers commit concurrently.
package streampos

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// Position is a stream position that only moves forward. Writers take
// positions inside their transactions and publish them after committing;
// transactions commit in position order, but their publishing may not run
// in that order, so Advance never lowers the position.
type Position struct{ v atomic.Int64 }

// Load returns the position.
func (p *Position) Load() int64 { return p.v.Load() }

// Advance raises the position to pos if it is lower.
func (p *Position) Advance(pos int64) {
	for {
		cur := p.v.Load()
		if pos <= cur || p.v.CompareAndSwap(cur, pos) {
			return
		}
	}
}

// Writers tracks the positions of a stream whose writers commit
// concurrently, as Synapse's MultiWriterIdGenerator does: positions are
// handed out in increasing order, but the transactions holding them may
// commit in any order, so the position readers may use is the persisted
// one, below which every position handed out has finished (committed or
// been abandoned). A reader that went up to a position beyond it could
// skip an event that commits late, below the reader's token.
type Writers struct {
	// alloc serialises Allocate: positions must be registered in the
	// order they were taken, or a later one could finish, and the
	// persisted position pass an earlier one, before that earlier one
	// was registered.
	alloc sync.Mutex

	mu         sync.Mutex
	persisted  int64
	maxSeen    int64
	unfinished map[int64]struct{}
}

// NewWriters starts at persisted: every position up to it has committed.
func NewWriters(persisted int64) *Writers {
	return &Writers{persisted: persisted, maxSeen: persisted, unfinished: map[int64]struct{}{}}
}

// Allocate takes n positions with fetch (a database sequence, which hands
// each out once) and registers them as unfinished. Each must then be
// passed to Finish, whether its transaction committed or not.
func (w *Writers) Allocate(n int, fetch func(n int) ([]int64, error)) ([]int64, error) {
	if n == 0 {
		return nil, nil
	}
	w.alloc.Lock()
	defer w.alloc.Unlock()
	ids, err := fetch(n)
	if err != nil {
		return nil, err
	}
	if len(ids) != n {
		return nil, fmt.Errorf("streampos: asked for %d positions, got %d", n, len(ids))
	}
	slices.Sort(ids)
	w.mu.Lock()
	defer w.mu.Unlock()
	if ids[0] <= w.maxSeen {
		// Another process writes the stream, or the sequence was reset
		// below positions already used: the order cannot be kept.
		return nil, fmt.Errorf("streampos: position %d handed out after %d", ids[0], w.maxSeen)
	}
	for _, id := range ids {
		w.unfinished[id] = struct{}{}
	}
	w.maxSeen = ids[len(ids)-1]
	return ids, nil
}

// Finish marks ids (from Allocate) finished and returns the persisted
// position before and after: positions from < p <= to are now readable.
func (w *Writers) Finish(ids []int64) (from, to int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, id := range ids {
		delete(w.unfinished, id)
	}
	from = w.persisted
	to = w.maxSeen
	for id := range w.unfinished {
		to = min(to, id-1)
	}
	w.persisted = max(from, to)
	return from, w.persisted
}

// Persisted is the position up to which every position has finished.
func (w *Writers) Persisted() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.persisted
}
