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
