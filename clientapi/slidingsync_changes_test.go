package clientapi_test

// Simplified sliding sync: changes to the fields of a room already sent
// (avatar, heroes, is_dm, a rejected invite), account data arriving with a
// room scrolled into view, subscriptions to invites, the subscription
// bound, and to-device messages across a restart.

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestSlidingSyncFieldChanges: each field is sent again when it changes,
// and only then.
func TestSlidingSyncFieldChanges(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	bob := registerUser(t, srv, "bob", ssPassword)
	carol := registerUser(t, srv, "carol", ssPassword)
	put(t, srv, profilePath(bob.UserID, "avatar_url"), bob.AccessToken, map[string]any{"avatar_url": "mxc://tessera.test/bob"}).
		expect(t, http.StatusOK, "")
	room := ssRoomWith(t, srv, alice)
	ssJoin(t, srv, bob, room, &alice)
	body := ssAll(1)
	c := newSSConn(t, srv, alice)
	r := c.sync(body)
	got := r.room(t, room)
	if len(got.Heroes) != 1 || got.Heroes[0].UserID != bob.UserID || got.Heroes[0].AvatarURL != "mxc://tessera.test/bob" {
		t.Fatalf("heroes = %s, want bob with his avatar", ssFmt(got.Heroes))
	}
	if got.IsDM {
		t.Fatal("is_dm before m.direct")
	}

	t.Run("avatar set", func(t *testing.T) {
		rmPutState(t, srv, alice, room, "m.room.avatar", "", map[string]any{"url": "mxc://tessera.test/room"}).expect(t, http.StatusOK, "")
		r := c.sync(body)
		got := r.room(t, room)
		if got.Avatar != "mxc://tessera.test/room" {
			t.Fatalf("avatar = %q after it was set: %s", got.Avatar, r.Raw)
		}
		if got.has("heroes") {
			t.Fatalf("unchanged heroes sent again: %s", r.Raw)
		}
	})
	t.Run("avatar removed", func(t *testing.T) {
		rmPutState(t, srv, alice, room, "m.room.avatar", "", map[string]any{}).expect(t, http.StatusOK, "")
		r := c.sync(body)
		got := r.room(t, room)
		if v, ok := got.Raw["avatar"]; !ok || v != nil {
			t.Fatalf("avatar after removal = %v (present %v), want null: %s", v, ok, r.Raw)
		}
	})
	t.Run("a new member changes the heroes", func(t *testing.T) {
		ssJoin(t, srv, carol, room, &alice)
		r := c.sync(body)
		got := r.room(t, room)
		var ids []string
		for _, h := range got.Heroes {
			ids = append(ids, h.UserID)
		}
		wantSet(t, "heroes", ids, bob.UserID, carol.UserID)
		if got.JoinedCount == nil || *got.JoinedCount != 3 {
			t.Fatalf("joined_count = %v, want 3", ssFmt(got.JoinedCount))
		}
		if got.has("avatar") {
			t.Fatalf("unchanged avatar sent again: %s", r.Raw)
		}
	})
	t.Run("a name hides the heroes", func(t *testing.T) {
		rmPutState(t, srv, alice, room, "m.room.name", "", map[string]any{"name": "Now named"}).expect(t, http.StatusOK, "")
		r := c.sync(body)
		got := r.room(t, room)
		if got.Name != "Now named" {
			t.Fatalf("name = %q", got.Name)
		}
		if len(got.Heroes) != 0 {
			t.Fatalf("heroes %s sent for a named room", ssFmt(got.Heroes))
		}
	})
	t.Run("is_dm", func(t *testing.T) {
		ssSetAccountData(t, srv, alice, "", "m.direct", map[string]any{bob.UserID: []string{room}})
		r := c.sync(body)
		if got := r.room(t, room); !got.IsDM {
			t.Fatalf("is_dm not sent after the room entered m.direct: %s", r.Raw)
		}
		ssSetAccountData(t, srv, alice, "", "m.direct", map[string]any{})
		r = c.sync(body)
		got := r.room(t, room)
		if v, ok := got.Raw["is_dm"]; !ok || v != false {
			t.Fatalf("is_dm = %v (present %v) after the room left m.direct, want false: %s", v, ok, r.Raw)
		}
		// Unchanged since: not sent again.
		rmSend(t, srv, bob, room, "hi")
		r = c.sync(body)
		if got := r.room(t, room); got.has("is_dm") || got.has("name") {
			t.Fatalf("unchanged is_dm or name sent again: %s", r.Raw)
		}
	})

	t.Run("a rejected invite", func(t *testing.T) {
		inv := ssRoomWith(t, srv, bob, "name", "Rejected")
		ssInvite(t, srv, bob, inv, alice.UserID)
		r := c.sync(body)
		if got := r.room(t, inv); got.Membership != "invite" || !got.Initial {
			t.Fatalf("invite: membership %q initial %v", got.Membership, got.Initial)
		}
		rmOp(t, srv, alice, inv, "leave", nil).expect(t, http.StatusOK, "")
		r = c.sync(body)
		if got := r.room(t, inv); got.Membership != "leave" {
			t.Fatalf("after rejecting: membership %q, want leave: %s", got.Membership, r.Raw)
		}
		rmSend(t, srv, bob, inv, "after the rejection")
		c.sync(body).noRoom(t, inv)
	})
}

// TestSlidingSyncAccountDataScrolled: a room's account data comes the
// first time the connection sends the room, e.g. when it scrolls into the
// range.
func TestSlidingSyncAccountDataScrolled(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	old := ssRoomWith(t, srv, alice, "name", "old")
	ssRoomWith(t, srv, alice, "name", "new")
	ssSetAccountData(t, srv, alice, old, "org.example.r", map[string]any{"v": 1})
	c := newSSConn(t, srv, alice)
	ext := map[string]any{"account_data": ssOn()}
	r := c.sync(ssExt(map[string]any{"l": ssList(0, [][2]int{{0, 0}})}, ext))
	r.noRoom(t, old)
	if got := obj(r.ext("account_data"), "rooms")[old]; got != nil {
		t.Fatalf("account data of a room not sent: %v", got)
	}
	r = c.sync(ssExt(map[string]any{"l": ssList(0, [][2]int{{0, 1}})}, ext))
	if !r.room(t, old).Initial {
		t.Fatal("scrolled-in room without initial")
	}
	wantSet(t, "account data of the scrolled-in room", ssAccountDataTypes(t, r, old), "org.example.r")
}

// TestSlidingSyncSubscribeInvite: a subscription to a room the user is
// invited to returns its stripped state.
func TestSlidingSyncSubscribeInvite(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	bob := registerUser(t, srv, "bob", ssPassword)
	inv := ssRoomWith(t, srv, bob, "name", "Sub invite")
	ssInvite(t, srv, bob, inv, alice.UserID)
	r := newSSConn(t, srv, alice).sync(map[string]any{"room_subscriptions": map[string]any{inv: map[string]any{"timeline_limit": 1}}})
	got := r.room(t, inv)
	if got.Membership != "invite" || len(got.StrippedState) == 0 || len(got.InviteState) == 0 {
		t.Fatalf("subscribed invite: %s", r.Raw)
	}
}

// TestSlidingSyncSubscriptionLimit: at most 1,000 subscriptions per
// connection, counting the sticky ones.
func TestSlidingSyncSubscriptionLimit(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	subs := func(from, n int) map[string]any {
		m := map[string]any{}
		for i := from; i < from+n; i++ {
			m[fmt.Sprintf("!r%d:tessera.test", i)] = map[string]any{"timeline_limit": 0}
		}
		return map[string]any{"room_subscriptions": m}
	}
	c := newSSConn(t, srv, alice)
	c.raw("", subs(0, 1001)).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	c.sync(subs(0, 600))
	c.raw(c.Pos, subs(600, 600), "timeout", "0").expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	// Unsubscribing makes room.
	body := subs(600, 600)
	var unsub []string
	for i := 0; i < 300; i++ {
		unsub = append(unsub, fmt.Sprintf("!r%d:tessera.test", i))
	}
	body["unsubscribe_rooms"] = unsub
	c.sync(body)
}

// TestSlidingSyncToDeviceRestart: unacknowledged to-device messages and
// the connection survive a restart.
func TestSlidingSyncToDeviceRestart(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	bob := registerUser(t, srv, "bob", ssPassword)
	c := newSSConn(t, srv, alice)
	body := ssExt(nil, map[string]any{"to_device": ssOn()})
	c.sync(body)
	ssToDevice(t, srv, bob, alice, 1)
	ssToDevice(t, srv, bob, alice, 2)
	r := c.sync(ssExt(nil, map[string]any{"to_device": ssOn("limit", 1)}))
	got, nb := ssToDeviceNs(t, r, bob.UserID)
	wantSeq(t, "before the restart", got, "1")
	srv.Restart()
	r = c.sync(ssExt(nil, map[string]any{"to_device": ssOn("since", nb)}))
	got, _ = ssToDeviceNs(t, r, bob.UserID)
	wantSeq(t, "after the restart", got, "2")
}

// TestSlidingSyncHistoryShared: the control of TestSlidingSyncHistoryVisibility:
// with history_visibility shared, events before the join are in the
// timeline.
func TestSlidingSyncHistoryShared(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	bob := registerUser(t, srv, "bob", ssPassword)
	room := ssRoomWith(t, srv, alice, "initial_state", []any{map[string]any{
		"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "shared"}}})
	rmSend(t, srv, alice, room, "before")
	ssJoin(t, srv, bob, room, &alice)
	rmSend(t, srv, alice, room, "after")
	r := newSSConn(t, srv, bob).sync(ssAll(20))
	if got := r.room(t, room).timelineBodies(); !slices.Equal(got, []string{"before", "after"}) {
		t.Fatalf("messages = %v, want before and after", got)
	}
}

// TestSlidingSyncListChanges: what a list holds follows tags, m.direct and
// invites on a connection already running: rooms enter with initial, the
// count follows, and a waiting long-poll wakes for it.
func TestSlidingSyncListChanges(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	bob := registerUser(t, srv, "bob", ssPassword)
	room := ssRoomWith(t, srv, alice, "name", "to be tagged")
	body := ssLists(map[string]any{
		"fav":     ssList(1, nil, "filters", map[string]any{"tags": []string{"m.favourite"}}),
		"dms":     ssList(1, nil, "filters", map[string]any{"is_dm": true}),
		"invites": ssList(1, nil, "filters", map[string]any{"is_invite": true}),
	})
	c := newSSConn(t, srv, alice)
	r := c.sync(body)
	if r.Lists["fav"] != 0 || r.Lists["dms"] != 0 || r.Lists["invites"] != 0 || len(r.Rooms) != 0 {
		t.Fatalf("first response: %s", r.Raw)
	}

	// A tag, while a long-poll waits.
	type result struct {
		r   resp
		err error
	}
	done := make(chan result, 1)
	pos := c.Pos
	start := time.Now()
	go func() {
		b := ssLists(body["lists"].(map[string]any))
		b["conn_id"] = c.ConnID
		q := url.Values{"pos": {pos}, "timeout": {"10000"}}
		r, err := tryDo(srv, req{Method: http.MethodPost, Path: ssURL + "?" + q.Encode(), Token: alice.AccessToken, Body: b})
		done <- result{r, err}
	}()
	time.Sleep(300 * time.Millisecond)
	put(t, srv, tagsPath(alice.UserID, room, "m.favourite"), alice.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("the long-poll did not wake for a tag (took %s)", d)
	}
	r = ssDecode(t, res.r.expect(t, http.StatusOK, ""))
	c.Pos = r.Pos
	if r.Lists["fav"] != 1 {
		t.Fatalf("fav count after tagging = %d, want 1: %s", r.Lists["fav"], r.Raw)
	}
	if got := r.room(t, room); !got.Initial || !slices.Equal(got.Lists, []string{"fav"}) {
		t.Fatalf("tagged room: initial %v lists %v, want initial and [fav]", got.Initial, got.Lists)
	}

	// Into m.direct: the dms list has it too; the room was sent already.
	ssSetAccountData(t, srv, alice, "", "m.direct", map[string]any{bob.UserID: []string{room}})
	r = c.sync(body)
	if r.Lists["dms"] != 1 {
		t.Fatalf("dms count = %d, want 1: %s", r.Lists["dms"], r.Raw)
	}
	if got, ok := r.Rooms[room]; ok && got.Initial {
		t.Fatalf("a room sent before came again with initial: %s", r.Raw)
	}

	// An invite arrives, then is rejected: the count follows.
	inv := ssRoomWith(t, srv, bob, "name", "invite")
	ssInvite(t, srv, bob, inv, alice.UserID)
	r = c.sync(body)
	if r.Lists["invites"] != 1 || r.room(t, inv).Membership != "invite" {
		t.Fatalf("after an invite: %s", r.Raw)
	}
	rmOp(t, srv, alice, inv, "leave", nil).expect(t, http.StatusOK, "")
	r = c.sync(body)
	if r.Lists["invites"] != 0 {
		t.Fatalf("invites count after rejecting = %d, want 0: %s", r.Lists["invites"], r.Raw)
	}
	// Untagged: out of fav.
	del(t, srv, tagsPath(alice.UserID, room, "m.favourite"), alice.AccessToken, nil).expect(t, http.StatusOK, "")
	r = c.sync(body)
	if r.Lists["fav"] != 0 || r.Lists["dms"] != 1 {
		t.Fatalf("counts after untagging = %v, want fav 0, dms 1", r.Lists)
	}
}

// TestSlidingSyncRedactedName: redacting the m.room.name event removes the
// name (its content loses "name"): name null, and the redacted event in
// required_state.
func TestSlidingSyncRedactedName(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	bob := registerUser(t, srv, "bob", ssPassword)
	room := ssRoomWith(t, srv, alice)
	ssJoin(t, srv, bob, room, &alice)
	nameEv := rmPutState(t, srv, alice, room, "m.room.name", "", map[string]any{"name": "Redact me"}).
		expect(t, http.StatusOK, "").str("event_id")
	body := ssAll(2, "required_state", ssPairs("m.room.name", ""))
	c := newSSConn(t, srv, alice)
	if got := c.sync(body).room(t, room); got.Name != "Redact me" || len(got.Heroes) != 0 {
		t.Fatalf("before the redaction: name %q heroes %v", got.Name, got.Heroes)
	}
	rmSendRedact(t, srv, alice, room, nameEv)
	// The room's state has the redacted event: no name.
	if st := rmGetState(t, srv, alice, room, "m.room.name", "").expect(t, http.StatusOK, ""); st.str("name") != "" {
		t.Fatalf("GET state m.room.name after the redaction: %s", st.Raw)
	}
	r := c.sync(body)
	got := r.room(t, room)
	if v, ok := got.Raw["name"]; !ok || v != nil {
		t.Errorf("name after its event was redacted = %v (present %v), want null: %s", v, ok, r.Raw)
	}
	if len(got.Heroes) != 1 || got.Heroes[0].UserID != bob.UserID {
		t.Errorf("heroes after the name went = %s, want bob", ssFmt(got.Heroes))
	}
	if e, ok := got.state("m.room.name", ""); !ok || e.Content["name"] != nil {
		t.Errorf("required_state after the redaction: %s, want the redacted m.room.name", ssFmt(got.RequiredState))
	}
	// A new connection sees the room without a name.
	fresh := newSSConn(t, srv, alice).sync(body).room(t, room)
	if fresh.Name != "" || len(fresh.Heroes) != 1 {
		t.Errorf("new connection after the redaction: name %q heroes %s, want no name and bob", fresh.Name, ssFmt(fresh.Heroes))
	}
	if e, ok := fresh.state("m.room.name", ""); ok && e.Content["name"] != nil {
		t.Errorf("new connection's required_state has the unredacted name: %s", ssFmt(e))
	}
}

// TestSlidingSyncHeroRename: a hero's new displayname is sent.
func TestSlidingSyncHeroRename(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	bob := registerUser(t, srv, "bob", ssPassword)
	room := ssRoomWith(t, srv, alice)
	ssJoin(t, srv, bob, room, &alice)
	c := newSSConn(t, srv, alice)
	c.sync(ssAll(1))
	put(t, srv, profilePath(bob.UserID, "displayname"), bob.AccessToken, map[string]any{"displayname": "Robert"}).
		expect(t, http.StatusOK, "")
	r := c.sync(ssAll(1))
	got := r.room(t, room)
	if len(got.Heroes) != 1 || got.Heroes[0].Displayname != "Robert" {
		t.Fatalf("heroes after bob's rename = %s, want Robert: %s", ssFmt(got.Heroes), r.Raw)
	}
}

// TestSlidingSyncSubscriptionExpands: a subscription asking more of a room
// a list already sent (a larger timeline_limit, more required_state)
// sends it at once.
func TestSlidingSyncSubscriptionExpands(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	room := ssRoomWith(t, srv, alice, "name", "Expand", "topic", "t")
	var sent []string
	for i := 0; i < 4; i++ {
		sent = append(sent, rmSend(t, srv, alice, room, fmt.Sprint(i)))
	}
	list := ssAll(1, "required_state", ssPairs("m.room.name", ""))
	c := newSSConn(t, srv, alice)
	c.sync(list)
	c.sync(list)
	b := ssAll(1, "required_state", ssPairs("m.room.name", ""))
	b["room_subscriptions"] = map[string]any{room: map[string]any{"timeline_limit": 3, "required_state": ssPairs("m.room.topic", "")}}
	r := c.sync(b)
	got := r.room(t, room)
	wantSeq(t, "expanded timeline", got.timelineIDs(), sent[1], sent[2], sent[3])
	if !got.ExpandedTimeline || !got.Limited {
		t.Fatalf("expanded_timeline %v limited %v, want both: %s", got.ExpandedTimeline, got.Limited, r.Raw)
	}
	wantSet(t, "required_state", got.stateKeys(), "m.room.topic|")
	if got.Initial {
		t.Fatal("initial on an expansion")
	}
}

// TestSlidingSyncChangesOutOfRange: what changed in a room while it was
// out of the range comes when it is back: as a delta from what the
// connection last sent, not as initial.
func TestSlidingSyncChangesOutOfRange(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	bob := registerUser(t, srv, "bob", ssPassword)
	b := ssRoomWith(t, srv, alice, "name", "B", "topic", "t0")
	ssJoin(t, srv, bob, b, &alice)
	a := ssRoomWith(t, srv, alice, "name", "A")
	rs := ssPairs("m.room.name", "", "m.room.topic", "", "m.room.member", "*")
	window := func(end int) map[string]any {
		return ssLists(map[string]any{"l": ssList(5, [][2]int{{0, end}}, "required_state", rs)})
	}
	c := newSSConn(t, srv, alice)
	r := c.sync(window(1))
	wantSet(t, "first window", r.roomIDs(), a, b)
	c.sync(window(0))

	// Out of the window: a topic, a rename, bob leaves. None bumps.
	rmPutState(t, srv, alice, b, "m.room.topic", "", map[string]any{"topic": "t1"}).expect(t, http.StatusOK, "")
	rmPutState(t, srv, alice, b, "m.room.name", "", map[string]any{"name": "B2"}).expect(t, http.StatusOK, "")
	rmOp(t, srv, bob, b, "leave", nil).expect(t, http.StatusOK, "")
	r = c.sync(window(0))
	r.noRoom(t, b)

	// Back in the window by scrolling.
	r = c.sync(window(1))
	got := r.room(t, b)
	if got.Initial {
		t.Fatalf("a room sent before came back with initial: %s", r.Raw)
	}
	if got.Name != "B2" {
		t.Fatalf("name = %q, want the new name", got.Name)
	}
	wantSet(t, "required_state", got.stateKeys(), "m.room.name|", "m.room.topic|", "m.room.member|"+bob.UserID)
	if e, _ := got.state("m.room.member", bob.UserID); e.Content["membership"] != "leave" {
		t.Fatalf("bob's member event = %s", ssFmt(e))
	}
	var types []string
	for _, e := range got.Timeline {
		types = append(types, e.Type)
	}
	wantSeq(t, "timeline types", types, "m.room.topic", "m.room.name", "m.room.member")
	if got.JoinedCount == nil || *got.JoinedCount != 1 {
		t.Fatalf("joined_count = %v, want 1", ssFmt(got.JoinedCount))
	}
}

// TestSlidingSyncStateBehindLimit: state that changed before the events
// that fit in a limited timeline is still sent (required_state carries
// every change, whatever the timeline shows).
func TestSlidingSyncStateBehindLimit(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	bob := registerUser(t, srv, "bob", ssPassword)
	room := ssRoomWith(t, srv, alice, "name", "Before")
	ssJoin(t, srv, bob, room, &alice)
	rmSend(t, srv, bob, room, "hello")
	for _, tc := range []struct {
		name string
		rs   []any
	}{
		{"every member", ssPairs("m.room.member", "*", "m.room.name", "")},
		{"lazy members", ssPairs("m.room.member", "$LAZY", "m.room.name", "")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := ssAll(1, "required_state", tc.rs)
			c := newSSConn(t, srv, alice)
			first := c.sync(body).room(t, room)
			if _, ok := first.state("m.room.member", bob.UserID); !ok {
				t.Fatalf("first: bob's member event not sent: %v", first.stateKeys())
			}
			name := "Robert " + tc.name
			put(t, srv, profilePath(bob.UserID, "displayname"), bob.AccessToken, map[string]any{"displayname": name}).
				expect(t, http.StatusOK, "")
			rmPutState(t, srv, alice, room, "m.room.name", "", map[string]any{"name": "After " + tc.name}).expect(t, http.StatusOK, "")
			m := rmSend(t, srv, bob, room, "only this fits")
			r := c.sync(body)
			got := r.room(t, room)
			wantSeq(t, "timeline", got.timelineIDs(), m)
			if !got.Limited {
				t.Fatal("timeline not limited")
			}
			if got.Name != "After "+tc.name {
				t.Fatalf("name = %q, want the new name: %s", got.Name, r.Raw)
			}
			if e, ok := got.state("m.room.name", ""); !ok || e.Content["name"] != "After "+tc.name {
				t.Fatalf("required_state lacks the new m.room.name: %v", got.stateKeys())
			}
			// With lazy members too: bob sent the event in the timeline, and
			// his member event as it is now was not sent yet.
			if e, ok := got.state("m.room.member", bob.UserID); !ok || e.Content["displayname"] != name {
				t.Fatalf("required_state lacks bob's new member event: %s", ssFmt(got.RequiredState))
			}
		})
	}
}
