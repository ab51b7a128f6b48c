package slidingsync

import "sync"

// memo keeps, per connection, what its last response left it having sent
// of the rooms the server looked at, so that the connection's next
// request (which names that response's position) reads them from memory
// rather than the database. The database stays the record: a request
// naming any other position (a retry, or a response another process gave)
// reads it, and entries are written only after their transaction commits.
type memo struct {
	mu    sync.Mutex
	conns map[int64]*connMemo
}

type connMemo struct {
	pos int64
	// rooms maps a room to what was sent of it; nil: never sent.
	rooms map[string]*roomState
}

const (
	// maxMemoRooms: a connection with more known rooms is not kept.
	maxMemoRooms = 2000
	// maxMemoConns: past it the memo starts again.
	maxMemoConns = 20_000
)

// get returns the known rooms of a connection at a position (nil when
// unknown), and which of ids it knows.
func (m *memo) get(key, pos int64) map[string]*roomState {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cm := m.conns[key]; cm != nil && cm.pos == pos {
		return cm.rooms
	}
	return nil
}

// put records the rooms known at a new position: those known at the
// request's position (with what was loaded), overridden by what the
// response sent. It takes ownership of known.
func (m *memo) put(key, pos int64, known map[string]*roomState, sent map[string]*roomState) {
	for id, rs := range sent {
		known[id] = rs
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conns == nil || len(m.conns) >= maxMemoConns {
		m.conns = map[int64]*connMemo{}
	}
	if len(known) > maxMemoRooms {
		delete(m.conns, key)
		return
	}
	m.conns[key] = &connMemo{pos: pos, rooms: known}
}

// drop forgets a connection (reset or deleted).
func (m *memo) drop(key int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.conns, key)
}
