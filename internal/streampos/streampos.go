// Package streampos holds the in-memory copy of a stream's latest committed
// position, which sync reads on every response.
package streampos

import "sync/atomic"

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
