package clientapi_test

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/tessera-hs/tessera/internal/testserver"
)

func TestSmokeRoomSendMessages(t *testing.T) {
	ctx := context.Background()
	srv := testserver.Start(t)
	alice := srv.Register("alice", "correct horse")
	bob := srv.Register("bob", "correct horse")
	resp, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Test", RoomAliasName: "test"})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if _, err := bob.JoinRoom(ctx, "#test:tessera.test", nil); err != nil {
		t.Fatalf("join: %v", err)
	}
	var ids []string
	for i := 0; i < 5; i++ {
		r, err := bob.SendText(ctx, resp.RoomID, "hello")
		if err != nil {
			t.Fatalf("send: %v", err)
		}
		ids = append(ids, r.EventID.String())
	}
	msgs, err := alice.Messages(ctx, resp.RoomID, "", "", mautrix.DirectionBackward, nil, 3)
	if err != nil {
		t.Fatalf("messages: %v", err)
	}
	if len(msgs.Chunk) != 3 || msgs.Chunk[0].ID.String() != ids[4] || msgs.End == "" {
		t.Fatalf("messages: %d events, first %s, end %q", len(msgs.Chunk), msgs.Chunk[0].ID, msgs.End)
	}
	if msgs.Chunk[0].Type != event.EventMessage {
		t.Fatalf("type %s", msgs.Chunk[0].Type)
	}
	t.Logf("room %s", resp.RoomID)
}
