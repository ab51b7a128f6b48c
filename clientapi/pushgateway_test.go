package clientapi_test

// Delivery to push gateways: what arrives, for what, and how failures,
// rejected pushkeys and restarts are handled.
// https://spec.matrix.org/v1.19/push-gateway-api/

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

func TestPushGatewayDelivery(t *testing.T) {
	t.Parallel()
	gw := newPushGateway(t)
	srv := testserver.Start(t, withPushGateways)
	alice := registerUser(t, srv, "alice", psPassword)
	bob := registerUser(t, srv, "bob", psPassword)
	carol := registerUser(t, srv, "carol", psPassword)
	put(t, srv, adPath("profile", bob.UserID, "displayname"), bob.AccessToken, map[string]any{"displayname": "Bob the Builder"}).
		expect(t, http.StatusOK, "")
	setHTTPPusher(t, srv, alice, "full", gw.URL, map[string]any{"custom": "x"})
	setHTTPPusher(t, srv, alice, "idonly", gw.URL, map[string]any{"format": "event_id_only"})

	group := adCreateRoom(t, srv, bob, map[string]any{"preset": "public_chat", "name": "Ops", "room_alias_name": "ops"})
	adJoin(t, srv, alice, group)
	adJoin(t, srv, carol, group)

	// An invite notifies its target (who is not in the room yet), and
	// counts in the badge while pending, as in Synapse.
	dm := adCreateRoom(t, srv, bob, map[string]any{"preset": "private_chat", "invite": []string{alice.UserID}, "is_direct": true})
	gw.waitFor("the invite", func(reqs []pgRequest) bool {
		for _, r := range reqs {
			if r.N["room_id"] == dm && r.N["type"] == "m.room.member" && r.N["user_is_target"] == true &&
				r.pushkey() == "full" && r.N["prio"] == "high" {
				if r.unread() != 1 {
					t.Errorf("invite notification unread = %d, want 1 (the pending invite)", r.unread())
				}
				return true
			}
		}
		return false
	})
	adJoin(t, srv, alice, dm)

	// A message in a group: the full payload, low priority, the pusher's
	// data minus url.
	msg := psSend(t, srv, bob, group, "m.room.message", psText("hello all"))
	r := gw.waitDelivered(msg, "full")
	for k, want := range map[string]any{
		"event_id": msg, "room_id": group, "type": "m.room.message", "sender": bob.UserID,
		"sender_display_name": "Bob the Builder", "room_name": "Ops", "room_alias": "#ops:tessera.test", "prio": "low",
	} {
		if r.N[k] != want {
			t.Errorf("message notification %s = %v, want %v", k, r.N[k], want)
		}
	}
	if c, _ := r.N["content"].(map[string]any); c["body"] != "hello all" {
		t.Errorf("message notification content = %v", r.N["content"])
	}
	if r.unread() != 1 {
		t.Errorf("message notification unread = %d, want 1 (one room with unread messages)", r.unread())
	}
	dev := r.device()
	if dev["app_id"] != "io.element.test" || dev["pushkey"] != "full" || !reflect.DeepEqual(dev["data"], map[string]any{"custom": "x"}) {
		t.Errorf("device = %v", dev)
	}
	if ts, _ := dev["pushkey_ts"].(float64); ts < float64(time.Now().Add(-time.Hour).Unix()) || ts > float64(time.Now().Unix()+1) {
		t.Errorf("pushkey_ts = %v, want seconds around now", dev["pushkey_ts"])
	}
	// event_id_only: no content, sender or type; format left out of data.
	r = gw.waitDelivered(msg, "idonly")
	for _, k := range []string{"type", "sender", "content", "sender_display_name", "room_name"} {
		if _, ok := r.N[k]; ok {
			t.Errorf("event_id_only notification has %s: %v", k, r.N)
		}
	}
	if r.N["room_id"] != group || !reflect.DeepEqual(r.device()["data"], map[string]any{}) {
		t.Errorf("event_id_only notification = %v", r.N)
	}

	// A mention highlights and makes a sound: high priority.
	mention := psSend(t, srv, bob, group, "m.room.message", map[string]any{"msgtype": "m.text", "body": "look",
		"m.mentions": map[string]any{"user_ids": []string{alice.UserID}}})
	r = gw.waitDelivered(mention, "full")
	if r.N["prio"] != "high" || !reflect.DeepEqual(r.device()["tweaks"], map[string]any{"sound": "default", "highlight": true}) {
		t.Errorf("mention: prio %v, tweaks %v", r.N["prio"], r.device()["tweaks"])
	}

	// A DM message, a call and MatrixRTC rings.
	dmMsg := psSend(t, srv, bob, dm, "m.room.message", psText("psst"))
	r = gw.waitDelivered(dmMsg, "full")
	if r.N["prio"] != "high" || !reflect.DeepEqual(r.device()["tweaks"], map[string]any{"sound": "default"}) || r.unread() != 2 {
		t.Errorf("DM: prio %v, tweaks %v, unread %d", r.N["prio"], r.device()["tweaks"], r.unread())
	}
	ring := map[string]any{"sound": "ring"}
	call := psSend(t, srv, bob, dm, "m.call.invite", map[string]any{"call_id": "c1", "version": "1", "lifetime": 60000,
		"offer": map[string]any{"type": "offer", "sdp": "v=0"}})
	rtcUnstable := psSend(t, srv, bob, dm, "org.matrix.msc4075.rtc.notification", map[string]any{
		"notification_type": "ring", "lifetime": 30000, "sender_ts": time.Now().UnixMilli()})
	rtcStable := psSend(t, srv, bob, dm, "m.rtc.notification", map[string]any{
		"notification_type": "ring", "lifetime": 30000, "sender_ts": time.Now().UnixMilli()})
	// Each unread ring is a missed call.
	for i, c := range []struct{ name, id string }{{"m.call.invite", call}, {"unstable rtc", rtcUnstable}, {"stable rtc", rtcStable}} {
		r = gw.waitDelivered(c.id, "full")
		if r.N["prio"] != "high" || !reflect.DeepEqual(r.device()["tweaks"], ring) {
			t.Errorf("%s: prio %v, tweaks %v", c.name, r.N["prio"], r.device()["tweaks"])
		}
		if r.missedCalls() != i+1 {
			t.Errorf("%s: missed_calls = %d, want %d", c.name, r.missedCalls(), i+1)
		}
	}
	if r := gw.waitDelivered(dmMsg, "full"); r.missedCalls() != 0 {
		t.Errorf("missed_calls before any call = %d", r.missedCalls())
	}

	// Nothing for one's own event, for an ignored user's, or in a room
	// whose notifications are off; the message after them arrives, and
	// delivery is in order, so they never will.
	own := psSend(t, srv, alice, group, "m.room.message", psText("mine"))
	put(t, srv, adPath("user", alice.UserID, "account_data", "m.ignored_user_list"), alice.AccessToken,
		map[string]any{"ignored_users": map[string]any{carol.UserID: map[string]any{}}}).expect(t, http.StatusOK, "")
	ignored := psSend(t, srv, carol, group, "m.room.message", psText("from carol"))
	put(t, srv, psRulePath("room", group), alice.AccessToken, map[string]any{"actions": []any{}}).expect(t, http.StatusOK, "")
	muted := psSend(t, srv, bob, group, "m.room.message", psText("muted"))
	after := psSend(t, srv, bob, dm, "m.room.message", psText("after"))
	gw.waitDelivered(after, "full")
	gw.waitDelivered(after, "idonly")
	reqs := gw.requests()
	for name, id := range map[string]string{"own": own, "ignored": ignored, "muted": muted} {
		for _, r := range reqs {
			if r.eventID() == id {
				t.Errorf("%s event %s was pushed: %v", name, id, r.N)
			}
		}
	}
	// Per pusher, in order.
	var order []string
	for _, r := range reqs {
		if r.pushkey() == "full" && r.eventID() != "" && r.N["type"] != "m.room.member" {
			order = append(order, r.eventID())
		}
	}
	if want := []string{msg, mention, dmMsg, call, rtcUnstable, rtcStable, after}; !reflect.DeepEqual(order, want) {
		t.Errorf("full pusher got %v, want %v", order, want)
	}

	// Reading the DM clears the badge: a counts-only notification.
	n := len(gw.requests())
	psReceipt(t, srv, alice, dm, "m.read", after, nil)
	gw.waitFor("a badge clear", func(reqs []pgRequest) bool {
		for _, r := range reqs[n:] {
			if r.pushkey() == "full" && r.eventID() == "" && r.unread() == 0 {
				if _, ok := r.N["room_id"]; ok {
					t.Errorf("badge update with a room: %v", r.N)
				}
				if r.missedCalls() != 0 {
					t.Errorf("missed calls after reading the room: %v", r.N)
				}
				return true
			}
		}
		return false
	})
}

// TestPushGatewayInviteBadge: invites count in the badge (as Synapse's
// get_badge_count), so accepting one and rejecting another each send a
// counts-only notification that lowers it.
func TestPushGatewayInviteBadge(t *testing.T) {
	t.Parallel()
	gw, srv, alice, bob, _ := pgSetup(t)
	accept := adCreateRoom(t, srv, bob, map[string]any{"preset": "private_chat", "invite": []string{alice.UserID}})
	reject := adCreateRoom(t, srv, bob, map[string]any{"preset": "private_chat", "invite": []string{alice.UserID}})
	gw.waitFor("the second invite, with both in the badge", func(reqs []pgRequest) bool {
		for _, r := range reqs {
			if r.N["room_id"] == reject && r.N["type"] == "m.room.member" && r.pushkey() == "phone" {
				if r.unread() != 2 {
					t.Errorf("second invite: unread = %d, want 2", r.unread())
				}
				return true
			}
		}
		return false
	})
	badgeUpdate := func(what string, after, want int) {
		t.Helper()
		gw.waitFor(what, func(reqs []pgRequest) bool {
			for _, r := range reqs[after:] {
				if r.pushkey() == "phone" && r.eventID() == "" {
					if r.unread() != want {
						t.Fatalf("%s: unread = %d, want %d (%v)", what, r.unread(), want, r.N)
					}
					if _, ok := r.N["room_id"]; ok {
						t.Errorf("badge update with a room: %v", r.N)
					}
					return true
				}
			}
			return false
		})
	}
	n := len(gw.requests())
	adJoin(t, srv, alice, accept)
	badgeUpdate("the badge after accepting an invite", n, 1)
	n = len(gw.requests())
	post(t, srv, v3+"/rooms/"+url.PathEscape(reject)+"/leave", alice.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")
	badgeUpdate("the badge after rejecting an invite", n, 0)
}

// failingGateway answers each (pushkey, message body) as plan says,
// attempt by attempt, then 200.
type failingGateway struct {
	mu       sync.Mutex
	attempts map[string]int
	plan     map[string][]pgAnswer
}

func (f *failingGateway) answer(n map[string]any) pgAnswer {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := pgRequest{N: n}
	body, _ := kxPath(n, "content", "body").(string)
	k := r.pushkey() + " " + body
	i := f.attempts[k]
	f.attempts[k]++
	if p := f.plan[k]; i < len(p) {
		return p[i]
	}
	return pgAnswer{Status: http.StatusOK}
}

func TestPushGatewayFailures(t *testing.T) {
	t.Parallel()
	gw, srv, alice, bob, room := pgSetup(t)
	setHTTPPusher(t, srv, alice, "tablet", gw.URL, nil)

	// a fails twice with 500 and 503, b times out once (the server's
	// timeout is 1s), c is rejected for the phone.
	f := &failingGateway{attempts: map[string]int{}, plan: map[string][]pgAnswer{
		"phone a": {{Status: 500}, {Status: 503}},
		"phone b": {{Status: 200, Delay: 3 * time.Second}},
		"phone c": {{Status: 200, Rejected: []string{"phone"}}},
	}}
	gw.setAnswer(f.answer)
	a := psSend(t, srv, bob, room, "m.room.message", psText("a"))
	b := psSend(t, srv, bob, room, "m.room.message", psText("b"))
	c := psSend(t, srv, bob, room, "m.room.message", psText("c"))

	gw.waitDelivered(c, "phone")
	gw.waitDelivered(c, "tablet")
	reqs := gw.requests()
	var phone []string
	for _, r := range reqs {
		if r.pushkey() == "phone" && r.eventID() != "" { // not badge updates
			phone = append(phone, fmt.Sprintf("%s:%d", r.eventID(), r.Status))
		}
	}
	if want := []string{a + ":500", a + ":503", a + ":200", b + ":200", b + ":200", c + ":200"}; !reflect.DeepEqual(phone, want) {
		t.Errorf("the phone's gateway saw %v, want %v", phone, want)
	}
	// In order: nothing of b before a was delivered.
	seenA := false
	for _, r := range reqs {
		if r.pushkey() != "phone" {
			continue
		}
		if r.eventID() == a && r.Status == 200 {
			seenA = true
		}
		if r.eventID() == b && !seenA {
			t.Errorf("b tried before a was delivered: %v", phone)
		}
	}
	// The rejected pushkey's pusher is gone; the tablet's stays and gets
	// what follows, the phone nothing more.
	// (The gateway records a request before it answers: wait for the
	// server to act on the answer.)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		got := get(t, srv, v3+"/pushers", alice.AccessToken).expect(t, http.StatusOK, "")
		var body struct {
			Pushers []map[string]any `json:"pushers"`
		}
		json.Unmarshal(got.Raw, &body)
		if len(body.Pushers) == 1 && body.Pushers[0]["pushkey"] == "tablet" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pushers after a rejection: %s", got.Raw)
		}
	}
	d := psSend(t, srv, bob, room, "m.room.message", psText("d"))
	gw.waitDelivered(d, "tablet")
	for _, r := range gw.requests() {
		if r.pushkey() == "phone" && r.eventID() == d {
			t.Errorf("the rejected pusher still gets notifications")
		}
	}
}

// A restart in the middle of retries: what was delivered is not sent
// again, what was not is delivered once, in order.
func TestPushGatewayRestart(t *testing.T) {
	t.Parallel()
	gw, srv, _, bob, room := pgSetup(t)

	first := psSend(t, srv, bob, room, "m.room.message", psText("before"))
	gw.waitDelivered(first, "phone")
	gw.setAnswer(func(map[string]any) pgAnswer { return pgAnswer{Status: 500} })
	var sent []string
	for i := range 3 {
		sent = append(sent, psSend(t, srv, bob, room, "m.room.message", psText(fmt.Sprintf("m%d", i))))
	}
	gw.waitFor("retries", func(reqs []pgRequest) bool {
		n := 0
		for _, r := range reqs {
			if r.eventID() == sent[0] && r.Status == 500 {
				n++
			}
		}
		return n >= 3
	})
	srv.Restart()
	gw.setAnswer(nil)
	gw.waitDelivered(sent[2], "phone")
	time.Sleep(300 * time.Millisecond) // anything sent twice would have come by now
	reqs := gw.requests()
	var order []string
	for _, r := range reqs {
		if r.Status == 200 && r.eventID() != "" {
			order = append(order, r.eventID())
		}
	}
	if want := append([]string{first}, sent...); !reflect.DeepEqual(order, want) {
		t.Errorf("delivered %v, want each of %v once, in order", order, want)
	}
}

// A notification failing for longer than give_up_after is dropped; a
// pusher failing for longer than disable_after is disabled until set
// again.
func TestPushGatewayGiveUpAndDisable(t *testing.T) {
	t.Parallel()
	gw, srv, alice, bob, room := pgSetup(t, func(c *config.Config) {
		c.Push.GiveUpAfter = config.Duration(400 * time.Millisecond)
		c.Push.DisableAfter = config.Duration(2 * time.Second)
	})
	gw.setAnswer(func(map[string]any) pgAnswer { return pgAnswer{Status: 500} })

	a := psSend(t, srv, bob, room, "m.room.message", psText("a"))
	b := psSend(t, srv, bob, room, "m.room.message", psText("b"))
	// a is given up on, then b is tried.
	gw.waitFor("b tried", func(reqs []pgRequest) bool {
		for _, r := range reqs {
			if r.eventID() == b {
				return true
			}
		}
		return false
	})
	// Past disable_after, the attempts stop.
	time.Sleep(2500 * time.Millisecond)
	n := len(gw.requests())
	time.Sleep(700 * time.Millisecond)
	if m := len(gw.requests()); m != n {
		t.Fatalf("a disabled pusher is still tried: %d requests, then %d", n, m)
	}
	for _, r := range gw.requests() {
		if r.Status == 200 && r.eventID() != "" {
			t.Errorf("unexpected delivery %v", r.N)
		}
	}
	_ = a
	// Setting it again enables it; what follows is delivered.
	gw.setAnswer(nil)
	setHTTPPusher(t, srv, alice, "phone", gw.URL, nil)
	c := psSend(t, srv, bob, room, "m.room.message", psText("c"))
	gw.waitDelivered(c, "phone")
}

// Without an allowance, gateways on loopback are refused, as URL previews
// are: nothing reaches the gateway.
func TestPushGatewaySSRFGuard(t *testing.T) {
	t.Parallel()
	gw, srv, _, bob, room := pgSetup(t, func(c *config.Config) { c.Push.IPRangeWhitelist = nil })
	psSend(t, srv, bob, room, "m.room.message", psText("to loopback?"))
	time.Sleep(time.Second)
	if reqs := gw.requests(); len(reqs) != 0 {
		t.Fatalf("a gateway on loopback was reached: %v", reqs)
	}
}
