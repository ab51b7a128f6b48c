package clientapi_test

// Simplified sliding sync: bad requests are refused with the errcode
// docs/sliding-sync.md names, and change nothing about the connection.

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/tessera-hs/tessera/internal/testserver"
)

func TestSlidingSyncBadInput(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	room := ssRoomWith(t, srv, alice, "name", "Bad input")
	good := ssAll(2, "required_state", ssPairs("m.room.name", ""))
	c := newSSConn(t, srv, alice)
	c.sync(good)
	p0 := c.Pos
	msg := rmSend(t, srv, alice, room, "the only news")
	ref := c.at(p0, good, "timeout", "0")
	if got := ref.room(t, room); got.Initial || len(got.Timeline) != 1 || got.Timeline[0].EventID != msg {
		t.Fatalf("reference answer: %s", ref.Raw)
	}

	list := func(kv ...any) map[string]any {
		return map[string]any{"lists": map[string]any{"l": ssList(1, nil, kv...)}}
	}
	withLimit := func(n any) map[string]any {
		return map[string]any{"lists": map[string]any{"l": map[string]any{"timeline_limit": n}}}
	}
	ranges := func(rs ...[]int) map[string]any {
		return map[string]any{"lists": map[string]any{"l": map[string]any{"timeline_limit": 1, "ranges": rs}}}
	}
	manyLists := func(n int) map[string]any {
		ls := map[string]any{}
		for i := 0; i < n; i++ {
			ls["l"+strconv.Itoa(i)] = ssList(0, [][2]int{{0, 0}})
		}
		return map[string]any{"lists": ls}
	}
	manyState := make([]any, 101)
	for i := range manyState {
		manyState[i] = []string{"org.example.s" + strconv.Itoa(i), ""}
	}
	ext := func(name string, cfg map[string]any) map[string]any {
		return map[string]any{"extensions": map[string]any{name: cfg}}
	}

	const (
		bad     = http.StatusBadRequest
		ok      = http.StatusOK
		invalid = "M_INVALID_PARAM"
		badJSON = "M_BAD_JSON"
	)
	cases := []struct {
		name    string
		body    any
		query   []string
		status  int
		errcode string
	}{
		{"not JSON", `{"lists":`, nil, bad, "M_NOT_JSON"},
		{"not JSON at all", `lists=all`, nil, bad, "M_NOT_JSON"},
		{"a JSON array", `[]`, nil, bad, badJSON},
		{"lists not an object", map[string]any{"lists": []any{}}, nil, bad, badJSON},
		{"a list not an object", map[string]any{"lists": map[string]any{"l": 5}}, nil, bad, badJSON},
		{"room_subscriptions not an object", map[string]any{"room_subscriptions": []any{room}}, nil, bad, badJSON},
		{"timeline_limit a string", withLimit("5"), nil, bad, badJSON},
		{"required_state entry of one string", list("required_state", []any{[]string{"m.room.name"}}), nil, bad, badJSON},
		{"required_state entry of three strings", list("required_state", []any{[]string{"m.room.name", "", "x"}}), nil, bad, badJSON},
		{"required_state entry of numbers", list("required_state", []any{[]int{1, 2}}), nil, bad, badJSON},
		{"required_state entry a string", list("required_state", []any{"m.room.name"}), nil, bad, badJSON},
		{"negative timeline_limit", withLimit(-1), nil, bad, invalid},
		{"timeline_limit 1001", withLimit(1001), nil, bad, invalid},
		{"timeline_limit 1000000", withLimit(1000000), nil, bad, invalid},
		{"negative timeline_limit in a subscription", map[string]any{"room_subscriptions": map[string]any{
			room: map[string]any{"timeline_limit": -5}}}, nil, bad, invalid},
		{"negative range", ranges([]int{-1, 5}), nil, bad, invalid},
		{"reversed range", ranges([]int{5, 2}), nil, bad, invalid},
		{"ranges out of order", ranges([]int{10, 20}, []int{0, 5}), nil, bad, invalid},
		{"overlapping ranges", ranges([]int{0, 10}, []int{5, 15}), nil, bad, invalid},
		{"101 lists", manyLists(101), nil, bad, invalid},
		{"101 required_state entries", list("required_state", manyState), nil, bad, invalid},
		{"empty list name", map[string]any{"lists": map[string]any{"": ssList(1, nil)}}, nil, bad, invalid},
		{"list name with a space", map[string]any{"lists": map[string]any{"a b": ssList(1, nil)}}, nil, bad, invalid},
		{"list name of 65 characters", map[string]any{"lists": map[string]any{strings.Repeat("a", 65): ssList(1, nil)}}, nil, bad, invalid},
		{"invalid room ID", map[string]any{"room_subscriptions": map[string]any{"not-a-room": map[string]any{"timeline_limit": 1}}},
			nil, bad, invalid},
		{"unknown extension", ext("foo", ssOn()), nil, bad, badJSON},
		{"to_device limit 0", ext("to_device", ssOn("limit", 0)), nil, bad, invalid},
		{"to_device limit 1001", ext("to_device", ssOn("limit", 1001)), nil, bad, invalid},
		{"bad set_presence", good, []string{"set_presence", "busy"}, bad, invalid},
		{"negative timeout", good, []string{"timeout", "-1"}, bad, invalid},
		{"timeout not a number", good, []string{"timeout", "soon"}, bad, invalid},
		{"bad set_presence in the body", map[string]any{"set_presence": "busy"}, nil, bad, invalid},
		{"conn_id of 65 characters", map[string]any{"conn_id": strings.Repeat("c", 65)}, nil, bad, invalid},
		{"no timeline_limit", map[string]any{"lists": map[string]any{"l": map[string]any{}}}, nil, bad, badJSON},
		{"range and ranges", map[string]any{"lists": map[string]any{"l": map[string]any{"timeline_limit": 1,
			"range": []int{0, 1}, "ranges": [][]int{{0, 1}}}}}, nil, bad, invalid},
		{"a range of one number", ranges([]int{0}), nil, bad, invalid},
		{"invalid room ID in unsubscribe_rooms", map[string]any{"unsubscribe_rooms": []string{"nope"}}, nil, bad, invalid},
		{"invalid room ID in the spaces filter", list("filters", map[string]any{"spaces": []string{"nope"}}), nil, bad, invalid},
		{"filters not an object", list("filters", []any{}), nil, bad, badJSON},
		{"extension config not an object", map[string]any{"extensions": map[string]any{"typing": true}}, nil, bad, badJSON},
		{"to_device since not a token", ext("to_device", ssOn("since", "soon")), nil, bad, invalid},
		// Accepted.
		{"namespaced unknown extension", ext("org.example.foo", ssOn()), nil, ok, ""},
		{"100 lists", manyLists(100), nil, ok, ""},
		{"list name of 64 characters", map[string]any{"lists": map[string]any{strings.Repeat("a", 64): ssList(1, nil)}}, nil, ok, ""},
		{"list name characters", map[string]any{"lists": map[string]any{"A-z0.9_~": ssList(1, nil)}}, nil, ok, ""},
		{"timeline_limit 1000", withLimit(1000), nil, ok, ""},
		{"txn_id", map[string]any{"txn_id": "abc"}, nil, ok, ""},
		{"set_presence offline", good, []string{"set_presence", "offline"}, ok, ""},
		{"include_heroes", list("include_heroes", true), nil, ok, ""},
		{"a timeout above the cap", good, []string{"timeout", "600000"}, ok, ""},
		{"object form of required_state", list("required_state", map[string]any{"include": []any{map[string]any{}},
			"exclude": []any{map[string]any{"type": "m.room.create"}}, "lazy_members": true}), nil, ok, ""},
	}
	last := ref.Pos
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q := append([]string{"timeout", "0"}, tc.query...)
			c.raw(p0, tc.body, q...).expect(t, tc.status, tc.errcode)
			// Nothing changed: the good request gets the same answer.
			again := c.at(p0, good, "timeout", "0")
			if again.summary(t) != ref.summary(t) {
				t.Fatalf("after the request, the answer changed:\n got %s\nwant %s", again.summary(t), ref.summary(t))
			}
			last = again.Pos
		})
	}

	// And the connection goes on from there.
	c.Pos = last
	if r := c.sync(good); len(r.Rooms) != 0 {
		t.Fatalf("rooms with nothing new: %s", r.Raw)
	}
}
