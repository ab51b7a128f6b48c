package syncapi

import (
	"bytes"
	"container/list"
	"encoding/json"
	"strings"
	"sync"

	"github.com/tessera-hs/tessera/roomserver"
	"github.com/tessera-hs/tessera/users"
)

// filter is a sync filter made ready to apply.
// https://spec.matrix.org/v1.19/client-server-api/#filtering
type filter struct {
	timelineLimit    int
	rooms            map[string]bool // nil: every room
	notRooms         map[string]bool
	includeLeave     bool
	timelineF        *users.RoomEventFilter
	stateF           *users.RoomEventFilter
	ephemeralF       *users.RoomEventFilter
	roomAccountDataF *users.RoomEventFilter
	accountDataF     *users.EventFilter
	lazyMembers      bool
	includeRedundant bool
	// threadCounts: the timeline filter's unread_thread_notifications,
	// per-thread counts in unread_thread_notifications.
	threadCounts bool
	// ignored are the users the syncing user ignores: their events,
	// except state events, are left out of timelines.
	ignored map[string]bool
	format  *eventFormat // nil: the client format with every field
}

func set(list []string) map[string]bool {
	if list == nil {
		return nil
	}
	m := make(map[string]bool, len(list))
	for _, v := range list {
		m[v] = true
	}
	return m
}

func newFilter(uf *users.Filter) *filter {
	f := &filter{timelineLimit: defaultTimelineLimit}
	if uf == nil {
		return f
	}
	f.accountDataF = uf.AccountData
	if uf.EventFormat == "federation" || uf.EventFields != nil {
		f.format = &eventFormat{federation: uf.EventFormat == "federation"}
		if uf.EventFields != nil {
			f.format.fields = make([][]string, 0, len(uf.EventFields))
			for _, p := range uf.EventFields {
				f.format.fields = append(f.format.fields, splitFieldPath(p))
			}
		}
	}
	r := uf.Room
	if r == nil {
		return f
	}
	f.rooms, f.notRooms, f.includeLeave = set(r.Rooms), set(r.NotRooms), r.IncludeLeave
	if r.Timeline != nil {
		if r.Timeline.Limit != nil {
			f.timelineLimit = *r.Timeline.Limit
		}
		f.timelineF = r.Timeline
		f.threadCounts = r.Timeline.UnreadThreadNotifications
	}
	if r.State != nil {
		f.stateF = r.State
		f.lazyMembers = r.State.LazyLoadMembers
		f.includeRedundant = r.State.IncludeRedundantMembers
	}
	f.ephemeralF = r.Ephemeral
	f.roomAccountDataF = r.AccountData
	return f
}

// roomAllowed applies the room filter's rooms and not_rooms.
func (f *filter) roomAllowed(roomID string) bool {
	if f.rooms != nil && !f.rooms[roomID] {
		return false
	}
	return !f.notRooms[roomID]
}

// sectionRoomAllowed applies a room section's own rooms and not_rooms.
func sectionRoomAllowed(rf *users.RoomEventFilter, roomID string) bool {
	if rf == nil {
		return true
	}
	if rf.Rooms != nil && !containsString(rf.Rooms, roomID) {
		return false
	}
	return !containsString(rf.NotRooms, roomID)
}

func containsString(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// roomEventWanted applies a RoomEventFilter's types, not_types, senders,
// not_senders and contains_url to a room event.
func roomEventWanted(rf *users.RoomEventFilter, ev *roomserver.Event) bool {
	if rf == nil {
		return true
	}
	if !filterTypeWanted(&rf.EventFilter, ev.Type()) || !filterSenderWanted(&rf.EventFilter, string(ev.SenderID())) {
		return false
	}
	if rf.ContainsURL != nil {
		var c struct {
			URL json.RawMessage `json:"url"`
		}
		_ = json.Unmarshal(ev.Content(), &c)
		if (c.URL != nil) != *rf.ContainsURL {
			return false
		}
	}
	return true
}

// timelineFiltered reports whether the timeline filter can drop events.
func (f *filter) timelineFiltered() bool {
	if len(f.ignored) > 0 {
		return true
	}
	if f.timelineF == nil {
		return false
	}
	ef := f.timelineF.EventFilter
	return ef.Types != nil || ef.NotTypes != nil || ef.Senders != nil || ef.NotSenders != nil || f.timelineF.ContainsURL != nil
}

// ignoredEvent reports whether ev is a non-state event from an ignored user.
func (f *filter) ignoredEvent(ev *roomserver.Event) bool {
	return len(f.ignored) > 0 && ev.StateKey() == nil && f.ignored[string(ev.SenderID())]
}

// stateWanted applies the state filter (not lazy loading, which needs the
// whole response) to a state event.
func (f *filter) stateWanted(ev *roomserver.Event) bool {
	return roomEventWanted(f.stateF, ev)
}

// limitEvents applies a filter's limit to a list of non-room events
// (account data, ephemeral), after its types.
func limitEvents(ef *users.EventFilter, evs []any) []any {
	if ef == nil {
		return evs
	}
	out := evs[:0:0]
	for _, e := range evs {
		if ef.Limit != nil && len(out) >= *ef.Limit {
			break
		}
		typ := ""
		if m, ok := e.(map[string]any); ok {
			typ, _ = m["type"].(string)
		}
		if filterTypeWanted(ef, typ) {
			out = append(out, e)
		}
	}
	return out
}

// eventFormat is a filter's event_format and event_fields, applied to the
// room events of a response (timeline, state, state_after) when it is
// written out.
type eventFormat struct {
	federation bool
	fields     [][]string // nil: every field
}

// events formats a list of events. raw holds the stored events behind
// ces, index for index (nil when unknown: then the client format is the
// only one there is).
func (ef *eventFormat) events(ces []roomserver.ClientEvent, raw []*roomserver.Event) []any {
	out := make([]any, len(ces))
	for i := range ces {
		var ev *roomserver.Event
		if i < len(raw) {
			ev = raw[i]
		}
		out[i] = ef.event(ces[i], ev)
	}
	return out
}

// event formats one event: the client format, or with event_format
// "federation" the event as it travels between servers (its PDU JSON,
// with the unsigned data a client is shown), then cut down to the
// event_fields.
func (ef *eventFormat) event(ce roomserver.ClientEvent, ev *roomserver.Event) any {
	var m map[string]any
	if ef.federation && ev != nil {
		m = decodeObject(ev.JSON())
		if m != nil && len(ce.Unsigned) > 0 {
			unsigned, _ := m["unsigned"].(map[string]any)
			if unsigned == nil {
				unsigned = map[string]any{}
			}
			for k, v := range ce.Unsigned {
				unsigned[k] = v
			}
			m["unsigned"] = unsigned
		}
	}
	if ef.fields == nil {
		if m != nil {
			return m
		}
		return ce
	}
	if m == nil {
		raw, err := json.Marshal(ce)
		if err != nil {
			return ce
		}
		if m = decodeObject(raw); m == nil {
			return ce
		}
	}
	return onlyFields(m, ef.fields)
}

func decodeObject(raw []byte) map[string]any {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber() // keep large integers exact
	var m map[string]any
	if d.Decode(&m) != nil {
		return nil
	}
	return m
}

// onlyFields keeps the fields of m named by paths. A path that leads
// nowhere (or through something that is not an object) adds nothing.
func onlyFields(m map[string]any, paths [][]string) map[string]any {
	out := map[string]any{}
	for _, path := range paths {
		var v any = m
		found := true
		for _, key := range path {
			obj, ok := v.(map[string]any)
			if !ok {
				found = false
				break
			}
			if v, ok = obj[key]; !ok {
				found = false
				break
			}
		}
		if !found {
			continue
		}
		dst := out
		for _, key := range path[:len(path)-1] {
			next, ok := dst[key].(map[string]any)
			if !ok {
				next = map[string]any{}
				dst[key] = next
			}
			dst = next
		}
		dst[path[len(path)-1]] = v
	}
	return out
}

// splitFieldPath splits a dot-separated property path: '.' separates
// keys, "\." is a literal dot and "\\" a literal backslash; a backslash
// before anything else is itself.
// https://spec.matrix.org/v1.19/appendices/#dot-separated-property-paths
func splitFieldPath(p string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '\\' && i+1 < len(p) && (p[i+1] == '.' || p[i+1] == '\\'):
			cur.WriteByte(p[i+1])
			i++
		case c == '.':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	return append(parts, cur.String())
}

// lazyMembers remembers, per device, which member events a lazy-loading
// client has: the spec lets the server leave out member events the client
// already has ("redundant" ones) unless include_redundant_members asks for
// them.
// https://spec.matrix.org/v1.19/client-server-api/#lazy-loading-room-members
//
// What a response sends is only pending until the client acknowledges the
// response by syncing with a token at or past it: a response that was
// lost, and is asked for again with the same since, sends the same
// members again. Only an acknowledged member event is ever left out, and
// only while it is still that member's event in the state the response
// describes. Memory is bounded (least recently used devices are
// forgotten, and so is a device that has too many entries); forgetting
// costs a redundant member event, never a missing one.
type lazyMembers struct {
	mu      sync.Mutex
	lru     *list.List // of *lazyDevice, most recent first
	devices map[string]*list.Element
}

type lazyDevice struct {
	key       string
	confirmed map[string]map[string]string // room -> member -> event ID the client has
	pending   []lazySent
	entries   int
}

// lazySent is a member event sent in a response whose token's events
// position is pos.
type lazySent struct {
	pos                     int64
	roomID, member, eventID string
}

const (
	maxLazyDevices = 2048
	maxLazyEntries = 5000 // per device, confirmed and pending together
)

func newLazyMembers() *lazyMembers {
	return &lazyMembers{lru: list.New(), devices: map[string]*list.Element{}}
}

func lazyKey(userID, deviceID string) string { return userID + "\x00" + deviceID }

// begin starts a sync of a device from a token whose events position is
// since (nil token: an initial sync, which starts afresh). Pending entries
// the token acknowledges become confirmed; the others belong to responses
// the client did not take, and are dropped.
func (l *lazyMembers) begin(userID, deviceID string, since *int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	key := lazyKey(userID, deviceID)
	el, ok := l.devices[key]
	if !ok {
		return
	}
	d := el.Value.(*lazyDevice)
	if since == nil {
		l.lru.Remove(el)
		delete(l.devices, key)
		return
	}
	l.lru.MoveToFront(el)
	for _, p := range d.pending {
		if p.pos > *since {
			d.entries--
			continue
		}
		room := d.confirmed[p.roomID]
		if room == nil {
			room = map[string]string{}
			d.confirmed[p.roomID] = room
		}
		if _, had := room[p.member]; had {
			d.entries--
		}
		room[p.member] = p.eventID
	}
	d.pending = nil
}

// has reports whether the device has acknowledged exactly this member
// event.
func (l *lazyMembers) has(userID, deviceID, roomID, member, eventID string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	el, ok := l.devices[lazyKey(userID, deviceID)]
	if !ok {
		return false
	}
	return el.Value.(*lazyDevice).confirmed[roomID][member] == eventID
}

// forgetRoom drops what the device is known to have of a room (it joins
// afresh, or is sent the room's full state).
func (l *lazyMembers) forgetRoom(userID, deviceID, roomID string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	el, ok := l.devices[lazyKey(userID, deviceID)]
	if !ok {
		return
	}
	d := el.Value.(*lazyDevice)
	d.entries -= len(d.confirmed[roomID])
	delete(d.confirmed, roomID)
}

// sent records the member events of a response whose token's events
// position is pos.
func (l *lazyMembers) sent(userID, deviceID string, pos int64, sent []lazySent) {
	if len(sent) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	key := lazyKey(userID, deviceID)
	el, ok := l.devices[key]
	if !ok {
		if l.lru.Len() >= maxLazyDevices {
			oldest := l.lru.Back()
			l.lru.Remove(oldest)
			delete(l.devices, oldest.Value.(*lazyDevice).key)
		}
		el = l.lru.PushFront(&lazyDevice{key: key, confirmed: map[string]map[string]string{}})
		l.devices[key] = el
	}
	l.lru.MoveToFront(el)
	d := el.Value.(*lazyDevice)
	if d.entries+len(sent) > maxLazyEntries {
		d.confirmed, d.pending, d.entries = map[string]map[string]string{}, nil, 0
		if len(sent) > maxLazyEntries {
			return
		}
	}
	for _, s := range sent {
		s.pos = pos
		d.pending = append(d.pending, s)
	}
	d.entries += len(sent)
}
