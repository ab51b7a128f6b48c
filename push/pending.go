package push

import "sync"

// pendingStore holds the notifications evaluated but not yet written (see
// flushDelay). Every row and mark at or before flushedPos is in the
// database; every one after it is here. A reader takes flushedPos and the
// rows after it together, then reads the database only up to flushedPos:
// a flush that commits meanwhile is then counted once, never twice.
type pendingStore struct {
	mu         sync.Mutex
	flushedPos int64
	rows       map[string][]actionRow // user -> rows, in stream order
	n          int
	marks      map[sentKey]int64
}

type sentKey struct{ userID, roomID, threadID string }

func newPendingStore(pos int64) *pendingStore {
	return &pendingStore{flushedPos: pos, rows: map[string][]actionRow{}, marks: map[sentKey]int64{}}
}

func (p *pendingStore) add(rows []actionRow, marks []sentMark) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range rows {
		p.rows[r.userID] = append(p.rows[r.userID], r)
	}
	p.n += len(rows)
	for _, m := range marks {
		k := sentKey{m.userID, m.roomID, m.threadID}
		p.marks[k] = max(p.marks[k], m.pos)
	}
}

// writtenThrough reports whether every row and mark of the events up to
// pos, once evaluated, is in the database: flushed, or none pending.
func (p *pendingStore) writtenThrough(pos int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.flushedPos >= pos || (p.n == 0 && len(p.marks) == 0)
}

// hasMarks reports whether sent marks are pending.
func (p *pendingStore) hasMarks() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.marks) > 0
}

// size is the number of pending rows.
func (p *pendingStore) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// snapshot returns everything pending, to write, and the position the
// write will cover (processed: every event up to it has been evaluated).
func (p *pendingStore) snapshot(processed int64) ([]actionRow, []sentMark, int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	rows := make([]actionRow, 0, p.n)
	for _, rs := range p.rows {
		rows = append(rows, rs...)
	}
	marks := make([]sentMark, 0, len(p.marks))
	for k, pos := range p.marks {
		marks = append(marks, sentMark{userID: k.userID, roomID: k.roomID, threadID: k.threadID, pos: pos})
	}
	return rows, marks, processed
}

// flushed records that a snapshot is in the database: everything pending
// is (nothing is added between a snapshot and its flush), up to upTo.
func (p *pendingStore) flushed(upTo int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rows, p.n, p.marks = map[string][]actionRow{}, 0, map[sentKey]int64{}
	p.flushedPos = max(p.flushedPos, upTo)
}

// flushedThrough records that every pending row at or before pos is in
// the database (a flush is written in parts, cut between events).
func (p *pendingStore) flushedThrough(pos int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for u, rows := range p.rows {
		i := 0
		for i < len(rows) && rows[i].pos <= pos {
			i++
		}
		p.n -= i
		if i == len(rows) {
			delete(p.rows, u)
		} else {
			p.rows[u] = rows[i:]
		}
	}
	p.flushedPos = max(p.flushedPos, pos)
}

// forUser returns flushedPos with the pending rows of a user (in one room,
// or all for roomID "") and their pending marks in that room by thread.
func (p *pendingStore) forUser(userID, roomID string) (int64, []actionRow, map[string]int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var rows []actionRow
	for _, r := range p.rows[userID] {
		if roomID == "" || r.roomID == roomID {
			rows = append(rows, r)
		}
	}
	marks := map[string]int64{}
	if roomID != "" {
		for k, pos := range p.marks {
			if k.userID == userID && k.roomID == roomID {
				marks[k.threadID] = pos
			}
		}
	}
	return p.flushedPos, rows, marks
}
