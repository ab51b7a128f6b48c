package clientapi_test

// Simplified sliding sync: the fields of a room, required_state,
// timelines, memberships other than join, and what is sent again when a
// room changes.

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"testing"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestSlidingSyncRoomFields: name, avatar, heroes, counts, membership,
// bump_stamp and the first-time fields of a room.
func TestSlidingSyncRoomFields(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	bob := registerUser(t, srv, "bob", ssPassword)
	carol := registerUser(t, srv, "carol", ssPassword)
	dave := registerUser(t, srv, "dave", ssPassword)
	put(t, srv, profilePath(carol.UserID, "displayname"), carol.AccessToken, map[string]any{"displayname": "Carol C"}).
		expect(t, http.StatusOK, "")

	named := ssRoomWith(t, srv, alice, "name", "Named Room")
	rmPutState(t, srv, alice, named, "m.room.avatar", "", map[string]any{"url": "mxc://tessera.test/avatar"}).
		expect(t, http.StatusOK, "")
	ssJoin(t, srv, bob, named, &alice)
	ssJoin(t, srv, carol, named, &alice)
	ssInvite(t, srv, alice, named, dave.UserID)

	unnamed := ssRoomWith(t, srv, alice)
	ssJoin(t, srv, bob, unnamed, &alice)
	ssJoin(t, srv, carol, unnamed, &alice)

	r := newSSConn(t, srv, alice).sync(ssAll(1))
	if r.Lists["all"] != 2 {
		t.Fatalf("count = %d, want 2", r.Lists["all"])
	}
	t.Run("named room", func(t *testing.T) {
		room := r.room(t, named)
		if !room.Initial || room.Membership != "join" || !slices.Equal(room.Lists, []string{"all"}) {
			t.Fatalf("initial %v membership %q lists %v, want true, join, [all]", room.Initial, room.Membership, room.Lists)
		}
		if room.Name != "Named Room" || room.Avatar != "mxc://tessera.test/avatar" {
			t.Fatalf("name %q avatar %q", room.Name, room.Avatar)
		}
		if len(room.Heroes) != 0 {
			t.Fatalf("a named room has heroes %v", room.Heroes)
		}
		if room.JoinedCount == nil || *room.JoinedCount != 3 || room.InvitedCount == nil || *room.InvitedCount != 1 {
			t.Fatalf("joined_count %v invited_count %v, want 3 and 1: %s", ssFmt(room.JoinedCount), ssFmt(room.InvitedCount), r.Raw)
		}
		if room.BumpStamp <= 0 {
			t.Fatalf("bump_stamp = %d", room.BumpStamp)
		}
		if room.IsDM {
			t.Fatal("is_dm true for a room not in m.direct")
		}
		if room.NumLive != nil && *room.NumLive != 0 {
			t.Fatalf("num_live = %v on a connection's first request, want 0 (or absent)", ssFmt(room.NumLive))
		}
		if len(room.Timeline) != 1 || room.Timeline[0].Type != "m.room.member" || room.Timeline[0].sk() != dave.UserID {
			t.Fatalf("timeline = %s, want the invite of dave", ssFmt(room.Timeline))
		}
	})
	t.Run("unnamed room", func(t *testing.T) {
		room := r.room(t, unnamed)
		if room.Name != "" {
			t.Fatalf("name = %q for a room without m.room.name", room.Name)
		}
		if room.Avatar != "" {
			t.Fatalf("avatar = %q for a room without m.room.avatar", room.Avatar)
		}
		heroes := map[string]string{}
		for _, h := range room.Heroes {
			heroes[h.UserID] = h.Displayname
		}
		if len(heroes) != 2 || heroes[carol.UserID] != "Carol C" {
			t.Fatalf("heroes = %v, want bob and carol (with her displayname)", room.Heroes)
		}
		if _, ok := heroes[bob.UserID]; !ok {
			t.Fatalf("heroes = %v, want bob", room.Heroes)
		}
		if _, ok := heroes[alice.UserID]; ok {
			t.Fatalf("heroes = %v include the user", room.Heroes)
		}
	})
}

// TestSlidingSyncRequiredState: each form of required_state.
func TestSlidingSyncRequiredState(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	bob := registerUser(t, srv, "bob", ssPassword)
	carol := registerUser(t, srv, "carol", ssPassword)
	room := ssRoomWith(t, srv, alice, "name", "State", "topic", "A topic")
	ssJoin(t, srv, bob, room, &alice)
	ssJoin(t, srv, carol, room, &alice)
	rmSend(t, srv, carol, room, "carol speaks")
	rmSend(t, srv, bob, room, "bob speaks last")

	// Every state key of the room, as /state has it.
	st := get(t, srv, rmRoom(room, "state"), alice.AccessToken)
	if st.Status != http.StatusOK {
		t.Fatalf("/state: %d %s", st.Status, st.Raw)
	}
	var allState []string
	var list []ssEvent
	if err := json.Unmarshal(st.Raw, &list); err != nil {
		t.Fatalf("state: %v", err)
	}
	for _, e := range list {
		allState = append(allState, e.key())
	}
	mem := func(u string) string { return "m.room.member|" + u }

	cases := []struct {
		name     string
		limit    int
		required any
		want     []string
	}{
		{"none", 1, []any{}, nil},
		{"one pair", 1, ssPairs("m.room.name", ""), []string{"m.room.name|"}},
		{"two pairs", 1, ssPairs("m.room.topic", "", "m.room.name", ""), []string{"m.room.name|", "m.room.topic|"}},
		{"a pair with no such state", 1, ssPairs("m.room.avatar", ""), nil},
		{"$ME", 1, ssPairs("m.room.member", "$ME"), []string{mem(alice.UserID)}},
		{"a member by ID", 1, ssPairs("m.room.member", carol.UserID), []string{mem(carol.UserID)}},
		{"every member", 1, ssPairs("m.room.member", "*"), []string{mem(alice.UserID), mem(bob.UserID), mem(carol.UserID)}},
		{"everything", 1, ssPairs("*", "*"), allState},
		{"lazy members, one sender", 1, ssPairs("m.room.member", "$LAZY"), []string{mem(bob.UserID)}},
		{"lazy members, two senders", 2, ssPairs("m.room.member", "$LAZY"), []string{mem(bob.UserID), mem(carol.UserID)}},
		{"lazy members and the name", 1, ssPairs("m.room.name", "", "m.room.member", "$LAZY"),
			[]string{"m.room.name|", mem(bob.UserID)}},
		{"object form, include and exclude", 1, map[string]any{
			"include": []any{map[string]any{"type": "m.room.member"}},
			"exclude": []any{map[string]any{"state_key": "$ME"}}},
			[]string{mem(bob.UserID), mem(carol.UserID)}},
		{"object form, lazy members", 1, map[string]any{
			"include": []any{map[string]any{"type": "m.room.topic", "state_key": ""}}, "lazy_members": true},
			[]string{"m.room.topic|", mem(bob.UserID)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newSSConn(t, srv, alice).sync(ssAll(tc.limit, "required_state", tc.required))
			got := r.room(t, room)
			wantSet(t, "required_state", got.stateKeys(), tc.want...)
			for _, e := range got.RequiredState {
				if e.EventID == "" || e.Sender == "" || e.Content == nil {
					t.Fatalf("required_state event is not a full event: %s", ssFmt(e))
				}
			}
			if name, ok := got.state("m.room.name", ""); ok && name.Content["name"] != "State" {
				t.Fatalf("m.room.name content = %v", name.Content)
			}
		})
	}
}

// TestSlidingSyncTimeline: the latest events, limited, prev_batch into
// /messages, num_live, and an expanded timeline_limit.
func TestSlidingSyncTimeline(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	room := ssRoomWith(t, srv, alice)
	var sent []string
	for i := 0; i < 6; i++ {
		sent = append(sent, rmSend(t, srv, alice, room, "m"+strconv.Itoa(i)))
	}

	c := newSSConn(t, srv, alice)
	r := c.sync(ssAll(2))
	first := r.room(t, room)
	wantSeq(t, "first timeline", first.timelineIDs(), sent[4], sent[5])
	if !first.Limited || first.PrevBatch == "" {
		t.Fatalf("limited %v prev_batch %q, want limited and a token", first.Limited, first.PrevBatch)
	}
	if first.NumLive != nil && *first.NumLive != 0 {
		t.Fatalf("num_live = %v on the first request, want 0 (or absent)", ssFmt(first.NumLive))
	}

	t.Run("prev_batch pages back", func(t *testing.T) {
		m := get(t, srv, rmRoom(room, "messages")+"?"+url.Values{"dir": {"b"}, "from": {first.PrevBatch}, "limit": {"3"}}.Encode(),
			alice.AccessToken).expect(t, http.StatusOK, "")
		var older []string
		for _, e := range rmEventsOf(t, m.Body["chunk"]) {
			older = append(older, e["event_id"].(string))
		}
		wantSeq(t, "/messages from prev_batch", older, sent[3], sent[2], sent[1])
	})

	// Two new events: only they come, both live.
	n1 := rmSend(t, srv, alice, room, "new1")
	n2 := rmSend(t, srv, alice, room, "new2")
	r = c.sync(ssAll(2))
	next := r.room(t, room)
	wantSeq(t, "incremental timeline", next.timelineIDs(), n1, n2)
	if next.NumLive == nil || *next.NumLive != 2 {
		t.Fatalf("num_live = %v, want 2", ssFmt(next.NumLive))
	}
	if next.Initial {
		t.Fatal("incremental room with initial")
	}
	if next.Limited {
		t.Fatal("incremental timeline limited although every new event fit")
	}

	// One more than fits: limited.
	var more []string
	for i := 0; i < 3; i++ {
		more = append(more, rmSend(t, srv, alice, room, "more"+strconv.Itoa(i)))
	}
	r = c.sync(ssAll(2))
	lim := r.room(t, room)
	wantSeq(t, "limited incremental timeline", lim.timelineIDs(), more[1], more[2])
	if !lim.Limited || lim.NumLive == nil || *lim.NumLive != 2 {
		t.Fatalf("limited %v num_live %v, want limited and 2", lim.Limited, ssFmt(lim.NumLive))
	}
	// Its prev_batch reaches the event that did not fit, with no gap.
	pm := get(t, srv, rmRoom(room, "messages")+"?"+url.Values{"dir": {"b"}, "from": {lim.PrevBatch}, "limit": {"2"}}.Encode(),
		alice.AccessToken).expect(t, http.StatusOK, "")
	var gap []string
	for _, e := range rmEventsOf(t, pm.Body["chunk"]) {
		gap = append(gap, e["event_id"].(string))
	}
	wantSeq(t, "/messages from the limited delta's prev_batch", gap, more[0], n2)

	// Nothing new: the room is not sent.
	r = c.sync(ssAll(2))
	r.noRoom(t, room)

	// A larger timeline_limit resends older events.
	r = c.sync(ssAll(4))
	exp := r.room(t, room)
	wantSeq(t, "expanded timeline", exp.timelineIDs(), n2, more[0], more[1], more[2])
	if !exp.ExpandedTimeline || !exp.Limited {
		t.Fatalf("expanded_timeline %v limited %v, want both: %s", exp.ExpandedTimeline, exp.Limited, r.Raw)
	}
	if exp.NumLive != nil && *exp.NumLive != 0 {
		t.Fatalf("num_live = %d for an expanded timeline with nothing new", *exp.NumLive)
	}
	// And once sent, the larger limit is not news any more.
	r = c.sync(ssAll(4))
	r.noRoom(t, room)
}

// TestSlidingSyncDeltas: what a connection has been sent is not sent
// again; what changed is sent exactly once.
func TestSlidingSyncDeltas(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	bob := registerUser(t, srv, "bob", ssPassword)
	room := ssRoomWith(t, srv, alice, "name", "Before", "topic", "t0")
	ssJoin(t, srv, bob, room, &alice)
	body := ssAll(5, "required_state", ssPairs("m.room.topic", "", "m.room.name", "", "m.room.member", "*"))

	c := newSSConn(t, srv, alice)
	r := c.sync(body)
	if got := r.room(t, room); got.Name != "Before" || len(got.RequiredState) != 4 {
		t.Fatalf("first: name %q required_state %v", got.Name, got.stateKeys())
	}

	// A topic change: the topic (only) in required_state, once.
	rmPutState(t, srv, alice, room, "m.room.topic", "", map[string]any{"topic": "t1"}).expect(t, http.StatusOK, "")
	r = c.sync(body)
	got := r.room(t, room)
	wantSet(t, "required_state after a topic change", got.stateKeys(), "m.room.topic|")
	if tp, _ := got.state("m.room.topic", ""); tp.Content["topic"] != "t1" {
		t.Fatalf("topic = %v, want t1", tp.Content)
	}
	if got.has("name") {
		t.Fatalf("unchanged name sent again: %s", r.Raw)
	}
	if got.Initial {
		t.Fatal("initial on a delta")
	}
	m := rmSend(t, srv, bob, room, "after the topic")
	r = c.sync(body)
	got = r.room(t, room)
	// The counts come in every result of a joined room.
	for _, f := range []string{"joined_count", "invited_count", "notification_count", "highlight_count"} {
		if !got.has(f) {
			t.Fatalf("%s missing from a joined room's delta: %s", f, r.Raw)
		}
	}
	wantSet(t, "required_state after a message", got.stateKeys())
	wantSeq(t, "timeline after a message", got.timelineIDs(), m)
	if got.has("name") || got.has("avatar") || got.has("heroes") {
		t.Fatalf("unchanged name/avatar/heroes sent again: %s", r.Raw)
	}

	// A name change: the new name, once.
	rmPutState(t, srv, alice, room, "m.room.name", "", map[string]any{"name": "After"}).expect(t, http.StatusOK, "")
	r = c.sync(body)
	got = r.room(t, room)
	if got.Name != "After" {
		t.Fatalf("name = %q after a rename, want After: %s", got.Name, r.Raw)
	}
	wantSet(t, "required_state after a rename", got.stateKeys(), "m.room.name|")
	rmSend(t, srv, bob, room, "after the rename")
	r = c.sync(body)
	if got = r.room(t, room); got.has("name") || len(got.RequiredState) != 0 {
		t.Fatalf("name or state sent again: %s", r.Raw)
	}

	// A member change (bob's displayname) is member state.
	put(t, srv, profilePath(bob.UserID, "displayname"), bob.AccessToken, map[string]any{"displayname": "Robert"}).
		expect(t, http.StatusOK, "")
	r = c.sync(body)
	got = r.room(t, room)
	wantSet(t, "required_state after a displayname change", got.stateKeys(), "m.room.member|"+bob.UserID)

	// The name removed: null.
	rmPutState(t, srv, alice, room, "m.room.name", "", map[string]any{}).expect(t, http.StatusOK, "")
	r = c.sync(body)
	got = r.room(t, room)
	if v, ok := got.Raw["name"]; !ok || v != nil {
		t.Fatalf("name after removal = %v (present %v), want null: %s", v, ok, r.Raw)
	}

	// Asking for more state sends it at once.
	wider := ssAll(5, "required_state", ssPairs("m.room.topic", "", "m.room.name", "", "m.room.member", "*",
		"m.room.join_rules", ""))
	r = c.sync(wider)
	got = r.room(t, room)
	wantSet(t, "required_state after asking for more", got.stateKeys(), "m.room.join_rules|")
	if len(got.Timeline) != 0 {
		t.Fatalf("timeline resent with the wider required_state: %s", ssFmt(got.Timeline))
	}
}

// TestSlidingSyncLazyMembersDelta: lazy members are sent for new senders
// only, not again for senders the connection has had.
func TestSlidingSyncLazyMembersDelta(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	bob := registerUser(t, srv, "bob", ssPassword)
	carol := registerUser(t, srv, "carol", ssPassword)
	room := ssRoomWith(t, srv, alice, "name", "Lazy")
	ssJoin(t, srv, bob, room, &alice)
	ssJoin(t, srv, carol, room, &alice)
	rmSend(t, srv, bob, room, "bob 1")
	body := ssAll(1, "required_state", ssPairs("m.room.member", "$LAZY"))
	c := newSSConn(t, srv, alice)
	r := c.sync(body)
	wantSet(t, "first", r.room(t, room).stateKeys(), "m.room.member|"+bob.UserID)
	rmSend(t, srv, bob, room, "bob 2")
	r = c.sync(body)
	wantSet(t, "a sender already sent", r.room(t, room).stateKeys())
	rmSend(t, srv, carol, room, "carol 1")
	r = c.sync(body)
	wantSet(t, "a new sender", r.room(t, room).stateKeys(), "m.room.member|"+carol.UserID)
}

// TestSlidingSyncMemberships: invites, knocks, kicks, bans and leaving.
func TestSlidingSyncMemberships(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	bob := registerUser(t, srv, "bob", ssPassword)

	t.Run("invite", func(t *testing.T) {
		room := ssRoomWith(t, srv, bob, "name", "Invitation", "topic", "come in")
		rmSend(t, srv, bob, room, "secret before the invite")
		ssInvite(t, srv, bob, room, alice.UserID)
		r := newSSConn(t, srv, alice).sync(ssAll(5, "required_state", ssPairs("*", "*")))
		got := r.room(t, room)
		if got.Membership != "invite" || !got.Initial || got.Name != "Invitation" {
			t.Fatalf("membership %q initial %v name %q: %s", got.Membership, got.Initial, got.Name, r.Raw)
		}
		if tl, ok := got.Raw["timeline"].([]any); !ok || len(tl) != 0 {
			t.Fatalf("an invite's timeline = %v, want []", got.Raw["timeline"])
		}
		if rs, ok := got.Raw["required_state"].([]any); !ok || len(rs) != 0 {
			t.Fatalf("an invite's required_state = %v, want []", got.Raw["required_state"])
		}
		for what, state := range map[string][]ssEvent{"invite_state": got.InviteState, "stripped_state": got.StrippedState} {
			types := map[string]bool{}
			for _, e := range state {
				types[e.key()] = true
				if e.Type == "m.room.member" && e.sk() == alice.UserID && e.Content["membership"] != "invite" {
					t.Fatalf("%s member event = %s", what, ssFmt(e))
				}
			}
			for _, want := range []string{"m.room.create|", "m.room.name|", "m.room.join_rules|", "m.room.member|" + alice.UserID} {
				if !types[want] {
					t.Fatalf("%s lacks %s: %s", what, want, ssFmt(state))
				}
			}
		}
		for _, e := range got.Timeline {
			if e.body() == "secret before the invite" {
				t.Fatalf("an invite's timeline has a message of the room: %s", ssFmt(got.Timeline))
			}
		}
		// Joining replaces the invite: sent again with initial, membership join.
		c := newSSConn(t, srv, alice)
		c.sync(ssAll(1))
		rmJoin(t, srv, alice, room).expect(t, http.StatusOK, "")
		r = c.sync(ssAll(1))
		got = r.room(t, room)
		if got.Membership != "join" || !got.Initial {
			t.Fatalf("after joining: membership %q initial %v, want join and initial: %s", got.Membership, got.Initial, r.Raw)
		}
	})

	t.Run("knock", func(t *testing.T) {
		room := ssRoomWith(t, srv, bob, "name", "Knocking", "room_version", "10", "initial_state", []any{
			map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "knock"}}})
		post(t, srv, v3+"/knock/"+url.PathEscape(room), alice.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")
		r := newSSConn(t, srv, alice).sync(ssAll(1))
		got := r.room(t, room)
		if got.Membership != "knock" || !got.Initial {
			t.Fatalf("membership %q initial %v, want knock: %s", got.Membership, got.Initial, r.Raw)
		}
		found := false
		for _, e := range got.StrippedState {
			if e.Type == "m.room.member" && e.sk() == alice.UserID && e.Content["membership"] == "knock" {
				found = true
			}
		}
		if !found {
			t.Fatalf("stripped_state lacks the knock: %s", ssFmt(got.StrippedState))
		}
	})

	for _, tc := range []struct{ op, membership string }{{"kick", "leave"}, {"ban", "ban"}} {
		t.Run(tc.op, func(t *testing.T) {
			room := ssRoomWith(t, srv, bob, "name", "To be "+tc.op+"ed")
			ssJoin(t, srv, alice, room, &bob)
			c := newSSConn(t, srv, alice)
			c.sync(ssAll(3))
			rmOp(t, srv, bob, room, tc.op, map[string]any{"user_id": alice.UserID, "reason": "test"}).expect(t, http.StatusOK, "")
			rmSend(t, srv, bob, room, "after the "+tc.op)
			r := c.sync(ssAll(3))
			got := r.room(t, room)
			if got.Membership != tc.membership {
				t.Fatalf("membership = %q, want %q: %s", got.Membership, tc.membership, r.Raw)
			}
			if n := len(got.Timeline); n == 0 || got.Timeline[n-1].Type != "m.room.member" || got.Timeline[n-1].sk() != alice.UserID {
				t.Fatalf("timeline = %s, want it to end with the %s", ssFmt(got.Timeline), tc.op)
			}
			// A new connection lists the room too.
			fresh := newSSConn(t, srv, alice).sync(ssAll(1))
			if got := fresh.room(t, room); got.Membership != tc.membership {
				t.Fatalf("new connection: membership = %q, want %q", got.Membership, tc.membership)
			}
			// Bans without a join first are not listed.
			if tc.op == "ban" {
				other := ssRoomWith(t, srv, bob, "name", "banned before joining")
				rmOp(t, srv, bob, other, "ban", map[string]any{"user_id": alice.UserID}).expect(t, http.StatusOK, "")
				newSSConn(t, srv, alice).sync(ssAll(1)).noRoom(t, other)
			}
		})
	}

	t.Run("leave", func(t *testing.T) {
		room := ssRoomWith(t, srv, bob, "name", "To be left")
		ssJoin(t, srv, alice, room, &bob)
		c := newSSConn(t, srv, alice)
		c.sync(ssAll(1))
		rmOp(t, srv, alice, room, "leave", nil).expect(t, http.StatusOK, "")
		r := c.sync(ssAll(1))
		if got := r.room(t, room); got.Membership != "leave" {
			t.Fatalf("membership = %q, want leave: %s", got.Membership, r.Raw)
		}
		rmSend(t, srv, bob, room, "after alice left")
		r = c.sync(ssAll(1))
		r.noRoom(t, room)
		// A connection that never had it does not list it.
		newSSConn(t, srv, alice).sync(ssAll(1)).noRoom(t, room)
	})
}

// TestSlidingSyncUnreadCounts: notification_count and highlight_count.
func TestSlidingSyncUnreadCounts(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	bob := registerUser(t, srv, "bob", ssPassword)
	room := ssRoomWith(t, srv, alice, "name", "Counts")
	ssJoin(t, srv, bob, room, &alice)
	c := newSSConn(t, srv, alice)
	r := c.sync(ssAll(1))
	if got := r.room(t, room); got.NotificationCount == nil || *got.NotificationCount != 0 || got.HighlightCount == nil || *got.HighlightCount != 0 {
		t.Fatalf("counts %v/%v, want 0/0: %s", ssFmt(got.NotificationCount), ssFmt(got.HighlightCount), r.Raw)
	}
	psSend(t, srv, bob, room, "m.room.message", psText("hello"))
	psSend(t, srv, bob, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "alice: look",
		"m.mentions": map[string]any{"user_ids": []string{alice.UserID}}})
	r = c.sync(ssAll(1))
	got := r.room(t, room)
	if got.NotificationCount == nil || *got.NotificationCount != 2 || got.HighlightCount == nil || *got.HighlightCount != 1 {
		t.Fatalf("counts %v/%v, want 2/1: %s", ssFmt(got.NotificationCount), ssFmt(got.HighlightCount), r.Raw)
	}
	// A read receipt clears them, and the change is sent.
	last := got.Timeline[len(got.Timeline)-1].EventID
	psReceipt(t, srv, alice, room, "m.read", last, nil)
	r = c.sync(ssAll(1))
	got = r.room(t, room)
	if got.NotificationCount == nil || *got.NotificationCount != 0 || got.HighlightCount == nil || *got.HighlightCount != 0 {
		t.Fatalf("counts after the receipt %v/%v, want 0/0: %s", ssFmt(got.NotificationCount), ssFmt(got.HighlightCount), r.Raw)
	}
}

// TestSlidingSyncHistoryVisibility: with history_visibility joined, the
// events before the user's join are not in the timeline.
func TestSlidingSyncHistoryVisibility(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	bob := registerUser(t, srv, "bob", ssPassword)
	room := ssRoomWith(t, srv, alice, "initial_state", []any{map[string]any{
		"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "joined"}}})
	rmSend(t, srv, alice, room, "before 1")
	rmSend(t, srv, alice, room, "before 2")
	ssJoin(t, srv, bob, room, &alice)
	rmSend(t, srv, alice, room, "after")
	r := newSSConn(t, srv, bob).sync(ssAll(20))
	got := r.room(t, room)
	wantSeq(t, "bob's messages", got.timelineBodies(), "after")
	if !slices.ContainsFunc(got.Timeline, func(e ssEvent) bool {
		return e.Type == "m.room.member" && e.sk() == bob.UserID && e.Content["membership"] == "join"
	}) {
		t.Fatalf("timeline lacks bob's join: %s", ssFmt(got.Timeline))
	}
	// And the prev_batch does not reach them either.
	if got.PrevBatch != "" {
		m := get(t, srv, rmRoom(room, "messages")+"?"+url.Values{"dir": {"b"}, "from": {got.PrevBatch}, "limit": {"50"}}.Encode(),
			bob.AccessToken).expect(t, http.StatusOK, "")
		for _, e := range rmEventsOf(t, m.Body["chunk"]) {
			if c, _ := e["content"].(map[string]any); c != nil && (c["body"] == "before 1" || c["body"] == "before 2") {
				t.Fatalf("/messages from prev_batch shows a message from before the join: %v", e)
			}
		}
	}
}

// TestSlidingSyncIgnoredUsers: an ignored user's messages and invites are
// not sent.
func TestSlidingSyncIgnoredUsers(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	bob := registerUser(t, srv, "bob", ssPassword)
	carol := registerUser(t, srv, "carol", ssPassword)
	room := ssRoomWith(t, srv, alice, "name", "Shared")
	ssJoin(t, srv, bob, room, &alice)
	ssJoin(t, srv, carol, room, &alice)
	ssSetAccountData(t, srv, alice, "", "m.ignored_user_list", map[string]any{"ignored_users": map[string]any{bob.UserID: map[string]any{}}})
	rmSend(t, srv, carol, room, "carol 1")
	rmSend(t, srv, bob, room, "bob 1")
	rmSend(t, srv, carol, room, "carol 2")
	inv := ssRoomWith(t, srv, bob, "name", "From bob")
	ssInvite(t, srv, bob, inv, alice.UserID)

	c := newSSConn(t, srv, alice)
	r := c.sync(ssAll(10))
	wantSeq(t, "messages", r.room(t, room).timelineBodies(), "carol 1", "carol 2")
	r.noRoom(t, inv)
	if r.Lists["all"] != 1 {
		t.Fatalf("count = %d, want 1 (the invite of an ignored user is not listed)", r.Lists["all"])
	}
	rmSend(t, srv, bob, room, "bob 2")
	rmSend(t, srv, carol, room, "carol 3")
	r = c.sync(ssAll(10))
	wantSeq(t, "new messages", r.room(t, room).timelineBodies(), "carol 3")
}
