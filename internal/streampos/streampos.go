// Package streampos holds the in-memory copy of a stream's latest committed
// position, which sync reads on every response, and (Writers) the
// persisted position of a stream whose writers commit concurrently.
package streampos

import (
	"context"
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

// Follower applies, in one process of a deployment of several sharing a
// PostgreSQL database (docs/scaling.md), the positions the other processes
// commit to a stream whose positions come from a counter row that each
// write transaction increments (UPDATE ... SET pos = pos + 1): the row
// lock makes the writers of all processes commit one after the other in
// position order, so a committed position N means every position below N
// has committed (or rolled back) too. A writer announces its position in
// its transaction (NOTIFY, delivered only on commit); Moved then reads
// what changed since the last position it applied and hands that range to
// apply, which advances the stream's position and wakes whom the changes
// concern. Ranges, not single positions, are applied: a notification that
// arrives late, or was lost while the listening connection was down, is
// covered by the next one.
type Follower struct {
	// read is the stream's committed position (the counter row).
	read func(ctx context.Context) (int64, error)
	// apply makes the changes in (from, to] visible and wakes their
	// readers.
	apply func(ctx context.Context, from, to int64) error

	mu      sync.Mutex
	applied int64
}

// NewFollower follows a stream from position start (what the process
// loaded at start-up).
func NewFollower(start int64, read func(ctx context.Context) (int64, error), apply func(ctx context.Context, from, to int64) error) *Follower {
	return &Follower{read: read, apply: apply, applied: start}
}

// Moved applies the positions up to pos that another process committed;
// pos 0 reads the counter (after a lost listening connection, or when a
// client's token is ahead of this process).
func (f *Follower) Moved(ctx context.Context, pos int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if pos == 0 {
		var err error
		if pos, err = f.read(ctx); err != nil {
			return err
		}
	}
	if pos <= f.applied {
		return nil
	}
	if err := f.apply(ctx, f.applied, pos); err != nil {
		return err
	}
	f.applied = pos
	return nil
}
