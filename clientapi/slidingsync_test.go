package clientapi_test

// Simplified sliding sync (MSC4186) as docs/sliding-sync.md describes it:
// discovery, authentication, lists (ranges, counts, ordering, scrolling,
// filters) and room subscriptions. Room fields, deltas, pos semantics,
// extensions and bad input are in the other slidingsync_*_test.go files.
// https://github.com/matrix-org/matrix-spec-proposals/blob/main/proposals/4186-simplified-sliding-sync.md

import (
	"net/http"
	"slices"
	"strconv"
	"testing"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestSlidingSyncVersions: /versions advertises the unstable feature.
func TestSlidingSyncVersions(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	r := get(t, srv, "/_matrix/client/versions", "").expect(t, http.StatusOK, "")
	if f := obj(r.Body, "unstable_features"); f["org.matrix.simplified_msc3575"] != true {
		t.Fatalf("unstable_features[org.matrix.simplified_msc3575] = %v, want true; body: %s",
			f["org.matrix.simplified_msc3575"], r.Raw)
	}
}

// TestSlidingSyncAuth: the endpoint needs an access token.
func TestSlidingSyncAuth(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	c := newSSConn(t, srv, alice)
	c.rawAs("", "", ssAll(1)).expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
	c.rawAs("tsa_bogus", "", ssAll(1)).expect(t, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	// And with a token it answers.
	c.sync(ssAll(1))
}

// ssOrder returns the rooms of s in list order (the first n), as one
// request with one single-position list per index sees them.
func ssOrder(t testing.TB, srv *testserver.Server, s session, n int, names ssNames) []string {
	t.Helper()
	lists := map[string]any{}
	for i := 0; i < n; i++ {
		lists["p"+strconv.Itoa(i)] = ssList(0, [][2]int{{i, i}})
	}
	r := newSSConn(t, srv, s).sync(ssLists(lists))
	out := make([]string, n)
	for id, room := range r.Rooms {
		for _, l := range room.Lists {
			i, err := strconv.Atoi(l[1:])
			if err != nil || i >= n {
				t.Fatalf("room %s in unknown list %q: %s", id, l, r.Raw)
			}
			if out[i] != "" {
				t.Fatalf("two rooms at position %d (%s, %s): %s", i, names.of([]string{out[i]}), names.of([]string{id}), r.Raw)
			}
			out[i] = id
		}
	}
	for i, id := range out {
		if id == "" {
			t.Fatalf("no room at position %d: %s", i, r.Raw)
		}
		if n := r.Lists["p"+strconv.Itoa(i)]; n < len(out) {
			t.Fatalf("list p%d count = %d, want >= %d", i, n, len(out))
		}
	}
	return out
}

// TestSlidingSyncListOrder: lists are ordered by bump_stamp, newest first;
// a message bumps a room, a state change such as a topic does not.
func TestSlidingSyncListOrder(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	r1 := ssRoomWith(t, srv, alice, "name", "one")
	r2 := ssRoomWith(t, srv, alice, "name", "two")
	r3 := ssRoomWith(t, srv, alice, "name", "three")
	names := ssNames{r1: "one", r2: "two", r3: "three"}
	wantOrder := func(what string, want ...string) {
		t.Helper()
		got := ssOrder(t, srv, alice, 3, names)
		if !slices.Equal(got, want) {
			t.Fatalf("%s: order = %s, want %s", what, names.of(got), names.of(want))
		}
	}
	stamps := func() map[string]int64 {
		t.Helper()
		r := newSSConn(t, srv, alice).sync(ssAll(0))
		out := map[string]int64{}
		for _, id := range []string{r1, r2, r3} {
			room := r.room(t, id)
			if room.BumpStamp <= 0 {
				t.Fatalf("room %s bump_stamp = %d, want > 0: %s", names[id], room.BumpStamp, r.Raw)
			}
			out[id] = room.BumpStamp
		}
		if r.Lists["all"] != 3 {
			t.Fatalf("list count = %d, want 3", r.Lists["all"])
		}
		return out
	}

	wantOrder("newest room first", r3, r2, r1)
	s0 := stamps()
	if !(s0[r3] > s0[r2] && s0[r2] > s0[r1]) {
		t.Fatalf("bump_stamps %v not in creation order", s0)
	}

	rmSend(t, srv, alice, r1, "bump")
	wantOrder("after a message in the oldest room", r1, r3, r2)
	s1 := stamps()
	if s1[r1] <= s0[r3] {
		t.Fatalf("bump_stamp of the room with the message = %d, want > %d", s1[r1], s0[r3])
	}

	rmPutState(t, srv, alice, r2, "m.room.topic", "", map[string]any{"topic": "not a bump"}).expect(t, http.StatusOK, "")
	wantOrder("after a topic change in the last room", r1, r3, r2)
	if s2 := stamps(); s2[r2] != s1[r2] {
		t.Fatalf("bump_stamp moved from %d to %d on a topic change", s1[r2], s2[r2])
	}
}

// TestSlidingSyncRanges: only the rooms in a list's ranges are sent, the
// count is the whole list's, and scrolling sends just the rooms not sent
// before.
func TestSlidingSyncRanges(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	var rooms []string // oldest first
	names := ssNames{}
	for i := 0; i < 6; i++ {
		id := ssRoomWith(t, srv, alice, "name", "room"+strconv.Itoa(i))
		rooms = append(rooms, id)
		names[id] = "room" + strconv.Itoa(i)
	}
	// List order: newest first.
	order := slices.Clone(rooms)
	slices.Reverse(order)

	t.Run("ranges select positions", func(t *testing.T) {
		r := newSSConn(t, srv, alice).sync(ssLists(map[string]any{"l": ssList(1, [][2]int{{0, 1}, {3, 3}})}))
		if r.Lists["l"] != 6 {
			t.Fatalf("count = %d, want 6 (the whole list)", r.Lists["l"])
		}
		wantSet(t, "rooms", r.roomIDs(), order[0], order[1], order[3])
		for _, id := range r.roomIDs() {
			room := r.Rooms[id]
			if !room.Initial || !slices.Equal(room.Lists, []string{"l"}) {
				t.Fatalf("room %s: initial %v lists %v, want initial and [l]", names[id], room.Initial, room.Lists)
			}
		}
	})

	t.Run("a range past the end", func(t *testing.T) {
		r := newSSConn(t, srv, alice).sync(ssLists(map[string]any{"l": ssList(0, [][2]int{{4, 100}})}))
		if r.Lists["l"] != 6 {
			t.Fatalf("count = %d, want 6", r.Lists["l"])
		}
		wantSet(t, "rooms", r.roomIDs(), order[4], order[5])
	})

	t.Run("the merged MSC's range", func(t *testing.T) {
		r := newSSConn(t, srv, alice).sync(ssLists(map[string]any{"l": map[string]any{"timeline_limit": 0, "range": []int{1, 2}}}))
		wantSet(t, "rooms", r.roomIDs(), order[1], order[2])
	})

	t.Run("count per list", func(t *testing.T) {
		r := newSSConn(t, srv, alice).sync(ssLists(map[string]any{
			"all":   ssList(0, [][2]int{{0, 0}}),
			"named": ssList(0, [][2]int{{0, 0}}, "filters", map[string]any{"is_invite": true}),
		}))
		if r.Lists["all"] != 6 || r.Lists["named"] != 0 {
			t.Fatalf("counts = %v, want all 6, named 0", r.Lists)
		}
	})

	t.Run("scrolling", func(t *testing.T) {
		c := newSSConn(t, srv, alice)
		r := c.sync(ssLists(map[string]any{"l": ssList(1, [][2]int{{0, 1}})}))
		wantSet(t, "first window", r.roomIDs(), order[0], order[1])
		r = c.sync(ssLists(map[string]any{"l": ssList(1, [][2]int{{0, 3}})}))
		wantSet(t, "wider window", r.roomIDs(), order[2], order[3])
		for _, id := range r.roomIDs() {
			room := r.Rooms[id]
			if !room.Initial {
				t.Fatalf("newly sent room %s without initial: %s", names[id], r.Raw)
			}
			if len(room.Timeline) != 1 {
				t.Fatalf("newly sent room %s has %d timeline events, want 1", names[id], len(room.Timeline))
			}
		}
		r = c.sync(ssLists(map[string]any{"l": ssList(1, [][2]int{{0, 3}})}))
		wantSet(t, "same window again", r.roomIDs())
		r = c.sync(ssLists(map[string]any{"l": ssList(1, [][2]int{{2, 5}})}))
		wantSet(t, "scrolled down", r.roomIDs(), order[4], order[5])
		if r.Lists["l"] != 6 {
			t.Fatalf("count = %d, want 6", r.Lists["l"])
		}
	})
}

// TestSlidingSyncFilters: every list filter, one list per case.
func TestSlidingSyncFilters(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	bob := registerUser(t, srv, "bob", ssPassword)

	plain := ssRoomWith(t, srv, alice, "name", "plain")
	dm := ssRoomWith(t, srv, alice, "invite", []string{bob.UserID}, "is_direct", true)
	ssSetAccountData(t, srv, alice, "", "m.direct", map[string]any{bob.UserID: []string{dm}})
	enc := ssRoomWith(t, srv, alice, "name", "enc", "initial_state", []any{map[string]any{
		"type": "m.room.encryption", "state_key": "", "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}})
	space := ssRoomWith(t, srv, alice, "name", "space", "creation_content", map[string]any{"type": "m.space"})
	child := ssRoomWith(t, srv, alice, "name", "child")
	rmPutState(t, srv, alice, space, "m.space.child", child, map[string]any{"via": []string{"tessera.test"}}).
		expect(t, http.StatusOK, "")
	fav := ssRoomWith(t, srv, alice, "name", "fav")
	put(t, srv, tagsPath(alice.UserID, fav, "m.favourite"), alice.AccessToken, map[string]any{"order": 0.5}).
		expect(t, http.StatusOK, "")
	invite := ssRoomWith(t, srv, bob, "name", "invite")
	ssInvite(t, srv, bob, invite, alice.UserID)
	// A space Alice is not in does not select its children.
	otherSpace := ssRoomWith(t, srv, bob, "name", "bob's space", "creation_content", map[string]any{"type": "m.space"})
	rmPutState(t, srv, bob, otherSpace, "m.space.child", plain, map[string]any{"via": []string{"tessera.test"}}).
		expect(t, http.StatusOK, "")

	names := ssNames{plain: "plain", dm: "dm", enc: "enc", space: "space", child: "child", fav: "fav", invite: "invite"}
	all := []string{plain, dm, enc, space, child, fav, invite}
	but := func(ex ...string) []string {
		var out []string
		for _, id := range all {
			if !slices.Contains(ex, id) {
				out = append(out, id)
			}
		}
		return out
	}
	cases := []struct {
		name    string
		filters map[string]any
		want    []string
	}{
		{"no filters", map[string]any{}, all},
		{"is_dm true", map[string]any{"is_dm": true}, []string{dm}},
		{"is_dm false", map[string]any{"is_dm": false}, but(dm)},
		{"is_encrypted true", map[string]any{"is_encrypted": true}, []string{enc}},
		{"is_encrypted false", map[string]any{"is_encrypted": false}, but(enc)},
		{"is_invite true", map[string]any{"is_invite": true}, []string{invite}},
		{"is_invite false", map[string]any{"is_invite": false}, but(invite)},
		{"is_invited (old name) true", map[string]any{"is_invited": true}, []string{invite}},
		{"room_types m.space", map[string]any{"room_types": []any{"m.space"}}, []string{space}},
		{"room_types null", map[string]any{"room_types": []any{nil}}, but(space)},
		{"room_types m.space and null", map[string]any{"room_types": []any{"m.space", nil}}, all},
		{"not_room_types m.space", map[string]any{"not_room_types": []any{"m.space"}}, but(space)},
		{"not_room_types null", map[string]any{"not_room_types": []any{nil}}, []string{space}},
		{"spaces", map[string]any{"spaces": []string{space}}, []string{child}},
		{"spaces the user is not in", map[string]any{"spaces": []string{otherSpace}}, nil},
		{"tags", map[string]any{"tags": []string{"m.favourite"}}, []string{fav}},
		{"not_tags", map[string]any{"not_tags": []string{"m.favourite"}}, but(fav)},
		{"is_dm false and is_encrypted true", map[string]any{"is_dm": false, "is_encrypted": true}, []string{enc}},
		{"is_dm true and is_encrypted true", map[string]any{"is_dm": true, "is_encrypted": true}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newSSConn(t, srv, alice).sync(ssLists(map[string]any{"f": ssList(0, nil, "filters", tc.filters)}))
			if r.Lists["f"] != len(tc.want) {
				t.Errorf("count = %d, want %d", r.Lists["f"], len(tc.want))
			}
			if got := r.roomIDs(); !slices.Equal(got, sorted(tc.want...)) {
				t.Fatalf("rooms = [%s], want [%s]", names.of(got), names.of(sorted(tc.want...)))
			}
			for _, id := range tc.want {
				if room := r.Rooms[id]; !slices.Equal(room.Lists, []string{"f"}) {
					t.Fatalf("room %s lists = %v, want [f]", names[id], room.Lists)
				}
			}
		})
	}

	t.Run("is_dm on the room", func(t *testing.T) {
		r := newSSConn(t, srv, alice).sync(ssAll(0))
		for _, id := range all {
			if got := r.room(t, id).IsDM; got != (id == dm) {
				t.Errorf("room %s is_dm = %v, want %v", names[id], got, id == dm)
			}
		}
	})

	t.Run("tag removed", func(t *testing.T) {
		del(t, srv, tagsPath(alice.UserID, fav, "m.favourite"), alice.AccessToken, nil).expect(t, http.StatusOK, "")
		defer put(t, srv, tagsPath(alice.UserID, fav, "m.favourite"), alice.AccessToken, map[string]any{"order": 0.5})
		r := newSSConn(t, srv, alice).sync(ssLists(map[string]any{"f": ssList(0, nil, "filters",
			map[string]any{"tags": []string{"m.favourite"}})}))
		if r.Lists["f"] != 0 || len(r.Rooms) != 0 {
			t.Fatalf("untagged room still in the tags list: %s", r.Raw)
		}
	})
}

// TestSlidingSyncRoomSubscriptions: a subscribed room is sent whether or
// not a list holds it, stays subscribed until unsubscribed, and a room the
// user is not in is ignored.
func TestSlidingSyncRoomSubscriptions(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	bob := registerUser(t, srv, "bob", ssPassword)
	r1 := ssRoomWith(t, srv, alice, "name", "one")
	ssRoomWith(t, srv, alice, "name", "two")
	r3 := ssRoomWith(t, srv, alice, "name", "three")
	foreign := ssRoomWith(t, srv, bob, "name", "bob's", "preset", "public_chat")
	rmSend(t, srv, bob, foreign, "not for alice")
	top := ssLists(map[string]any{"top": ssList(1, [][2]int{{0, 0}})})

	c := newSSConn(t, srv, alice)
	body := ssLists(map[string]any{"top": ssList(1, [][2]int{{0, 0}})})
	body["room_subscriptions"] = map[string]any{
		r1:      map[string]any{"timeline_limit": 2, "required_state": ssPairs("m.room.name", "")},
		foreign: map[string]any{"timeline_limit": 2},
	}
	r := c.sync(body)
	wantSet(t, "rooms", r.roomIDs(), r1, r3)
	sub := r.room(t, r1)
	if !sub.Initial || sub.Name != "one" || sub.Membership != "join" {
		t.Fatalf("subscribed room: initial %v name %q membership %q: %s", sub.Initial, sub.Name, sub.Membership, r.Raw)
	}
	if sub.has("lists") && len(sub.Lists) > 0 {
		t.Fatalf("a room sent only for a subscription has lists %v", sub.Lists)
	}
	if _, ok := sub.state("m.room.name", ""); !ok {
		t.Fatalf("subscription's required_state not applied: %v", sub.stateKeys())
	}
	if got := r.room(t, r3).Lists; !slices.Equal(got, []string{"top"}) {
		t.Fatalf("listed room lists = %v, want [top]", got)
	}

	// Sticky: the next requests do not repeat the subscription, and a
	// change in r1 (a topic, which does not move it into the range) is
	// still sent.
	rmPutState(t, srv, alice, r1, "m.room.topic", "", map[string]any{"topic": "sticky"}).expect(t, http.StatusOK, "")
	rmSend(t, srv, bob, foreign, "still not for alice")
	r = c.sync(top)
	wantSet(t, "rooms after a change in the subscribed room", r.roomIDs(), r1)
	if tl := r.Rooms[r1].Timeline; len(tl) != 1 || tl[0].Type != "m.room.topic" {
		t.Fatalf("subscribed room timeline = %s, want the topic change", ssFmt(tl))
	}
	if r.Rooms[r1].Initial {
		t.Fatal("an already sent subscribed room came with initial again")
	}

	// Unsubscribed: changes in r1 are no longer sent.
	unsub := ssLists(map[string]any{"top": ssList(1, [][2]int{{0, 0}})})
	unsub["unsubscribe_rooms"] = []string{r1}
	r = c.sync(unsub)
	r.noRoom(t, r1)
	rmPutState(t, srv, alice, r1, "m.room.topic", "", map[string]any{"topic": "unsubscribed"}).expect(t, http.StatusOK, "")
	r = c.sync(top)
	wantSet(t, "rooms after unsubscribing", r.roomIDs())

	// Subscribing again sends the room again, with the change.
	again := ssLists(map[string]any{"top": ssList(1, [][2]int{{0, 0}})})
	again["room_subscriptions"] = map[string]any{r1: map[string]any{"timeline_limit": 1}}
	r = c.sync(again)
	if tl := r.room(t, r1).Timeline; len(tl) != 1 || tl[0].Type != "m.room.topic" || tl[0].Content["topic"] != "unsubscribed" {
		t.Fatalf("resubscribed room timeline = %s, want the last topic change", ssFmt(tl))
	}

	// Subscriptions alone, without lists.
	r = newSSConn(t, srv, alice).sync(map[string]any{"room_subscriptions": map[string]any{
		r3: map[string]any{"timeline_limit": 0}, foreign: map[string]any{"timeline_limit": 1}}})
	wantSet(t, "subscriptions without lists", r.roomIDs(), r3)
	if len(r.Lists) != 0 {
		t.Fatalf("lists in a response to a request without lists: %v", r.Lists)
	}
}
