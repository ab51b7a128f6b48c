package clientapi_test

// Simplified sliding sync: what the doc says beyond the basics — lists are
// not sticky, room configs combine, pos and timeout in the body, the
// per-device connection limit, extensions waking long-polls, invites in
// the order, count changes.

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestSlidingSyncListsNotSticky: a request without lists has none, and
// sends no list rooms.
func TestSlidingSyncListsNotSticky(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	room := ssRoomWith(t, srv, alice, "name", "Not sticky")
	c := newSSConn(t, srv, alice)
	c.sync(ssAll(1))
	rmSend(t, srv, alice, room, "news")
	r := c.sync(map[string]any{})
	if len(r.Lists) != 0 || len(r.Rooms) != 0 {
		t.Fatalf("a request without lists got lists or rooms: %s", r.Raw)
	}
}

// TestSlidingSyncCombinedConfigs: a room in a list and subscribed gets the
// larger timeline_limit and the union of required_state.
func TestSlidingSyncCombinedConfigs(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	room := ssRoomWith(t, srv, alice, "name", "Combined", "topic", "t")
	var sent []string
	for i := 0; i < 4; i++ {
		sent = append(sent, rmSend(t, srv, alice, room, "m"+strconv.Itoa(i)))
	}
	body := ssLists(map[string]any{
		"a": ssList(1, nil, "required_state", ssPairs("m.room.name", "")),
		"b": ssList(2, nil, "required_state", ssPairs("m.room.create", "")),
	})
	body["room_subscriptions"] = map[string]any{room: map[string]any{"timeline_limit": 3,
		"required_state": ssPairs("m.room.topic", "")}}
	r := newSSConn(t, srv, alice).sync(body)
	got := r.room(t, room)
	wantSeq(t, "timeline", got.timelineIDs(), sent[1], sent[2], sent[3])
	wantSet(t, "required_state", got.stateKeys(), "m.room.create|", "m.room.name|", "m.room.topic|")
	wantSet(t, "lists", got.Lists, "a", "b")
}

// TestSlidingSyncBodyParams: pos and timeout may come in the body (the
// merged MSC); the query wins over the body.
func TestSlidingSyncBodyParams(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	room := ssRoomWith(t, srv, alice, "name", "Body")
	c := newSSConn(t, srv, alice)
	c.sync(ssAll(1))
	m := rmSend(t, srv, alice, room, "news")

	inBody := ssAll(1)
	inBody["pos"] = c.Pos
	r := ssDecode(t, c.raw("", inBody).expect(t, http.StatusOK, ""))
	got := r.room(t, room)
	if got.Initial {
		t.Fatalf("pos in the body ignored (the room came as initial): %s", r.Raw)
	}
	wantSeq(t, "timeline with pos in the body", got.timelineIDs(), m)

	bothBody := ssAll(1)
	bothBody["pos"] = "garbage"
	r = ssDecode(t, c.raw(c.Pos, bothBody, "timeout", "0").expect(t, http.StatusOK, ""))
	wantSeq(t, "timeline with pos in both", r.room(t, room).timelineIDs(), m)
	c.Pos = r.Pos

	waitBody := ssAll(1)
	waitBody["pos"] = c.Pos
	waitBody["timeout"] = 1000
	start := time.Now()
	r = ssDecode(t, c.raw("", waitBody).expect(t, http.StatusOK, ""))
	if d := time.Since(start); d < 800*time.Millisecond {
		t.Fatalf("timeout 1000 in the body: returned after %s with nothing new", d)
	}
	if len(r.Rooms) != 0 {
		t.Fatalf("rooms with nothing new: %s", r.Raw)
	}
	// The query's timeout wins.
	c.Pos = r.Pos
	waitBody["pos"] = c.Pos
	start = time.Now()
	c.raw(c.Pos, waitBody, "timeout", "0").expect(t, http.StatusOK, "")
	if d := time.Since(start); d > 700*time.Millisecond {
		t.Fatalf("query timeout 0 with body timeout 1000: waited %s", d)
	}
}

// TestSlidingSyncConnectionLimit: at most 100 connections per device; the
// least recently used beyond that is dropped.
func TestSlidingSyncConnectionLimit(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	ssRoomWith(t, srv, alice, "name", "Many")
	conns := make([]*ssConn, 101)
	for i := range conns {
		conns[i] = newSSConn(t, srv, alice)
		conns[i].sync(ssAll(0))
		if i == 1 {
			// Use the first again: the least recently used is now the second.
			conns[0].sync(ssAll(0))
		}
	}
	// 101 connections: conns[1] was the least recently used.
	conns[1].raw(conns[1].Pos, ssAll(0), "timeout", "0").expect(t, http.StatusBadRequest, "M_UNKNOWN_POS")
	conns[0].sync(ssAll(0))
	conns[100].sync(ssAll(0))
	// Another device has its own 100.
	other := newSSConn(t, srv, login(t, srv, "alice", ssPassword, nil))
	other.sync(ssAll(0))
	conns[2].sync(ssAll(0))
}

// TestSlidingSyncLongPollExtensions: news for an enabled extension wakes a
// long-poll: a to-device message, account data, typing.
func TestSlidingSyncLongPollExtensions(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	bob := registerUser(t, srv, "bob", ssPassword)
	room := ssRoomWith(t, srv, alice, "name", "Ext poll")
	ssJoin(t, srv, bob, room, &alice)
	body := ssExt(map[string]any{"all": ssList(1, nil)}, map[string]any{
		"to_device": ssOn(), "account_data": ssOn(), "typing": ssOn()})
	c := newSSConn(t, srv, alice)
	c.sync(body)
	// Drain anything the first request left.
	c.sync(body)
	tdSince := "" // the to-device next_batch to acknowledge
	for _, tc := range []struct {
		name  string
		act   func()
		check func(r ssResp) bool
	}{
		{"to-device", func() { ssToDevice(t, srv, bob, alice, 7) }, func(r ssResp) bool {
			evs, _ := r.ext("to_device")["events"].([]any)
			return len(evs) == 1
		}},
		{"account data", func() { ssSetAccountData(t, srv, alice, "", "org.example.wake", map[string]any{}) }, func(r ssResp) bool {
			return slices.Contains(ssAccountDataTypes(t, r, ""), "org.example.wake")
		}},
		{"typing", func() {
			put(t, srv, rmRoom(room, "typing", bob.UserID), bob.AccessToken, map[string]any{"typing": true, "timeout": 30000}).
				expect(t, http.StatusOK, "")
		}, func(r ssResp) bool { return obj(r.ext("typing"), "rooms", room) != nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan resp, 1)
			errs := make(chan error, 1)
			b := ssExt(map[string]any{"all": ssList(1, nil)}, body["extensions"].(map[string]any))
			b["conn_id"] = c.ConnID
			if tdSince != "" {
				b["extensions"] = map[string]any{"to_device": ssOn("since", tdSince), "account_data": ssOn(), "typing": ssOn()}
			}
			pos := c.Pos
			start := time.Now()
			go func() {
				q := url.Values{"pos": {pos}, "timeout": {"20000"}}
				r, err := tryDo(srv, req{Method: http.MethodPost, Path: ssURL + "?" + q.Encode(), Token: alice.AccessToken, Body: b})
				if err != nil {
					errs <- err
					return
				}
				done <- r
			}()
			time.Sleep(300 * time.Millisecond)
			tc.act()
			select {
			case err := <-errs:
				t.Fatal(err)
			case raw := <-done:
				if d := time.Since(start); d > 10*time.Second {
					t.Fatalf("woke after %s", d)
				}
				r := ssDecode(t, raw.expect(t, http.StatusOK, ""))
				if !tc.check(r) {
					t.Fatalf("woken response lacks the news: %s", r.Raw)
				}
				c.Pos = r.Pos
				if nb, _ := r.ext("to_device")["next_batch"].(string); nb != "" {
					tdSince = nb
				}
			case <-time.After(15 * time.Second):
				t.Fatal("the long-poll did not wake")
			}
		})
	}
}

// TestSlidingSyncInviteOrder: an invite's bump_stamp is that of the
// invite, so a new invite comes first; a new join changes joined_count.
func TestSlidingSyncInviteOrder(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	bob := registerUser(t, srv, "bob", ssPassword)
	own := ssRoomWith(t, srv, alice, "name", "own")
	inv := ssRoomWith(t, srv, bob, "name", "invite")
	rmSend(t, srv, bob, inv, "busy room")
	ssInvite(t, srv, bob, inv, alice.UserID)
	names := ssNames{own: "own", inv: "invite"}
	if got := ssOrder(t, srv, alice, 2, names); !slices.Equal(got, []string{inv, own}) {
		t.Fatalf("order = %s, want invite, own", names.of(got))
	}
	rmSend(t, srv, alice, own, "bump")
	if got := ssOrder(t, srv, alice, 2, names); !slices.Equal(got, []string{own, inv}) {
		t.Fatalf("order after a message = %s, want own, invite", names.of(got))
	}
	// bob's messages in the invite room do not bump it for alice.
	c := newSSConn(t, srv, alice)
	r := c.sync(ssAll(1))
	stamp := r.room(t, inv).BumpStamp
	rmSend(t, srv, bob, inv, "still invited")
	if got := ssOrder(t, srv, alice, 2, names); !slices.Equal(got, []string{own, inv}) {
		t.Fatalf("order after a message in the invite room = %s, want own, invite", names.of(got))
	}
	if s := newSSConn(t, srv, alice).sync(ssAll(0)).room(t, inv).BumpStamp; s != stamp {
		t.Fatalf("invite bump_stamp moved from %d to %d on a message alice cannot see", stamp, s)
	}

	// A new member: joined_count is sent again.
	c2 := newSSConn(t, srv, alice)
	c2.sync(ssAll(1))
	carol := registerUser(t, srv, "carol", ssPassword)
	ssJoin(t, srv, carol, own, &alice)
	r = c2.sync(ssAll(1))
	got := r.room(t, own)
	if got.JoinedCount == nil || *got.JoinedCount != 2 {
		t.Fatalf("joined_count after carol joined = %v, want 2: %s", ssFmt(got.JoinedCount), r.Raw)
	}
}

// TestSlidingSyncInviteFilters: filters read an invite's stripped state:
// an invite to an encrypted room is encrypted, an invite to a space is a
// space.
func TestSlidingSyncInviteFilters(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	bob := registerUser(t, srv, "bob", ssPassword)
	enc := ssRoomWith(t, srv, bob, "name", "enc invite", "initial_state", []any{map[string]any{
		"type": "m.room.encryption", "state_key": "", "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}})
	space := ssRoomWith(t, srv, bob, "name", "space invite", "creation_content", map[string]any{"type": "m.space"})
	ssInvite(t, srv, bob, enc, alice.UserID)
	ssInvite(t, srv, bob, space, alice.UserID)
	for _, tc := range []struct {
		name    string
		filters map[string]any
		want    []string
	}{
		{"is_encrypted", map[string]any{"is_encrypted": true}, []string{enc}},
		{"not encrypted", map[string]any{"is_encrypted": false}, []string{space}},
		{"spaces", map[string]any{"room_types": []any{"m.space"}}, []string{space}},
		{"untyped", map[string]any{"room_types": []any{nil}}, []string{enc}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newSSConn(t, srv, alice).sync(ssLists(map[string]any{"f": ssList(0, nil, "filters", tc.filters)}))
			wantSet(t, "rooms", r.roomIDs(), tc.want...)
			if r.Lists["f"] != len(tc.want) {
				t.Fatalf("count = %d, want %d", r.Lists["f"], len(tc.want))
			}
		})
	}
}

// TestSlidingSyncBumpTypes: only the doc's event types bump a room.
func TestSlidingSyncBumpTypes(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	r1 := ssRoomWith(t, srv, alice, "name", "one")
	target := rmSend(t, srv, alice, r1, "target")
	r2 := ssRoomWith(t, srv, alice, "name", "two")
	names := ssNames{r1: "one", r2: "two"}
	top := func() string { t.Helper(); return ssOrder(t, srv, alice, 2, names)[0] }
	if got := top(); got != r2 {
		t.Fatalf("top = %s, want two", names[got])
	}
	for _, tc := range []struct {
		room, typ string
		content   map[string]any
		bumps     bool
	}{
		{r1, "m.reaction", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": target, "key": "x"}}, false},
		{r1, "org.example.custom", map[string]any{"x": 1}, false},
		{r1, "m.sticker", map[string]any{"body": "s", "url": "mxc://tessera.test/s", "info": map[string]any{}}, true},
		{r2, "m.room.encrypted", map[string]any{"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x",
			"sender_key": "k", "device_id": "D", "session_id": "s"}, true},
		{r1, "m.call.invite", map[string]any{"call_id": "c", "lifetime": 60000, "version": 0,
			"offer": map[string]any{"type": "offer", "sdp": "v=0"}}, true},
		{r2, "m.poll.start", map[string]any{"org.matrix.msc1767.text": "poll"}, true},
		{r1, "m.beacon_info", map[string]any{"live": true}, true},
	} {
		t.Run(tc.typ, func(t *testing.T) {
			before := top()
			psSend(t, srv, alice, tc.room, tc.typ, tc.content)
			after := top()
			if tc.bumps && after != tc.room {
				t.Fatalf("%s did not bump %s to the top", tc.typ, names[tc.room])
			}
			if !tc.bumps && after != before {
				t.Fatalf("%s moved %s to the top", tc.typ, names[after])
			}
		})
	}
}
