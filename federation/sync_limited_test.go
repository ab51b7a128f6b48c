package federation_test

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestSyncLimitedAfterRemoteJoin: a room joined over federation has
// history that B does not hold. Its timeline in bob's syncs (incremental
// across the join, and initial) must be limited, with a prev_batch from
// which /messages finds the history (backfill), or a client would think
// it has the whole room.
func TestSyncLimitedAfterRemoteJoin(t *testing.T) {
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
	sendText(t, alice, roomID, "before bob")

	before, err := bob.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoom(ctx, roomID.String(), &mautrix.ReqJoinRoom{Via: []string{a.Config.ServerName}}); err != nil {
		t.Fatal(err)
	}
	for name, since := range map[string]string{"incremental": before.NextBatch, "initial": ""} {
		resp, err := bob.SyncRequest(ctx, 0, since, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		jr, ok := resp.Rooms.Join[roomID]
		if !ok {
			t.Fatalf("%s sync: the joined room is missing", name)
		}
		if !jr.Timeline.Limited || jr.Timeline.PrevBatch == "" {
			t.Fatalf("%s sync: timeline limited=%v prev_batch=%q with %d events, want limited with a prev_batch",
				name, jr.Timeline.Limited, jr.Timeline.PrevBatch, len(jr.Timeline.Events))
		}
		// Paging back from prev_batch finds alice's message (and the
		// room's creation) from A.
		found := false
		from := jr.Timeline.PrevBatch
		for range 5 {
			page, err := bob.Messages(ctx, roomID, from, "", mautrix.DirectionBackward, nil, 20)
			if err != nil {
				t.Fatalf("%s sync: messages from prev_batch: %v", name, err)
			}
			for _, ev := range page.Chunk {
				if b, _ := ev.Content.Raw["body"].(string); b == "before bob" {
					found = true
				}
			}
			if page.End == "" || found {
				break
			}
			from = page.End
		}
		if !found {
			t.Fatalf("%s sync: paging back from prev_batch did not reach the history before the join", name)
		}
	}
}

// TestMessagesEndThroughFilteredBackfill: paging back in a room joined
// over federation, with a filter that drops every backfilled event of a
// page, must keep giving an end token while the history goes on: an
// omitted end tells the client it reached the room's start.
func TestMessagesEndThroughFilteredBackfill(t *testing.T) {
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
	sendText(t, alice, roomID, "early")
	// More notes than three backfills of a 5-event page fetch.
	for i := range 40 {
		if _, err := alice.SendMessageEvent(ctx, roomID, event.Type{Type: "org.example.note", Class: event.MessageEventType},
			map[string]any{"n": i}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bob.JoinRoom(ctx, roomID.String(), &mautrix.ReqJoinRoom{Via: []string{a.Config.ServerName}}); err != nil {
		t.Fatal(err)
	}
	filter := &mautrix.FilterPart{Types: []event.Type{event.EventMessage}}
	from := ""
	for page := 0; page < 30; page++ {
		resp, err := bob.Messages(ctx, roomID, from, "", mautrix.DirectionBackward, filter, 5)
		if err != nil {
			t.Fatalf("messages: %v", err)
		}
		for _, ev := range resp.Chunk {
			if b, _ := ev.Content.Raw["body"].(string); b == "early" {
				return
			}
		}
		if resp.End == "" {
			t.Fatalf("page %d: no end (%d events) before reaching alice's early message", page, len(resp.Chunk))
		}
		from = resp.End
	}
	t.Fatal("30 pages without reaching alice's early message")
}
