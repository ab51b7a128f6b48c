package clientapi_test

// Simplified sliding sync: pos semantics (retries, superseded and unknown
// positions, restarts, pos as a /messages token), connections, long-polls.

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestSlidingSyncPos: a retry with the same pos gets the same answer; once
// a later pos is used the earlier one is refused; garbage is refused.
func TestSlidingSyncPos(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	room := ssRoomWith(t, srv, alice, "name", "Pos")
	body := ssAll(5, "required_state", ssPairs("m.room.name", ""))
	c := newSSConn(t, srv, alice)
	r0 := c.sync(body)
	if !r0.room(t, room).Initial {
		t.Fatal("first response without initial")
	}
	p0 := c.Pos
	if !strings.Contains(p0, "/") {
		t.Fatalf("pos = %q, want <connection position>/<sync token>", p0)
	}

	m1 := rmSend(t, srv, alice, room, "one")
	r1 := c.at(p0, body, "timeout", "0")
	wantSeq(t, "first delta", r1.room(t, room).timelineIDs(), m1)

	// The response is lost: the client retries with p0 and gets the same.
	again := c.at(p0, body, "timeout", "0")
	if again.summary(t) != r1.summary(t) {
		t.Fatalf("retry with the same pos:\n got %s\nwant %s", again.summary(t), r1.summary(t))
	}
	if again.room(t, room).Initial {
		t.Fatal("a retry sent the room with initial")
	}

	// Using the new pos commits it; the one before is then superseded.
	p1 := again.Pos
	m2 := rmSend(t, srv, alice, room, "two")
	r2 := c.at(p1, body, "timeout", "0")
	wantSeq(t, "second delta", r2.room(t, room).timelineIDs(), m2)
	t.Run("a superseded pos", func(t *testing.T) {
		c.raw(p0, body, "timeout", "0").expect(t, http.StatusBadRequest, "M_UNKNOWN_POS")
	})
	t.Run("the current pos still works", func(t *testing.T) {
		again := c.at(p1, body, "timeout", "0")
		wantSeq(t, "retry of the second delta", again.room(t, room).timelineIDs(), m2)
	})

	for _, bad := range []string{"garbage", "999999/s1_1_1_1_1_1_1", "-1/s0", "/", strings.Repeat("9", 40)} {
		t.Run("unknown pos "+bad, func(t *testing.T) {
			c.raw(bad, body, "timeout", "0").expect(t, http.StatusBadRequest, "M_UNKNOWN_POS")
		})
	}

	t.Run("a pos of another device", func(t *testing.T) {
		other := login(t, srv, "alice", ssPassword, nil)
		oc := &ssConn{t: t, srv: srv, s: other, ConnID: c.ConnID}
		oc.raw(p1, body, "timeout", "0").expect(t, http.StatusBadRequest, "M_UNKNOWN_POS")
	})

	t.Run("starting again without pos", func(t *testing.T) {
		fresh := c.at("", body, "timeout", "0")
		if got := fresh.room(t, room); !got.Initial {
			t.Fatalf("a request without pos is a new start, want initial: %s", fresh.Raw)
		}
		// Once the new start's pos is used, the old positions are gone.
		c.at(fresh.Pos, body, "timeout", "0")
		c.raw(p1, body, "timeout", "0").expect(t, http.StatusBadRequest, "M_UNKNOWN_POS")
	})
}

// TestSlidingSyncPosAcrossRestart: the connection survives a restart, both
// when the response before it was used and when it is retried.
func TestSlidingSyncPosAcrossRestart(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	bob := registerUser(t, srv, "bob", ssPassword)
	room := ssRoomWith(t, srv, alice, "name", "Restart")
	ssJoin(t, srv, bob, room, &alice)
	other := ssRoomWith(t, srv, alice, "name", "Other")
	body := ssAll(3, "required_state", ssPairs("m.room.member", "$LAZY"))
	c := newSSConn(t, srv, alice)
	c.sync(body)
	p0 := c.Pos

	m1 := rmSend(t, srv, bob, room, "before restart")
	r1 := c.at(p0, body, "timeout", "0")
	wantSeq(t, "delta before the restart", r1.room(t, room).timelineIDs(), m1)

	srv.Restart()

	// The retry of p0 after the restart gives the same answer.
	again := c.at(p0, body, "timeout", "0")
	if again.summary(t) != r1.summary(t) {
		t.Fatalf("retry across a restart:\n got %s\nwant %s", again.summary(t), r1.summary(t))
	}
	// Continuing: nothing new, so no rooms, and never initial.
	r2 := c.at(again.Pos, body, "timeout", "0")
	if len(r2.Rooms) != 0 {
		t.Fatalf("rooms after the restart with nothing new: %s", r2.Raw)
	}
	m2 := rmSend(t, srv, bob, room, "after restart")
	rmPutState(t, srv, alice, other, "m.room.topic", "", map[string]any{"topic": "x"}).expect(t, http.StatusOK, "")
	r3 := c.at(r2.Pos, body, "timeout", "0")
	got := r3.room(t, room)
	if got.Initial {
		t.Fatalf("a room sent before the restart came with initial: %s", r3.Raw)
	}
	wantSeq(t, "delta after the restart", got.timelineIDs(), m2)
	// bob's member event was sent already (lazy members): not again.
	wantSet(t, "lazy members after the restart", got.stateKeys())
	if r3.room(t, other).Initial {
		t.Fatal("the other room came with initial after the restart")
	}
	// The superseded pos is still refused after the restart.
	srv.Restart()
	c.raw(p0, body, "timeout", "0").expect(t, http.StatusBadRequest, "M_UNKNOWN_POS")
	c.at(r3.Pos, body, "timeout", "0")
}

// TestSlidingSyncPosAsToken: pos is a /messages from token.
func TestSlidingSyncPosAsToken(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	room := ssRoomWith(t, srv, alice)
	rmSend(t, srv, alice, room, "one")
	two := rmSend(t, srv, alice, room, "two")
	c := newSSConn(t, srv, alice)
	r := c.sync(ssAll(1))
	rmSend(t, srv, alice, room, "after the pos")
	m := get(t, srv, rmRoom(room, "messages")+"?"+url.Values{"dir": {"b"}, "from": {r.Pos}, "limit": {"1"}}.Encode(),
		alice.AccessToken).expect(t, http.StatusOK, "")
	chunk := rmEventsOf(t, m.Body["chunk"])
	if len(chunk) != 1 || chunk[0]["event_id"] != two {
		t.Fatalf("/messages from pos = %s, want the last event before the pos (%s)", m.Raw, two)
	}
	// And as /members?at= (the members at the pos).
	mem := get(t, srv, rmRoom(room, "members")+"?"+url.Values{"at": {r.Pos}}.Encode(), alice.AccessToken).
		expect(t, http.StatusOK, "")
	if chunk := rmEventsOf(t, mem.Body["chunk"]); len(chunk) != 1 || chunk[0]["state_key"] != alice.UserID {
		t.Fatalf("/members?at=pos = %s, want alice", mem.Raw)
	}
	// And as /relations from.
	get(t, srv, "/_matrix/client/v1/rooms/"+url.PathEscape(room)+"/relations/"+url.PathEscape(two)+"?"+
		url.Values{"from": {r.Pos}, "dir": {"b"}}.Encode(), alice.AccessToken).expect(t, http.StatusOK, "")
}

// TestSlidingSyncConnections: conn_id separates connections of a device.
func TestSlidingSyncConnections(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	room := ssRoomWith(t, srv, alice, "name", "Conns")
	a := newSSConn(t, srv, alice)
	b := newSSConn(t, srv, alice)
	def := &ssConn{t: t, srv: srv, s: alice} // no conn_id
	for _, c := range []*ssConn{a, def} {
		if got := c.sync(ssAll(1)).room(t, room); !got.Initial {
			t.Fatalf("connection %q: room without initial", c.ConnID)
		}
	}
	a.sync(ssAll(1)).noRoom(t, room)
	// b has sent nothing yet: the room comes with initial on it.
	if got := b.sync(ssAll(1)).room(t, room); !got.Initial {
		t.Fatal("second connection: room without initial")
	}
	m := rmSend(t, srv, alice, room, "to every connection")
	for _, c := range []*ssConn{a, b, def} {
		got := c.sync(ssAll(1)).room(t, room)
		if got.Initial {
			t.Fatalf("connection %q: initial on a delta", c.ConnID)
		}
		wantSeq(t, "connection "+c.ConnID+" timeline", got.timelineIDs(), m)
	}
}

// TestSlidingSyncLongPoll: with a timeout, a request waits for news and
// returns as soon as there is some; with none it returns after the timeout
// with no rooms.
func TestSlidingSyncLongPoll(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	bob := registerUser(t, srv, "bob", ssPassword)
	room := ssRoomWith(t, srv, alice, "name", "Poll")
	ssJoin(t, srv, bob, room, &alice)
	c := newSSConn(t, srv, alice)
	c.sync(ssAll(1))

	t.Run("wakes on a message", func(t *testing.T) {
		type result struct {
			r   resp
			err error
			dur time.Duration
		}
		done := make(chan result, 1)
		pos := c.Pos
		go func() {
			start := time.Now()
			q := url.Values{"pos": {pos}, "timeout": {"20000"}}
			body := ssAll(1)
			body["conn_id"] = c.ConnID
			r, err := tryDo(srv, req{Method: http.MethodPost, Path: ssURL + "?" + q.Encode(), Token: alice.AccessToken, Body: body})
			done <- result{r, err, time.Since(start)}
		}()
		time.Sleep(500 * time.Millisecond)
		select {
		case res := <-done:
			t.Fatalf("returned before there was news: %v %s", res.err, res.r.Raw)
		default:
		}
		m := rmSend(t, srv, bob, room, "wake up")
		res := <-done
		if res.err != nil {
			t.Fatal(res.err)
		}
		if res.dur > 10*time.Second {
			t.Fatalf("long-poll took %s to wake, want it to return at the message", res.dur)
		}
		r := ssDecode(t, res.r.expect(t, http.StatusOK, ""))
		wantSeq(t, "woken timeline", r.room(t, room).timelineIDs(), m)
		c.Pos = r.Pos
	})

	t.Run("times out with no rooms", func(t *testing.T) {
		start := time.Now()
		r := c.syncWait(ssAll(1), 1500)
		if d := time.Since(start); d < 1200*time.Millisecond || d > 10*time.Second {
			t.Fatalf("an idle long-poll of 1.5s returned after %s", d)
		}
		if len(r.Rooms) != 0 {
			t.Fatalf("rooms in an idle long-poll: %s", r.Raw)
		}
		if r.Lists["all"] != 1 {
			t.Fatalf("list count = %d, want 1", r.Lists["all"])
		}
	})

	t.Run("no pos answers at once", func(t *testing.T) {
		start := time.Now()
		r := newSSConn(t, srv, alice).at("", ssAll(1), "timeout", "20000")
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("a first request with a timeout waited %s", d)
		}
		r.room(t, room)
	})
}

// TestSlidingSyncPosSiblingRetry: two answers to the same pos (a retry);
// the client goes on with the first. The doc: "what a response adds
// becomes the connection's state only when the client sends the pos of
// that response" — so what the first answer sent is not sent again (or,
// as MSC4186 allows for a pos it does not want, the pos is refused with
// M_UNKNOWN_POS).
func TestSlidingSyncPosSiblingRetry(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	room := ssRoomWith(t, srv, alice, "name", "Sibling")
	body := ssAll(5)
	c := newSSConn(t, srv, alice)
	p0 := c.sync(body).Pos
	m1 := rmSend(t, srv, alice, room, "one")
	first := c.at(p0, body, "timeout", "0")
	second := c.at(p0, body, "timeout", "0")
	wantSeq(t, "second answer", second.room(t, room).timelineIDs(), m1)
	m2 := rmSend(t, srv, alice, room, "two")
	r := c.raw(first.Pos, body, "timeout", "0")
	if r.Status == http.StatusBadRequest {
		r.expect(t, http.StatusBadRequest, "M_UNKNOWN_POS")
		return
	}
	got := ssDecode(t, r.expect(t, http.StatusOK, ""))
	wantSeq(t, "timeline after the first answer's pos", got.room(t, room).timelineIDs(), m2)
}

// TestSlidingSyncDeviceDeleted: a device's connections go with it; a new
// login with the same device ID starts afresh.
func TestSlidingSyncDeviceDeleted(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	room := ssRoomWith(t, srv, alice, "name", "Device")
	phone := login(t, srv, "alice", ssPassword, map[string]any{"device_id": "PHONE"})
	c := newSSConn(t, srv, phone)
	c.sync(ssAll(1))
	pos := c.Pos
	withPasswordUIA(t, srv, http.MethodDelete, v3+"/devices/PHONE", alice.AccessToken, nil, alice.UserID, ssPassword).
		expect(t, http.StatusOK, "")
	again := login(t, srv, "alice", ssPassword, map[string]any{"device_id": "PHONE"})
	c2 := &ssConn{t: t, srv: srv, s: again, ConnID: c.ConnID}
	c2.raw(pos, ssAll(1), "timeout", "0").expect(t, http.StatusBadRequest, "M_UNKNOWN_POS")
	if got := c2.sync(ssAll(1)).room(t, room); !got.Initial {
		t.Fatal("the new device's first request: room without initial")
	}
}
