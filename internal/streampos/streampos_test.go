package streampos

import (
	"context"
	"errors"
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

// A follower applies ranges: a notification that arrives late or out of
// order is covered by the one before it, a lost one by the next, and a
// failed apply is tried again by the next.
func TestFollowerAppliesRanges(t *testing.T) {
	ctx := context.Background()
	committed := int64(0)
	var ranges [][2]int64
	fail := false
	f := NewFollower(3, func(context.Context) (int64, error) { return committed, nil },
		func(_ context.Context, from, to int64) error {
			if fail {
				return errors.New("database down")
			}
			ranges = append(ranges, [2]int64{from, to})
			return nil
		})
	steps := []struct {
		pos  int64
		fail bool
	}{
		{pos: 5},             // (3, 5]
		{pos: 4},             // late: covered
		{pos: 5},             // again: nothing
		{pos: 7, fail: true}, // not applied
		{pos: 9},             // (5, 9]: 6 and 7 with it
		{pos: 0},             // counter at 12: (9, 12]
	}
	committed = 12
	for _, st := range steps {
		fail = st.fail
		err := f.Moved(ctx, st.pos)
		if (err != nil) != st.fail {
			t.Fatalf("Moved(%d): %v", st.pos, err)
		}
	}
	want := [][2]int64{{3, 5}, {5, 9}, {9, 12}}
	if len(ranges) != len(want) {
		t.Fatalf("applied %v, want %v", ranges, want)
	}
	for i := range want {
		if ranges[i] != want[i] {
			t.Fatalf("applied %v, want %v", ranges, want)
		}
	}
}
