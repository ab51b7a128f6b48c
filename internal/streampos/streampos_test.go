package streampos

import (
	"sync"
	"testing"
)

func TestAdvanceNeverLowers(t *testing.T) {
	var p Position
	var wg sync.WaitGroup
	for i := range 1000 {
		wg.Go(func() { p.Advance(int64(i)) })
	}
	wg.Wait()
	if got := p.Load(); got != 999 {
		t.Fatalf("position %d after advancing to 0..999 in any order, want 999", got)
	}
	p.Advance(5)
	if got := p.Load(); got != 999 {
		t.Fatalf("Advance(5) lowered the position to %d", got)
	}
}

// seq is a sequence for Writers.Allocate.
func seq(next *int64) func(n int) ([]int64, error) {
	return func(n int) ([]int64, error) {
		var ids []int64
		for range n {
			*next++
			ids = append(ids, *next)
		}
		return ids, nil
	}
}

func TestWritersPersistedWaitsForEarlierPositions(t *testing.T) {
	next := int64(10)
	w := NewWriters(10)
	a, _ := w.Allocate(2, seq(&next)) // 11, 12
	b, _ := w.Allocate(1, seq(&next)) // 13
	c, _ := w.Allocate(3, seq(&next)) // 14, 15, 16
	steps := []struct {
		finish   []int64
		from, to int64
	}{
		{b, 10, 10}, // 13 committed, 11 and 12 still running: nothing readable
		{c, 10, 10},
		{a, 10, 16}, // the first finishes: all of them become readable
	}
	for i, s := range steps {
		from, to := w.Finish(s.finish)
		if from != s.from || to != s.to {
			t.Fatalf("step %d: Finish(%v) = (%d, %d), want (%d, %d)", i, s.finish, from, to, s.from, s.to)
		}
	}
	d, _ := w.Allocate(1, seq(&next)) // 17
	e, _ := w.Allocate(1, seq(&next)) // 18
	if from, to := w.Finish(d); from != 16 || to != 17 {
		t.Fatalf("Finish(17) = (%d, %d), want (16, 17)", from, to)
	}
	if got := w.Persisted(); got != 17 {
		t.Fatalf("Persisted() = %d with 18 unfinished, want 17", got)
	}
	if _, to := w.Finish(e); to != 18 {
		t.Fatalf("persisted %d after every position finished, want 18", to)
	}
	// A sequence that went backwards is refused rather than reordering.
	back := int64(5)
	if _, err := w.Allocate(1, seq(&back)); err == nil {
		t.Fatal("Allocate accepted position 6 after 18")
	}
}

func TestWritersConcurrent(t *testing.T) {
	var next int64
	w := NewWriters(0)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range 50 {
		wg.Go(func() {
			ids, err := w.Allocate(3, func(n int) ([]int64, error) {
				mu.Lock()
				defer mu.Unlock()
				return seq(&next)(n)
			})
			if err != nil {
				t.Error(err)
				return
			}
			w.Finish(ids)
		})
	}
	wg.Wait()
	if got := w.Persisted(); got != 150 {
		t.Fatalf("persisted %d after 50 writers of 3 positions finished, want 150", got)
	}
}
