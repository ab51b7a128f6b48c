package clientapi_test

// MSC4195's delegated delayed leave, end to end: a real server with the
// embedded SFU, a delayed "left the call" membership event scheduled over
// HTTP, a LiveKit token from get_token, and LiveKit's Go SDK as the
// participant whose presence the server watches.

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	protoLogger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"

	"github.com/tessera-hs/tessera/calls"
	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

const (
	ddPath         = "/_matrix/client/v1/rtc/livekit/delegate_delayed_leave"
	ddUnstablePath = "/_matrix/client/unstable/io.element.msc4195/rtc/livekit/delegate_delayed_leave"
	ddMemberType   = "org.matrix.msc3401.call.member"
	ddSlot         = "m.call#ROOM"
)

// ddFast polls the SFU every 200 ms and waits 5 s for a participant, so
// that the tests see in seconds what takes production defaults longer.
func ddFast(c *config.Config) {
	c.Calls.DelegatedLeavePollInterval = config.Duration(200 * time.Millisecond)
	c.Calls.DelegatedLeaveConnectTimeout = config.Duration(5 * time.Second)
}

// ddSchedule schedules an empty membership state event (a leave) under
// stateKey after delay and returns its delay_id.
func ddSchedule(t *testing.T, srv *testserver.Server, s session, roomID, stateKey string, delay time.Duration) string {
	t.Helper()
	path := v3 + "/rooms/" + url.PathEscape(roomID) + "/state/" + ddMemberType + "/" + url.PathEscape(stateKey) +
		"?org.matrix.msc4140.delay=" + strconv.FormatInt(delay.Milliseconds(), 10)
	id := put(t, srv, path, s.AccessToken, map[string]any{}).expect(t, http.StatusOK, "").str("delay_id")
	if id == "" {
		t.Fatal("no delay_id")
	}
	return id
}

// ddScheduled is the scheduled delayed event delayID as listed, or nil
// once it is not scheduled any more.
func ddScheduled(t *testing.T, srv *testserver.Server, s session, delayID string) map[string]any {
	t.Helper()
	r := get(t, srv, dlPrefix+"?status=scheduled&delay_id="+url.QueryEscape(delayID), s.AccessToken).expect(t, http.StatusOK, "")
	list, _ := r.Body["scheduled"].([]any)
	if len(list) == 0 {
		return nil
	}
	ev, _ := list[0].(map[string]any)
	return ev
}

// ddFinalised is the outcome of delayID: its reason ("delay" when its
// timer ran out, "action" when sent on request), or "" while it is not
// finalised.
func ddFinalised(t *testing.T, srv *testserver.Server, s session, delayID string) string {
	t.Helper()
	r := get(t, srv, dlPrefix+"?status=finalised&delay_id="+url.QueryEscape(delayID), s.AccessToken).expect(t, http.StatusOK, "")
	list, _ := r.Body["finalised"].([]any)
	if len(list) == 0 {
		return ""
	}
	fe, _ := list[0].(map[string]any)
	if fe["outcome"] != "send" || fe["event_id"] == nil {
		t.Fatalf("delayed event %s finalised as %v", delayID, fe)
	}
	reason, _ := fe["reason"].(string)
	return reason
}

// ddStateSet reports whether the membership state under stateKey exists.
func ddStateSet(t *testing.T, srv *testserver.Server, s session, roomID, stateKey string) bool {
	t.Helper()
	r := get(t, srv, v3+"/rooms/"+url.PathEscape(roomID)+"/state/"+ddMemberType+"/"+url.PathEscape(stateKey), s.AccessToken)
	switch r.Status {
	case http.StatusOK:
		return true
	case http.StatusNotFound:
		return false
	}
	t.Fatalf("GET state %s: %d %s", stateKey, r.Status, r.Raw)
	return false
}

// ddWaitFired waits up to within for delayID's state to appear and
// returns how long that took and the reason it was finalised with.
func ddWaitFired(t *testing.T, srv *testserver.Server, s session, roomID, stateKey, delayID string, within time.Duration) (time.Duration, string) {
	t.Helper()
	start := time.Now()
	for !ddStateSet(t, srv, s, roomID, stateKey) {
		if time.Since(start) > within {
			t.Fatalf("leave event %s (%s) not in the room state after %v; scheduled: %v", delayID, stateKey, within,
				ddScheduled(t, srv, s, delayID))
		}
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(start)
	// The outcome is recorded just after the event is sent.
	for {
		if reason := ddFinalised(t, srv, s, delayID); reason != "" {
			return took, reason
		}
		if time.Since(start) > within+2*time.Second {
			t.Fatalf("leave event %s sent but not finalised", delayID)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ddLiveKitURL is the SFU's URL as MSC4143 discovery gives it (the first
// m.livekit transport).
func ddLiveKitURL(t *testing.T, srv *testserver.Server, s session) string {
	t.Helper()
	r := get(t, srv, "/_matrix/client/v1/rtc/transports", s.AccessToken).expect(t, http.StatusOK, "")
	tr, _ := r.Body["transports"].([]any)
	for _, x := range tr {
		if m, _ := x.(map[string]any); m["type"] == "m.livekit" {
			if u, _ := m["url"].(string); u != "" {
				return u
			}
		}
	}
	t.Fatalf("no m.livekit transport with a url in %s", r.Raw)
	return ""
}

// TestCallsDelegateDelayedLeave: the server keeps a delegated leave alive
// while the participant is on the SFU and sends it as soon as it leaves; a
// second delegation for the member replaces the first; a participant that
// never connects is given up on; and the endpoint's errors.
func TestCallsDelegateDelayedLeave(t *testing.T) {
	lksdk.SetLogger(protoLogger.GetLogger()) // LiveKit's level (warn), not stdlog chatter
	srv := testserver.Start(t, testserver.Calls(), ddFast)
	alice := registerUser(t, srv, "alice", "password1")
	bob := registerUser(t, srv, "bob", "password1")
	roomID := adCreateRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	otherRoom := adCreateRoom(t, srv, alice, map[string]any{})
	adJoin(t, srv, bob, roomID)
	lkURL := ddLiveKitURL(t, srv, alice)
	key := func(s session, suffix string) string { return "_" + s.UserID + "_" + s.DeviceID + "_" + suffix }

	t.Run("errors", func(t *testing.T) {
		aliceID := ddSchedule(t, srv, alice, roomID, key(alice, "err"), time.Minute)
		bobID := ddSchedule(t, srv, bob, roomID, key(bob, "err"), time.Minute)
		body := func(change map[string]any) map[string]any {
			b := map[string]any{"url": lkURL, "room_id": roomID, "slot_id": ddSlot, "member_id": "merr", "delay_id": aliceID}
			for k, v := range change {
				if v == nil {
					delete(b, k)
				} else {
					b[k] = v
				}
			}
			return b
		}
		for _, c := range []struct {
			name, errcode string
			body          map[string]any
		}{
			{"unknown delay_id", "M_INVALID_PARAM", body(map[string]any{"delay_id": "syd_nosuchdelayid"})},
			{"another user's delay_id", "M_INVALID_PARAM", body(map[string]any{"delay_id": bobID})},
			{"wrong room_id", "M_INVALID_PARAM", body(map[string]any{"room_id": otherRoom})},
			{"url not ours", "M_INVALID_PARAM", body(map[string]any{"url": "wss://sfu.elsewhere.example/livekit"})},
			{"missing delay_id", "M_BAD_JSON", body(map[string]any{"delay_id": nil})},
			{"missing member_id", "M_BAD_JSON", body(map[string]any{"member_id": nil})},
			{"empty slot_id", "M_BAD_JSON", body(map[string]any{"slot_id": ""})},
			{"missing url", "M_BAD_JSON", body(map[string]any{"url": nil})},
		} {
			for _, p := range []string{ddPath, ddUnstablePath} {
				r := post(t, srv, p, alice.AccessToken, c.body)
				if r.Status != http.StatusBadRequest || r.str("errcode") != c.errcode {
					t.Errorf("%s at %s: %d %s, want 400 %s", c.name, p, r.Status, r.Raw, c.errcode)
				}
			}
		}
		post(t, srv, ddPath, "", body(nil)).expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
		// Both paths accept a good request.
		post(t, srv, ddPath, alice.AccessToken, body(nil)).expect(t, http.StatusOK, "")
		post(t, srv, ddUnstablePath, alice.AccessToken, body(nil)).expect(t, http.StatusOK, "")
	})

	t.Run("lifecycle", func(t *testing.T) {
		t.Parallel()
		ddLifecycle(t, srv, alice, roomID, lkURL, key(alice, "a"), key(alice, "b"))
	})

	t.Run("never connects", func(t *testing.T) {
		t.Parallel()
		// Nobody connects as this member: the server restarts the event
		// while it waits (5 s), then leaves it to its own 2 s delay.
		// (Alice's: bob may not set call state in a public_chat room.)
		const delay = 2 * time.Second
		k := key(alice, "ghost")
		id := ddSchedule(t, srv, alice, roomID, k, delay)
		start := time.Now()
		post(t, srv, ddPath, alice.AccessToken, map[string]any{
			"url": lkURL, "room_id": roomID, "slot_id": ddSlot, "member_id": "ghost", "delay_id": id,
		}).expect(t, http.StatusOK, "")
		time.Sleep(delay + time.Second)
		if ddScheduled(t, srv, alice, id) == nil {
			t.Fatalf("fired %v after delegation although its %v delay was being restarted", time.Since(start), delay)
		}
		_, reason := ddWaitFired(t, srv, alice, roomID, k, id, 8*time.Second)
		total := time.Since(start)
		if reason != "delay" {
			t.Fatalf("fired with reason %q, want its own delay", reason)
		}
		if total < 5*time.Second {
			t.Fatalf("fired %v after delegation: the server stopped restarting it before its 5s wait ended", total)
		}
		t.Logf("given up on after the 5s wait: fired %v after delegation", total.Round(100*time.Millisecond))
	})
}

// ddLifecycle is the happy path with a replacement in the middle.
func ddLifecycle(t *testing.T, srv *testserver.Server, alice session, roomID, lkURL, keyA, keyB string) {
	const delayA, delayB = 3 * time.Second, 6 * time.Second
	// Element Call's order: schedule the leave, get a token, delegate,
	// connect.
	idA := ddSchedule(t, srv, alice, roomID, keyA, delayA)
	scheduledA := time.Now()
	tok := post(t, srv, "/_matrix/client/v1/rtc/livekit/get_token", alice.AccessToken, map[string]any{
		"url": lkURL, "room_id": roomID, "slot_id": ddSlot, "member_id": "m1",
	}).expect(t, http.StatusOK, "").str("jwt")
	delegate := func(id string) {
		t.Helper()
		post(t, srv, ddPath, alice.AccessToken, map[string]any{
			"url": lkURL, "room_id": roomID, "slot_id": ddSlot, "member_id": "m1", "delay_id": id,
		}).expect(t, http.StatusOK, "")
	}
	delegate(idA)
	room, err := lksdk.ConnectToRoomWithToken(lkURL, tok, &lksdk.RoomCallback{},
		lksdk.WithAutoSubscribe(false), lksdk.WithConnectTimeout(20*time.Second))
	must(t, err, "connect to the SFU")
	connected := true
	defer func() {
		if connected {
			room.Disconnect()
		}
	}()

	// Longer than A's delay: the server has kept restarting it.
	time.Sleep(delayA + 1500*time.Millisecond)
	ev := ddScheduled(t, srv, alice, idA)
	if ev == nil {
		t.Fatalf("A fired %v after scheduling although the participant is connected (finalised: %q)",
			time.Since(scheduledA), ddFinalised(t, srv, alice, idA))
	}
	if rs, _ := ev["running_since"].(float64); int64(rs) < scheduledA.UnixMilli()+1000 {
		t.Fatalf("A's running_since %v is not after its restarts (scheduled at %d)", ev["running_since"], scheduledA.UnixMilli())
	}

	// The client delegates a new leave for the same member: A's job ends,
	// so A fires on its own delay, while B is kept alive.
	idB := ddSchedule(t, srv, alice, roomID, keyB, delayB)
	delegate(idB)
	replaced := time.Now()
	tookA, reasonA := ddWaitFired(t, srv, alice, roomID, keyA, idA, delayA+3*time.Second)
	if reasonA != "delay" {
		t.Fatalf("A, replaced, finalised with reason %q, want its own delay", reasonA)
	}
	t.Logf("replaced A fired on its own delay %v after the replacement", tookA.Round(100*time.Millisecond))

	time.Sleep(time.Until(replaced.Add(delayB + 3*time.Second)))
	if ddScheduled(t, srv, alice, idB) == nil || ddStateSet(t, srv, alice, roomID, keyB) {
		t.Fatalf("B fired %v after delegation although the participant is connected (finalised: %q)",
			time.Since(replaced), ddFinalised(t, srv, alice, idB))
	}

	// The participant leaves: the server sends B as soon as the SFU has
	// seen it go, long before its 6 s delay would (at least 4 s away: it
	// restarts every 2 s).
	//
	// lksdk's Disconnect writes its LeaveRequest and closes the socket
	// at once, and now and then (about one run in eight under -race)
	// LiveKit never acts on that leave and drops the participant only
	// ~20 s later, as it does a vanished client. So the clock starts when
	// LiveKit's RoomService no longer has the participant.
	room.Disconnect()
	connected = false
	disconnected := time.Now()
	rs := lkRoomService(t, srv)
	for {
		_, err := rs.GetParticipant(ctx, &livekit.RoomParticipantIdentity{
			Room: calls.RoomName(roomID, ddSlot), Identity: calls.MemberIdentity(alice.UserID, "m1"),
		})
		if err != nil && strings.Contains(err.Error(), "not_found") {
			break
		}
		if err != nil {
			t.Fatalf("LiveKit GetParticipant: %v", err)
		}
		if time.Since(disconnected) > 40*time.Second {
			t.Fatal("LiveKit still has the participant 40s after it disconnected")
		}
		if ddStateSet(t, srv, alice, roomID, keyB) {
			t.Fatal("B was sent while LiveKit still had the participant")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if d := time.Since(disconnected); d > time.Second {
		t.Logf("LiveKit dropped the participant %v after it disconnected (its leave was lost)", d.Round(100*time.Millisecond))
	}
	tookB, reasonB := ddWaitFired(t, srv, alice, roomID, keyB, idB, 3500*time.Millisecond)
	if reasonB != "action" {
		t.Fatalf("B finalised with reason %q, want sent on the participant leaving (action)", reasonB)
	}
	t.Logf("leave sent %v after the participant left the SFU (delay %v)", tookB.Round(10*time.Millisecond), delayB)
}

// TestCallsDelegateDisabled: without calls the endpoint is unknown.
func TestCallsDelegateDisabled(t *testing.T) {
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")
	post(t, srv, ddPath, alice.AccessToken, map[string]any{
		"url": "ws://x", "room_id": "!r:x", "slot_id": ddSlot, "member_id": "m", "delay_id": "d",
	}).expect(t, http.StatusNotFound, "M_UNRECOGNIZED")
}
