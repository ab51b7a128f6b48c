package roomserver

import (
	"context"
	"crypto/ed25519"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/tessera-hs/tessera/internal/database/dbtest"
)

// TestDeleteForwardExtremities: a room forked by another server's event
// has two forward extremities; deleting them keeps only the most recent,
// and the room's next event is built on it alone.
func TestDeleteForwardExtremities(t *testing.T) {
	ctx := context.Background()
	_, key, _ := ed25519.GenerateKey(nil)
	s, _ := dagStart(t, dbtest.New(t), key)
	t.Cleanup(s.Close)
	alice := "@alice:dag.test"
	roomID, err := s.CreateRoom(ctx, alice, CreateRoomRequest{Preset: "public_chat", RoomVersion: ptrTo("12")})
	if err != nil {
		t.Fatal(err)
	}
	remote, join := remoteJoin(t, s, roomID)
	bob := "@bob:remote.test"
	msgAuth := authIDs(t, s, roomID, &gomatrixserverlib.ProtoEvent{SenderID: bob, RoomID: roomID, Type: "m.room.message"})
	local := sendText(t, s, roomID, alice, "ours")
	fork := remote.build(roomID, bob, "m.room.message", nil, map[string]string{"msgtype": "m.text", "body": "theirs"},
		[]string{join.EventID()}, join.Depth()+1, msgAuth)
	if _, err := s.IngestRemote(ctx, "remote.test", fork, false); err != nil {
		t.Fatal(err)
	}
	if ext, _ := s.Extremities(ctx, roomID); !sameSet(ext, []string{local.EventID(), fork.EventID()}) {
		t.Fatalf("extremities before: %v", ext)
	}

	n, err := s.DeleteForwardExtremities(ctx, roomID)
	if err != nil || n != 1 {
		t.Fatalf("DeleteForwardExtremities = %d, %v; want 1", n, err)
	}
	if ext, _ := s.Extremities(ctx, roomID); !sameSet(ext, []string{fork.EventID()}) {
		t.Fatalf("extremities after: %v, want only the most recent, %s", ext, fork.EventID())
	}
	next, err := s.Send(ctx, SendRequest{RoomID: roomID, Sender: alice, Type: "m.room.message",
		Content: []byte(`{"msgtype":"m.text","body":"after"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if prev := next.PrevEventIDs(); len(prev) != 1 || prev[0] != fork.EventID() {
		t.Fatalf("the next event's prev_events are %v, want [%s]", prev, fork.EventID())
	}
	if n, err := s.DeleteForwardExtremities(ctx, roomID); err != nil || n != 0 {
		t.Fatalf("with one extremity: %d, %v; want 0", n, err)
	}
}
