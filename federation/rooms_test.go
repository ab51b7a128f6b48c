package federation_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// waitForMessage syncs c until a message with body appears in room, and
// returns its event.
func waitForMessage(t *testing.T, c *mautrix.Client, roomID id.RoomID, body string) *event.Event {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Second)
	since := ""
	for time.Now().Before(deadline) {
		resp, err := c.SyncRequest(ctx, 2000, since, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatalf("%s: sync: %v", c.UserID, err)
		}
		since = resp.NextBatch
		if jr, ok := resp.Rooms.Join[roomID]; ok {
			for _, ev := range jr.Timeline.Events {
				if ev.Type == event.EventMessage {
					if b, _ := ev.Content.Raw["body"].(string); b == body {
						return ev
					}
				}
			}
		}
	}
	t.Fatalf("%s never saw %q in %s", c.UserID, body, roomID)
	return nil
}

func sendText(t *testing.T, c *mautrix.Client, roomID id.RoomID, body string) id.EventID {
	t.Helper()
	resp, err := c.SendText(context.Background(), roomID, body)
	if err != nil {
		t.Fatalf("%s: send %q: %v", c.UserID, body, err)
	}
	return resp.EventID
}

// TestJoinAndTalkAcrossServers: a user of server B joins a public room of
// server A through A, and the two talk both ways; each side's view of the
// room's members agrees.
func TestJoinAndTalkAcrossServers(t *testing.T) {
	ctx := context.Background()
	a := testserver.Start(t, testserver.Federation("127.0.0.1"))
	b := testserver.Start(t, testserver.Federation("127.0.0.2"))
	alice := a.Register("alice", "password-alice")
	bob := b.Register("bob", "password-bob")

	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Across"})
	if err != nil {
		t.Fatal(err)
	}
	roomID := created.RoomID
	if _, err := bob.JoinRoom(ctx, roomID.String(), &mautrix.ReqJoinRoom{Via: []string{a.Config.ServerName}}); err != nil {
		t.Fatalf("bob joins through A: %v", err)
	}

	for i := range 3 {
		sendText(t, alice, roomID, fmt.Sprintf("hello bob %d", i))
		waitForMessage(t, bob, roomID, fmt.Sprintf("hello bob %d", i))
		sendText(t, bob, roomID, fmt.Sprintf("hello alice %d", i))
		waitForMessage(t, alice, roomID, fmt.Sprintf("hello alice %d", i))
	}

	for _, c := range []*mautrix.Client{alice, bob} {
		members, err := c.JoinedMembers(ctx, roomID)
		if err != nil {
			t.Fatalf("%s: joined members: %v", c.UserID, err)
		}
		if len(members.Joined) != 2 {
			t.Fatalf("%s sees members %v, want alice and bob", c.UserID, members.Joined)
		}
		if _, ok := members.Joined[alice.UserID]; !ok {
			t.Fatalf("%s does not see alice joined", c.UserID)
		}
		if _, ok := members.Joined[bob.UserID]; !ok {
			t.Fatalf("%s does not see bob joined", c.UserID)
		}
	}
}
