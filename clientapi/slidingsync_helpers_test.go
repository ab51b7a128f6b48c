package clientapi_test

// Helpers for the simplified sliding sync tests (MSC4186, docs/sliding-sync.md).
// Helpers here are prefixed "ss" so that they cannot clash with the helpers of
// the other test files of this package.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// ssURL is the simplified sliding sync endpoint.
const ssURL = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"

const ssPassword = "password1"

// ssEvent is the part of an event the tests read.
type ssEvent struct {
	EventID  string         `json:"event_id"`
	Type     string         `json:"type"`
	StateKey *string        `json:"state_key"`
	Sender   string         `json:"sender"`
	Content  map[string]any `json:"content"`
}

// key is (type, state_key) of a state event.
func (e ssEvent) key() string {
	sk := "<none>"
	if e.StateKey != nil {
		sk = *e.StateKey
	}
	return e.Type + "|" + sk
}

// sk is the state key ("" when there is none).
func (e ssEvent) sk() string {
	if e.StateKey == nil {
		return ""
	}
	return *e.StateKey
}

func (e ssEvent) body() string { s, _ := e.Content["body"].(string); return s }

type ssHero struct {
	UserID      string `json:"user_id"`
	Displayname string `json:"displayname"`
	AvatarURL   string `json:"avatar_url"`
}

// ssRoom is one room of a response. Raw is the room's object, to tell
// absent fields from zero ones.
type ssRoom struct {
	Raw               map[string]any `json:"-"`
	Name              string         `json:"name"`
	Avatar            string         `json:"avatar"`
	Heroes            []ssHero       `json:"heroes"`
	Initial           bool           `json:"initial"`
	Membership        string         `json:"membership"`
	Lists             []string       `json:"lists"`
	IsDM              bool           `json:"is_dm"`
	RequiredState     []ssEvent      `json:"required_state"`
	Timeline          []ssEvent      `json:"timeline"`
	PrevBatch         string         `json:"prev_batch"`
	Limited           bool           `json:"limited"`
	NumLive           *int           `json:"num_live"`
	ExpandedTimeline  bool           `json:"expanded_timeline"`
	BumpStamp         int64          `json:"bump_stamp"`
	JoinedCount       *int           `json:"joined_count"`
	InvitedCount      *int           `json:"invited_count"`
	NotificationCount *int           `json:"notification_count"`
	HighlightCount    *int           `json:"highlight_count"`
	InviteState       []ssEvent      `json:"invite_state"`
	StrippedState     []ssEvent      `json:"stripped_state"`
}

// has reports whether the room object has the field at all.
func (r ssRoom) has(field string) bool { _, ok := r.Raw[field]; return ok }

// timelineIDs lists the event IDs of the timeline.
func (r ssRoom) timelineIDs() []string {
	out := []string{}
	for _, e := range r.Timeline {
		out = append(out, e.EventID)
	}
	return out
}

// timelineBodies lists the bodies of the timeline's messages.
func (r ssRoom) timelineBodies() []string {
	out := []string{}
	for _, e := range r.Timeline {
		if e.Type == "m.room.message" {
			out = append(out, e.body())
		}
	}
	return out
}

// stateKeys lists the sorted (type|state_key) of the required_state.
func (r ssRoom) stateKeys() []string {
	out := []string{}
	for _, e := range r.RequiredState {
		out = append(out, e.key())
	}
	sort.Strings(out)
	return out
}

// state returns the required_state event (type, key), if sent.
func (r ssRoom) state(typ, key string) (ssEvent, bool) {
	for _, e := range r.RequiredState {
		if e.Type == typ && e.StateKey != nil && *e.StateKey == key {
			return e, true
		}
	}
	return ssEvent{}, false
}

// ssResp is a decoded sliding sync response.
type ssResp struct {
	resp
	Pos        string
	Lists      map[string]int // list name -> count
	Rooms      map[string]ssRoom
	Extensions map[string]any
}

func ssDecode(t testing.TB, r resp) ssResp {
	t.Helper()
	var body struct {
		Pos   string `json:"pos"`
		Lists map[string]struct {
			Count *int `json:"count"`
		} `json:"lists"`
		Rooms      map[string]json.RawMessage `json:"rooms"`
		Extensions map[string]any             `json:"extensions"`
	}
	if err := json.Unmarshal(r.Raw, &body); err != nil {
		t.Fatalf("sliding sync response does not decode: %v; body: %s", err, r.Raw)
	}
	if body.Pos == "" {
		t.Fatalf("sliding sync response without pos: %s", r.Raw)
	}
	out := ssResp{resp: r, Pos: body.Pos, Lists: map[string]int{}, Rooms: map[string]ssRoom{}, Extensions: body.Extensions}
	for name, l := range body.Lists {
		if l.Count == nil {
			t.Fatalf("list %q without count: %s", name, r.Raw)
		}
		out.Lists[name] = *l.Count
	}
	for id, raw := range body.Rooms {
		var room ssRoom
		if err := json.Unmarshal(raw, &room); err != nil {
			t.Fatalf("room %s does not decode: %v; body: %s", id, err, raw)
		}
		if err := json.Unmarshal(raw, &room.Raw); err != nil {
			t.Fatalf("room %s is not an object: %s", id, raw)
		}
		out.Rooms[id] = room
	}
	return out
}

// room returns a room of the response and fails the test if it is missing.
func (r ssResp) room(t testing.TB, roomID string) ssRoom {
	t.Helper()
	room, ok := r.Rooms[roomID]
	if !ok {
		t.Fatalf("room %s not in the response: %s", roomID, r.Raw)
	}
	return room
}

// noRoom fails the test if the response has roomID.
func (r ssResp) noRoom(t testing.TB, roomID string) {
	t.Helper()
	if _, ok := r.Rooms[roomID]; ok {
		t.Fatalf("room %s in the response, want it absent: %s", roomID, r.Raw)
	}
}

// roomIDs lists the sorted IDs of the response's rooms.
func (r ssResp) roomIDs() []string {
	out := []string{}
	for id := range r.Rooms {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// ext returns an extension's response object (nil when absent).
func (r ssResp) ext(name string) map[string]any { return obj(r.Extensions, name) }

// summary is a canonical form of what a response says (everything but
// pos), to compare two answers.
func (r ssResp) summary(t testing.TB) string {
	t.Helper()
	var body map[string]any
	if err := json.Unmarshal(r.Raw, &body); err != nil {
		t.Fatal(err)
	}
	delete(body, "pos")
	// Rooms' prev_batch tokens may be minted per response, and events'
	// unsigned.age grows.
	for _, room := range obj(body, "rooms") {
		if m, ok := room.(map[string]any); ok {
			delete(m, "prev_batch")
			for _, field := range []string{"timeline", "required_state"} {
				evs, _ := m[field].([]any)
				for _, e := range evs {
					if u := obj(e, "unsigned"); u != nil {
						delete(u, "age")
					}
				}
			}
		}
	}
	out, _ := json.Marshal(body)
	return string(out)
}

var ssConnCounter atomic.Int64

// ssConn is one sliding sync connection of a device: it keeps the pos of
// the last response.
type ssConn struct {
	t      testing.TB
	srv    *testserver.Server
	s      session
	ConnID string
	Pos    string
}

// newSSConn returns a connection for s with a conn_id no other test uses
// ("" to use the device's default connection).
func newSSConn(t testing.TB, srv *testserver.Server, s session) *ssConn {
	return &ssConn{t: t, srv: srv, s: s, ConnID: "c" + strconv.FormatInt(ssConnCounter.Add(1), 10)}
}

// raw posts body with the given pos and query extras (key, value pairs)
// and returns the raw response. body is sent as is when it is a string;
// a map gets the connection's conn_id unless it has one.
func (c *ssConn) raw(pos string, body any, query ...string) resp {
	c.t.Helper()
	return c.rawAs(c.s.AccessToken, pos, body, query...)
}

func (c *ssConn) rawAs(token, pos string, body any, query ...string) resp {
	c.t.Helper()
	q := url.Values{}
	if pos != "" {
		q.Set("pos", pos)
	}
	for i := 0; i+1 < len(query); i += 2 {
		q.Set(query[i], query[i+1])
	}
	if m, ok := body.(map[string]any); ok {
		cp := map[string]any{}
		for k, v := range m {
			cp[k] = v
		}
		if _, has := cp["conn_id"]; !has && c.ConnID != "" {
			cp["conn_id"] = c.ConnID
		}
		body = cp
	}
	path := ssURL
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	return do(c.t, c.srv, req{Method: http.MethodPost, Path: path, Token: token, Body: body})
}

// at posts body with pos, expects 200 and returns the decoded response
// without changing the connection's pos.
func (c *ssConn) at(pos string, body map[string]any, query ...string) ssResp {
	c.t.Helper()
	return ssDecode(c.t, c.raw(pos, body, query...).expect(c.t, http.StatusOK, ""))
}

// sync posts body with the connection's pos (timeout 0), expects 200,
// keeps the new pos and returns the response.
func (c *ssConn) sync(body map[string]any) ssResp {
	c.t.Helper()
	r := c.at(c.Pos, body, "timeout", "0")
	c.Pos = r.Pos
	return r
}

// syncWait is sync with a long-poll timeout in milliseconds.
func (c *ssConn) syncWait(body map[string]any, timeoutMS int) ssResp {
	c.t.Helper()
	r := c.at(c.Pos, body, "timeout", strconv.Itoa(timeoutMS))
	c.Pos = r.Pos
	return r
}

// ssList is a list config: all rooms (or the given ranges), timeline_limit
// limit, and extra fields (required_state, filters...).
func ssList(limit int, ranges [][2]int, extra ...any) map[string]any {
	l := map[string]any{"timeline_limit": limit}
	if ranges != nil {
		rs := []any{}
		for _, r := range ranges {
			rs = append(rs, []int{r[0], r[1]})
		}
		l["ranges"] = rs
	}
	for i := 0; i+1 < len(extra); i += 2 {
		l[extra[i].(string)] = extra[i+1]
	}
	return l
}

// ssLists is a body with lists only.
func ssLists(lists map[string]any) map[string]any { return map[string]any{"lists": lists} }

// ssAll is a body with one list "all" of every room.
func ssAll(limit int, extra ...any) map[string]any {
	return ssLists(map[string]any{"all": ssList(limit, nil, extra...)})
}

// ssPairs is a required_state in the pairs form.
func ssPairs(pairs ...string) []any {
	out := []any{}
	for i := 0; i+1 < len(pairs); i += 2 {
		out = append(out, []string{pairs[i], pairs[i+1]})
	}
	return out
}

// Room set-up helpers, over the room helpers of rooms_test.go.

// ssRoomWith creates a room as s with the createRoom body fields kv.
func ssRoomWith(t testing.TB, srv *testserver.Server, s session, kv ...any) string {
	t.Helper()
	body := map[string]any{"preset": "private_chat"}
	for i := 0; i+1 < len(kv); i += 2 {
		body[kv[i].(string)] = kv[i+1]
	}
	return rmCreate(t, srv, s, body)
}

// ssInvite invites target to room as s.
func ssInvite(t testing.TB, srv *testserver.Server, s session, roomID, target string) {
	t.Helper()
	rmOp(t, srv, s, roomID, "invite", map[string]any{"user_id": target}).expect(t, http.StatusOK, "")
}

// ssJoin joins s to room (inviting it first as inviter when inviter is
// not nil).
func ssJoin(t testing.TB, srv *testserver.Server, s session, roomID string, inviter *session) {
	t.Helper()
	if inviter != nil {
		ssInvite(t, srv, *inviter, roomID, s.UserID)
	}
	rmJoin(t, srv, s, roomID).expect(t, http.StatusOK, "")
}

// ssSetAccountData sets a global (roomID "") or room account data event.
func ssSetAccountData(t testing.TB, srv *testserver.Server, s session, roomID, typ string, content any) {
	t.Helper()
	path := globalDataPath(s.UserID, typ)
	if roomID != "" {
		path = roomDataPath(s.UserID, roomID, typ)
	}
	put(t, srv, path, s.AccessToken, content).expect(t, http.StatusOK, "")
}

// wantSet fails the test unless got and want hold the same strings.
func wantSet(t testing.TB, what string, got []string, want ...string) {
	t.Helper()
	g, w := slices.Clone(got), slices.Clone(want)
	if g == nil {
		g = []string{}
	}
	if w == nil {
		w = []string{}
	}
	sort.Strings(g)
	sort.Strings(w)
	if !slices.Equal(g, w) {
		t.Fatalf("%s = %v, want %v", what, g, w)
	}
}

// wantSeq fails the test unless got equals want in order.
func wantSeq(t testing.TB, what string, got []string, want ...string) {
	t.Helper()
	if got == nil {
		got = []string{}
	}
	if want == nil {
		want = []string{}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
}

// ssNames maps IDs to readable names in failure messages.
type ssNames map[string]string

func (n ssNames) of(ids []string) string {
	out := []string{}
	for _, id := range ids {
		if name, ok := n[id]; ok {
			out = append(out, name)
		} else {
			out = append(out, id)
		}
	}
	return strings.Join(out, ",")
}

// ssNum reads a JSON number at path in v (-1 when absent).
func ssNum(v any, path ...string) int {
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return -1
		}
		v = m[k]
	}
	f, ok := v.(float64)
	if !ok {
		return -1
	}
	return int(f)
}

func ssFmt(v any) string { b, _ := json.Marshal(v); return fmt.Sprintf("%s", b) }
