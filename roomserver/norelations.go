package roomserver

import (
	"sync"
	"sync/atomic"
)

// noRelations remembers events found to have no child relations (edits,
// references, thread replies), so that formatting them again for the next
// reader skips the two queries: fifty clients syncing the same new message
// read its aggregations once, not fifty times. A committed relation drops
// its target; a read that raced with a commit of relations does not
// record (gen).
type noRelations struct {
	mu  sync.Mutex
	ids map[string]struct{}
	gen atomic.Uint64
}

// maxNoRelations bounds the set; when full it starts again.
const maxNoRelations = 200_000

func newNoRelations() *noRelations { return &noRelations{ids: map[string]struct{}{}} }

// generation is taken before a read whose empty result may be recorded.
func (n *noRelations) generation() uint64 { return n.gen.Load() }

func (n *noRelations) has(id string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, ok := n.ids[id]
	return ok
}

// record notes events without relations, read at generation gen.
func (n *noRelations) record(gen uint64, ids []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.gen.Load() != gen {
		return // relations were committed meanwhile
	}
	if len(n.ids)+len(ids) > maxNoRelations {
		n.ids = map[string]struct{}{}
	}
	for _, id := range ids {
		n.ids[id] = struct{}{}
	}
}

// related drops the targets of newly committed relations.
func (n *noRelations) related(targets []string) {
	if len(targets) == 0 {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.gen.Add(1)
	for _, id := range targets {
		delete(n.ids, id)
	}
}
