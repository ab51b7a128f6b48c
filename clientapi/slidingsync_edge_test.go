package clientapi_test

// Simplified sliding sync edge cases: a room bumped into the window,
// long-polls that must not wake, subscriptions across a restart,
// set_presence, the default to-device limit, invite_state as /sync has it,
// lazy members of member-event targets.

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestSlidingSyncBumpIntoWindow: a room that a new message moves into the
// range comes with initial (the connection never sent it) and num_live
// counting that message (MSC4186's num_live note).
func TestSlidingSyncBumpIntoWindow(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	bob := registerUser(t, srv, "bob", ssPassword)
	old := ssRoomWith(t, srv, alice, "name", "old")
	ssJoin(t, srv, bob, old, &alice)
	rmSend(t, srv, alice, old, "history")
	newer := ssRoomWith(t, srv, alice, "name", "newer")
	body := ssLists(map[string]any{"top": ssList(3, [][2]int{{0, 0}})})
	c := newSSConn(t, srv, alice)
	r := c.sync(body)
	wantSet(t, "first window", r.roomIDs(), newer)
	m := rmSend(t, srv, bob, old, "alice: look here")
	r = c.sync(body)
	wantSet(t, "window after the message", r.roomIDs(), old)
	got := r.room(t, old)
	if !got.Initial {
		t.Fatalf("a room the connection never sent came without initial: %s", r.Raw)
	}
	ids := got.timelineIDs()
	if len(ids) != 3 || ids[2] != m {
		t.Fatalf("timeline = %v, want 3 events ending with the new message", ids)
	}
	if got.NumLive == nil || *got.NumLive != 1 {
		t.Fatalf("num_live = %v, want 1 (the message since the pos)", ssFmt(got.NumLive))
	}
	// newer left the window: it is not sent (nothing changed in it).
	r.noRoom(t, newer)
	// And back: newer gets a message, so it is sent again, not initial.
	m2 := rmSend(t, srv, alice, newer, "back on top")
	r = c.sync(body)
	got = r.room(t, newer)
	if got.Initial {
		t.Fatalf("a room the connection had sent came with initial: %s", r.Raw)
	}
	wantSeq(t, "timeline of the room back on top", got.timelineIDs(), m2)
}

// TestSlidingSyncLongPollQuiet: news outside what the connection asks for
// does not end a long-poll early.
func TestSlidingSyncLongPollQuiet(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	watched := ssRoomWith(t, srv, alice, "name", "watched")
	other := ssRoomWith(t, srv, alice, "name", "other")
	body := map[string]any{"room_subscriptions": map[string]any{watched: map[string]any{"timeline_limit": 1}}}
	c := newSSConn(t, srv, alice)
	c.sync(body)

	done := make(chan resp, 1)
	pos := c.Pos
	start := time.Now()
	go func() {
		b := map[string]any{"conn_id": c.ConnID}
		q := url.Values{"pos": {pos}, "timeout": {"2000"}}
		r, err := tryDo(srv, req{Method: http.MethodPost, Path: ssURL + "?" + q.Encode(), Token: alice.AccessToken, Body: b})
		if err != nil {
			r = resp{Status: -1, Raw: []byte(err.Error())}
		}
		done <- r
	}()
	time.Sleep(200 * time.Millisecond)
	rmSend(t, srv, alice, other, "not watched")
	ssSetAccountData(t, srv, alice, "", "org.example.quiet", map[string]any{})
	raw := <-done
	d := time.Since(start)
	r := ssDecode(t, raw.expect(t, http.StatusOK, ""))
	if d < 1700*time.Millisecond {
		t.Fatalf("long-poll returned after %s on news it did not ask for: %s", d, r.Raw)
	}
	if len(r.Rooms) != 0 {
		t.Fatalf("rooms in the quiet long-poll: %s", r.Raw)
	}
}

// TestSlidingSyncSubscriptionsSurviveRestart: sticky subscriptions are
// kept in the database.
func TestSlidingSyncSubscriptionsSurviveRestart(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	room := ssRoomWith(t, srv, alice, "name", "sticky")
	c := newSSConn(t, srv, alice)
	c.sync(map[string]any{"room_subscriptions": map[string]any{room: map[string]any{"timeline_limit": 2}}})
	c.sync(map[string]any{})
	srv.Restart()
	m := rmSend(t, srv, alice, room, "after the restart")
	r := c.sync(map[string]any{})
	got := r.room(t, room)
	if got.Initial {
		t.Fatal("initial after the restart")
	}
	wantSeq(t, "subscribed room after the restart", got.timelineIDs(), m)
}

// TestSlidingSyncPresence: set_presence as /sync has it.
func TestSlidingSyncPresence(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	presence := func() resp {
		t.Helper()
		return get(t, srv, presencePath(alice.UserID), alice.AccessToken).expect(t, http.StatusOK, "")
	}
	c := newSSConn(t, srv, alice)
	c.at("", ssAll(0), "set_presence", "offline")
	if r := presence(); r.str("presence") != "offline" {
		t.Fatalf("after set_presence=offline: %s", r.Raw)
	}
	c.sync(ssAll(0))
	if r := presence(); r.str("presence") != "online" {
		t.Fatalf("after a request without set_presence: %s", r.Raw)
	}
	b := ssAll(0)
	b["set_presence"] = "unavailable"
	c.sync(b)
	if r := presence(); r.str("presence") != "unavailable" {
		t.Fatalf("after set_presence unavailable in the body: %s", r.Raw)
	}
}

// TestSlidingSyncToDeviceDefaultLimit: without limit, 100 messages a
// response.
func TestSlidingSyncToDeviceDefaultLimit(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	bob := registerUser(t, srv, "bob", ssPassword)
	for i := 0; i < 105; i++ {
		ssToDevice(t, srv, bob, alice, i)
	}
	c := newSSConn(t, srv, alice)
	r := c.sync(ssExt(nil, map[string]any{"to_device": ssOn()}))
	got, nb := ssToDeviceNs(t, r, bob.UserID)
	if len(got) != 100 || got[0] != "0" || got[99] != "99" {
		t.Fatalf("first page: %d messages (%v...), want 0..99", len(got), got[:min(len(got), 3)])
	}
	r = c.sync(ssExt(nil, map[string]any{"to_device": ssOn("since", nb)}))
	got, _ = ssToDeviceNs(t, r, bob.UserID)
	wantSeq(t, "second page", got, "100", "101", "102", "103", "104")
}

// TestSlidingSyncInviteStateAsSync: invite_state and stripped_state hold
// the same stripped events as /sync's invite_state.
func TestSlidingSyncInviteStateAsSync(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	bob := registerUser(t, srv, "bob", ssPassword)
	room := ssRoomWith(t, srv, bob, "name", "Compare", "topic", "same", "initial_state", []any{
		map[string]any{"type": "m.room.avatar", "state_key": "", "content": map[string]any{"url": "mxc://tessera.test/a"}},
		map[string]any{"type": "m.room.encryption", "state_key": "", "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}})
	ssInvite(t, srv, bob, room, alice.UserID)
	sy := syncGet(t, srv, alice, url.Values{})
	var want []string
	for _, e := range events(sy.Body, "rooms", "invite", room, "invite_state") {
		sk, _ := e["state_key"].(string)
		want = append(want, e["type"].(string)+"|"+sk)
	}
	sort.Strings(want)
	if len(want) == 0 {
		t.Fatalf("/sync has no invite_state: %s", sy.Raw)
	}
	got := newSSConn(t, srv, alice).sync(ssAll(1)).room(t, room)
	for name, st := range map[string][]ssEvent{"invite_state": got.InviteState, "stripped_state": got.StrippedState} {
		var keys []string
		for _, e := range st {
			keys = append(keys, e.key())
		}
		sort.Strings(keys)
		if !slices.Equal(keys, want) {
			t.Fatalf("%s = %v, want /sync's %v", name, keys, want)
		}
	}
}

// TestSlidingSyncLazyTargets: lazy members include the targets of member
// events in the timeline.
func TestSlidingSyncLazyTargets(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	bob := registerUser(t, srv, "bob", ssPassword)
	dave := registerUser(t, srv, "dave", ssPassword)
	room := ssRoomWith(t, srv, alice, "name", "Targets")
	ssJoin(t, srv, bob, room, &alice)
	rmSend(t, srv, bob, room, "bob")
	body := ssAll(1, "required_state", ssPairs("m.room.member", "$LAZY"))
	c := newSSConn(t, srv, alice)
	c.sync(body)
	// Bob invites dave: the timeline has bob's invite of dave; lazy
	// members are dave (the target; bob was sent already).
	ssInvite(t, srv, bob, room, dave.UserID)
	r := c.sync(body)
	got := r.room(t, room)
	wantSet(t, "lazy members after an invite", got.stateKeys(), "m.room.member|"+dave.UserID)
	if e, _ := got.state("m.room.member", dave.UserID); e.Content["membership"] != "invite" {
		t.Fatalf("dave's member event = %s", ssFmt(e))
	}
}

// TestSlidingSyncCancelAndResend: a client cancels a waiting long-poll and
// sends the same pos with another body (MSC4186 allows it; Element X does
// it when the user scrolls): the new request is answered at once, and the
// connection goes on from its answer.
func TestSlidingSyncCancelAndResend(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	var rooms []string
	for i := 0; i < 4; i++ {
		rooms = append(rooms, ssRoomWith(t, srv, alice, "name", "r"+string(rune('0'+i))))
	}
	slices.Reverse(rooms) // list order
	narrow := ssLists(map[string]any{"l": ssList(1, [][2]int{{0, 1}})})
	wide := ssLists(map[string]any{"l": ssList(1, [][2]int{{0, 3}})})
	c := newSSConn(t, srv, alice)
	c.sync(narrow)

	pollCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	polled := make(chan error, 1)
	pos0 := c.Pos
	go func() {
		b := ssLists(narrow["lists"].(map[string]any))
		b["conn_id"] = c.ConnID
		buf, _ := json.Marshal(b)
		q := url.Values{"pos": {pos0}, "timeout": {"20000"}}
		hr, _ := http.NewRequestWithContext(pollCtx, http.MethodPost, srv.URL+ssURL+"?"+q.Encode(), bytes.NewReader(buf))
		hr.Header.Set("Authorization", "Bearer "+alice.AccessToken)
		hr.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(hr)
		if err == nil {
			res.Body.Close()
		}
		polled <- err
	}()
	time.Sleep(300 * time.Millisecond)
	cancel()
	<-polled
	start := time.Now()
	r := c.sync(wide)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("the resent request took %s", d)
	}
	wantSet(t, "rooms of the wider range", r.roomIDs(), rooms[2], rooms[3])
	r = c.sync(wide)
	wantSet(t, "rooms after", r.roomIDs())
}

// TestSlidingSyncConcurrentSamePos: news wakes a waiting long-poll at the
// moment the client cancels it and sends the same pos again (as MSC4186
// tells clients to: cancel, then resend). Both requests may answer; the
// client processes only the second and goes on with its pos. What the
// second sent must then not be sent again. The race is timing-dependent,
// so the scenario runs several times.
func TestSlidingSyncConcurrentSamePos(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	room := ssRoomWith(t, srv, alice, "name", "race")
	body := ssAll(3)
	for i := 0; i < 20; i++ {
		c := newSSConn(t, srv, alice)
		c.sync(body)
		pollCtx, cancel := context.WithCancel(ctx)
		polled := make(chan struct{})
		pos := c.Pos
		go func() {
			defer close(polled)
			b := ssAll(3)
			b["conn_id"] = c.ConnID
			buf, _ := json.Marshal(b)
			q := url.Values{"pos": {pos}, "timeout": {"10000"}}
			hr, _ := http.NewRequestWithContext(pollCtx, http.MethodPost, srv.URL+ssURL+"?"+q.Encode(), bytes.NewReader(buf))
			hr.Header.Set("Authorization", "Bearer "+alice.AccessToken)
			hr.Header.Set("Content-Type", "application/json")
			if res, err := http.DefaultClient.Do(hr); err == nil {
				res.Body.Close()
			}
		}()
		time.Sleep(200 * time.Millisecond)
		m := rmSend(t, srv, alice, room, "news "+strconv.Itoa(i))
		if i%2 == 0 {
			cancel()
		} // else the cancel comes late (a proxy still holding the first request)
		r := c.sync(body)
		wantSeq(t, "timeline of the resent request", r.room(t, room).timelineIDs(), m)
		cancel()
		<-polled
		// Let a woken first request finish whatever it does.
		time.Sleep(100 * time.Millisecond)
		if r := c.sync(body); len(r.Rooms) != 0 {
			t.Fatalf("iteration %d: the room was sent again after the client processed it: %s", i, r.Raw)
		}
	}
}

// TestSlidingSyncTimelineEdges: a timeline_limit of 0 still gives a
// prev_batch to page back from; a timeline with every event of the room
// is not limited.
func TestSlidingSyncTimelineEdges(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	room := ssRoomWith(t, srv, alice, "name", "Edges")
	last := rmSend(t, srv, alice, room, "last")

	zero := newSSConn(t, srv, alice).sync(ssAll(0)).room(t, room)
	if len(zero.Timeline) != 0 {
		t.Fatalf("timeline_limit 0: %d events", len(zero.Timeline))
	}
	if zero.PrevBatch == "" {
		t.Fatal("timeline_limit 0: no prev_batch")
	}
	m := get(t, srv, rmRoom(room, "messages")+"?"+url.Values{"dir": {"b"}, "from": {zero.PrevBatch}, "limit": {"1"}}.Encode(),
		alice.AccessToken).expect(t, http.StatusOK, "")
	if chunk := rmEventsOf(t, m.Body["chunk"]); len(chunk) != 1 || chunk[0]["event_id"] != last {
		t.Fatalf("/messages from the prev_batch of an empty timeline = %s, want the last event", m.Raw)
	}

	all := newSSConn(t, srv, alice).sync(ssAll(100)).room(t, room)
	if all.Limited {
		t.Fatalf("a timeline holding the whole room (%d events) is limited", len(all.Timeline))
	}
	if len(all.Timeline) == 0 || all.Timeline[0].Type != "m.room.create" || all.Timeline[len(all.Timeline)-1].EventID != last {
		t.Fatalf("whole-room timeline = %v, want m.room.create ... last", all.timelineIDs())
	}
}

// TestSlidingSyncLeftRoomFrozen: a room the user was kicked from shows it
// as it was at the kick: what changed after (a name, a topic, members,
// messages) is not the user's to see.
func TestSlidingSyncLeftRoomFrozen(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	bob := registerUser(t, srv, "bob", ssPassword)
	carol := registerUser(t, srv, "carol", ssPassword)
	room := ssRoomWith(t, srv, bob, "name", "Old name", "topic", "old topic")
	ssJoin(t, srv, alice, room, &bob)
	body := ssAll(5, "required_state", ssPairs("*", "*"))
	c := newSSConn(t, srv, alice)
	c.sync(body)
	rmOp(t, srv, bob, room, "kick", map[string]any{"user_id": alice.UserID}).expect(t, http.StatusOK, "")
	r := c.sync(body)
	if got := r.room(t, room); got.Membership != "leave" {
		t.Fatalf("membership after the kick = %q", got.Membership)
	}
	rmPutState(t, srv, bob, room, "m.room.name", "", map[string]any{"name": "Secret new name"}).expect(t, http.StatusOK, "")
	rmPutState(t, srv, bob, room, "m.room.topic", "", map[string]any{"topic": "secret topic"}).expect(t, http.StatusOK, "")
	ssJoin(t, srv, carol, room, &bob)
	rmSend(t, srv, bob, room, "secret message")

	check := func(what string, r ssResp) {
		t.Helper()
		got, ok := r.Rooms[room]
		if !ok {
			return
		}
		if got.Name == "Secret new name" {
			t.Fatalf("%s: the name set after the kick leaked: %s", what, r.Raw)
		}
		for _, e := range append(got.Timeline, got.RequiredState...) {
			if e.body() == "secret message" || e.Content["topic"] == "secret topic" || e.Content["name"] == "Secret new name" ||
				(e.Type == "m.room.member" && e.sk() == carol.UserID) {
				t.Fatalf("%s: an event from after the kick leaked: %s", what, ssFmt(e))
			}
		}
		for _, h := range got.Heroes {
			if h.UserID == carol.UserID {
				t.Fatalf("%s: carol, who joined after the kick, is a hero", what)
			}
		}
		if got.JoinedCount != nil && *got.JoinedCount != 1 {
			t.Fatalf("%s: joined_count = %d, want the count at the kick (1)", what, *got.JoinedCount)
		}
	}
	check("the same connection", c.sync(body))
	fresh := newSSConn(t, srv, alice).sync(body)
	if got := fresh.room(t, room); got.Name != "Old name" {
		t.Fatalf("new connection: name = %q, want the name at the kick", got.Name)
	}
	check("a new connection", fresh)
}
