package federation_test

import (
	"context"
	"fmt"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestBackfillThroughMessages: bob joins a room of A with history; paging
// back with /messages on B fetches the history from A (backfill), in
// order, without duplicates, and it does not appear in bob's sync as new.
func TestBackfillThroughMessages(t *testing.T) {
	ctx := context.Background()
	a := testserver.Start(t, testserver.Federation("127.0.0.1"))
	b := testserver.Start(t, testserver.Federation("127.0.0.2"))
	alice := a.Register("alice", "password-alice")
	bob := b.Register("bob", "password-bob")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat",
		InitialState: []*event.Event{{Type: event.StateHistoryVisibility, Content: event.Content{Raw: map[string]any{"history_visibility": "shared"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	roomID := created.RoomID
	const n = 30
	for i := range n {
		sendText(t, alice, roomID, fmt.Sprintf("old %02d", i))
	}
	if _, err := bob.JoinRoom(ctx, roomID.String(), &mautrix.ReqJoinRoom{Via: []string{a.Config.ServerName}}); err != nil {
		t.Fatal(err)
	}
	sendText(t, alice, roomID, "new")
	waitForMessage(t, bob, roomID, "new")

	var bodies []string
	from := ""
	for range 20 {
		resp, err := bob.Messages(ctx, roomID, from, "", mautrix.DirectionBackward, nil, 10)
		if err != nil {
			t.Fatalf("messages: %v", err)
		}
		for _, ev := range resp.Chunk {
			if ev.Type == event.EventMessage {
				b, _ := ev.Content.Raw["body"].(string)
				bodies = append(bodies, b)
			}
		}
		if resp.End == "" {
			break
		}
		from = resp.End
	}
	want := []string{"new"}
	for i := n - 1; i >= 0; i-- {
		want = append(want, fmt.Sprintf("old %02d", i))
	}
	if fmt.Sprint(bodies) != fmt.Sprint(want) {
		t.Fatalf("bob's history through B:\n got %v\nwant %v", bodies, want)
	}
	// The history is not news: a sync from now sees nothing of it.
	first, err := bob.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	sendText(t, alice, roomID, "later")
	waitForMessage(t, bob, roomID, "later")
	resp, err := bob.SyncRequest(ctx, 0, first.NextBatch, "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range resp.Rooms.Join[roomID].Timeline.Events {
		if b, _ := ev.Content.Raw["body"].(string); b != "later" && ev.Type == event.EventMessage {
			t.Fatalf("an incremental sync carried backfilled history: %q", b)
		}
	}
}
