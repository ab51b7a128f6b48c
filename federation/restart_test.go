package federation_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/server"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// messageBodies pages back through a room and counts each message body.
func messageBodies(t *testing.T, c *mautrix.Client, roomID id.RoomID) map[string]int {
	t.Helper()
	resp, err := c.Messages(context.Background(), roomID, "", "", mautrix.DirectionBackward, nil, 200)
	if err != nil {
		t.Fatalf("%s: messages: %v", c.UserID, err)
	}
	out := map[string]int{}
	for _, ev := range resp.Chunk {
		if ev.Type == event.EventMessage {
			b, _ := ev.Content.Raw["body"].(string)
			out[b]++
		}
	}
	return out
}

// TestThreeServersOneRestarts: three servers share a room; one is stopped
// while the other two keep talking, then started again. Every message
// reaches it, none twice, and it can talk again.
func TestThreeServersOneRestarts(t *testing.T) {
	ctx := context.Background()
	a := testserver.Start(t, testserver.Federation("127.0.0.1"))
	b := testserver.Start(t, testserver.Federation("127.0.0.2"))
	c := testserver.Start(t, testserver.Federation("127.0.0.3"))
	alice := a.Register("alice", "password-alice")
	bob := b.Register("bob", "password-bob")
	carol := c.Register("carol", "password-carol")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	roomID := created.RoomID
	for _, u := range []*mautrix.Client{bob, carol} {
		if _, err := u.JoinRoom(ctx, roomID.String(), &mautrix.ReqJoinRoom{Via: []string{a.Config.ServerName}}); err != nil {
			t.Fatalf("%s joins: %v", u.UserID, err)
		}
	}
	// Everyone sees everyone: B and C learnt of each other through A.
	waitMembership(t, bob, roomID, carol.UserID, event.MembershipJoin)
	waitMembership(t, carol, roomID, bob.UserID, event.MembershipJoin)
	sendText(t, carol, roomID, "carol here")
	waitForMessage(t, bob, roomID, "carol here")
	waitForMessage(t, alice, roomID, "carol here")

	c.Stop()
	const n = 10
	for i := range n {
		sendText(t, alice, roomID, fmt.Sprintf("alice %d", i))
		sendText(t, bob, roomID, fmt.Sprintf("bob %d", i))
	}
	c.Restart()

	want := map[string]bool{"carol here": true}
	for i := range n {
		want[fmt.Sprintf("alice %d", i)] = true
		want[fmt.Sprintf("bob %d", i)] = true
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := messageBodies(t, carol, roomID)
		missing := 0
		for b := range want {
			if got[b] == 0 {
				missing++
			}
		}
		for b, k := range got {
			if k > 1 {
				t.Fatalf("carol has %q %d times", b, k)
			}
			if !want[b] {
				t.Fatalf("carol has an unexpected message %q", b)
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the restart carol still lacks %d of %d messages: has %v", missing, len(want), got)
		}
		time.Sleep(200 * time.Millisecond)
	}
	sendText(t, carol, roomID, "back again")
	waitForMessage(t, alice, roomID, "back again")
	waitForMessage(t, bob, roomID, "back again")
}

// TestGapFilledFromState: A misses more of B's events than
// get_missing_events fetches at once (B's queue for A is lost while A is
// down); the next event from B still gets in, from the state before it
// that B gives, and the two servers talk on.
func TestGapFilledFromState(t *testing.T) {
	p := joinedPair(t)
	ctx := context.Background()
	p.a.Stop()
	for i := range 60 {
		sendText(t, p.bob, p.roomID, fmt.Sprintf("lost %d", i))
	}
	// B loses what it queued for A (as a server that gives up on a
	// destination does).
	db, err := server.OpenDatabase(ctx, p.b.Config.Database)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`DELETE FROM federation_queue_pdus`, `DELETE FROM federation_queue_json WHERE nid NOT IN (SELECT json_nid FROM federation_queue_edus)`} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	p.a.Restart()
	sendText(t, p.bob, p.roomID, "after the gap")
	waitForMessage(t, p.alice, p.roomID, "after the gap")
	sendText(t, p.alice, p.roomID, "welcome back")
	waitForMessage(t, p.bob, p.roomID, "welcome back")
}
