package cluster_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// A push rule changed through one process applies to the events another
// process commits (and evaluates) from then on: the change's NOTIFY drops
// that process's cached copy of the rules.
func TestScaleOutPushRules(t *testing.T) {
	c := startScaleOut(t)
	ctx := context.Background()
	c.joinAll(t, c.bob)
	muted, other := c.rooms["b"], c.createRoom(t, "b", &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if _, err := c.bob.JoinRoomByID(ctx, other); err != nil {
		t.Fatal(err)
	}
	viaB := as(c.srv["b"], c.alice)
	// count waits until bob's notification count in room is at least
	// min (evaluation is asynchronous), and returns it. It syncs through
	// b, which may not be bob's owner (who evaluates his rules): such a
	// process counts from the database, up to 100 ms behind.
	count := func(room id.RoomID, min int) int {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			resp, err := as(c.srv["b"], c.bob).SyncRequest(ctx, 0, "", "", false, "")
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			if r := resp.Rooms.Join[room]; r != nil && r.UnreadNotifications != nil {
				n = r.UnreadNotifications.NotificationCount
			}
			if n >= min || time.Now().After(deadline) {
				return n
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// b evaluates (and caches bob's rules) for its room's first message.
	if _, err := viaB.SendText(ctx, muted, "before"); err != nil {
		t.Fatal(err)
	}
	if n := count(muted, 1); n != 1 {
		t.Fatalf("notification count before the rule: %d, want 1", n)
	}
	// Bob mutes the room through a.
	if _, err := as(c.srv["a"], c.bob).MakeRequest(ctx, "PUT",
		as(c.srv["a"], c.bob).BuildClientURL("v3", "pushrules", "global", "room", muted),
		map[string]any{"actions": []any{}}, nil); err != nil {
		t.Fatal(err)
	}
	// Until the rule applies on b (within 5 s), a message to the muted
	// room still counts; each is followed by one to the other room, whose
	// count tells that b has evaluated it.
	deadline := time.Now().Add(5 * time.Second)
	for i := 1; ; i++ {
		if _, err := viaB.SendText(ctx, muted, fmt.Sprintf("after %d", i)); err != nil {
			t.Fatal(err)
		}
		if _, err := viaB.SendText(ctx, other, fmt.Sprintf("probe %d", i)); err != nil {
			t.Fatal(err)
		}
		if n := count(other, i); n != i {
			t.Fatalf("other room: count %d after %d messages", n, i)
		}
		n := count(muted, 0)
		if n == i {
			break // the last message did not count: the rule applied
		}
		if time.Now().After(deadline) {
			t.Fatalf("muted room: count %d after %d messages since the rule, 5 s on", n, i)
		}
	}
}

// The unread counts of an event that one process committed and evaluated
// show in the syncs and the notifications list of the others, and a read
// receipt through a third clears them everywhere.
func TestScaleOutUnreadCounts(t *testing.T) {
	c := startScaleOut(t)
	ctx := context.Background()
	c.joinAll(t, c.bob)
	room := c.rooms["b"] // b commits and evaluates
	// Bob's join marks the invitation read once b has written the mark
	// (a moment after the join): until then a and c count 1, and cache
	// it. The write's announcement drops it.
	for _, inst := range c.names {
		waitUnread(t, c, inst, room, 0, "after the join")
	}
	resp, err := as(c.srv["a"], c.alice).SendText(ctx, room, "hello bob")
	if err != nil {
		t.Fatal(err)
	}
	for _, inst := range c.names {
		waitUnread(t, c, inst, room, 1, "after the message")
		var page struct {
			Notifications []struct {
				RoomID string `json:"room_id"`
				Event  struct {
					EventID string `json:"event_id"`
				} `json:"event"`
			} `json:"notifications"`
		}
		bob := as(c.srv[inst], c.bob)
		if _, err := bob.MakeRequest(ctx, "GET", bob.BuildClientURL("v3", "notifications"), nil, &page); err != nil {
			t.Fatal(err)
		}
		// The newest first (the invitations come before).
		if len(page.Notifications) == 0 || page.Notifications[0].Event.EventID != resp.EventID.String() {
			t.Fatalf("through %s: notifications %+v, want %s first", inst, page.Notifications, resp.EventID)
		}
	}
	if err := as(c.srv["c"], c.bob).SendReceipt(ctx, room, resp.EventID, "m.read", nil); err != nil {
		t.Fatal(err)
	}
	for _, inst := range c.names {
		waitUnread(t, c, inst, room, 0, "after the receipt")
	}
}

// waitUnread waits up to 5 s for bob's count in room through inst to be
// want.
func waitUnread(t *testing.T, c *scaleOut, inst string, room id.RoomID, want int, when string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := unreadVia(t, c, inst, room)
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("through %s: count %d 5 s %s, want %d", inst, n, when, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// unreadVia is bob's notification count in room in an initial sync
// through inst.
func unreadVia(t *testing.T, c *scaleOut, inst string, room id.RoomID) int {
	t.Helper()
	s, err := syncRaw(context.Background(), as(c.srv[inst], c.bob), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	return s.Rooms.Join[room.String()].Unread.Notifications
}
