package roomserver

import (
	"context"
	"crypto/ed25519"
	"errors"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/tessera-hs/tessera/internal/database/dbtest"
)

// TestRejectedPruner: a month after a rejected event arrived, its JSON is
// dropped, and it is still known as rejected (a copy sent again is
// refused); before that, nothing changes.
func TestRejectedPruner(t *testing.T) {
	ctx := context.Background()
	_, key, _ := ed25519.GenerateKey(nil)
	s, db := dagStart(t, dbtest.New(t), key)
	t.Cleanup(s.Close)
	alice := "@alice:dag.test"
	roomID, err := s.CreateRoom(ctx, alice, CreateRoomRequest{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	_, rkey, _ := ed25519.GenerateKey(nil)
	remote := &remoteServer{t: t, name: "remote.test", key: rkey, ver: gomatrixserverlib.MustGetRoomVersion("12")}
	ext, err := s.Extremities(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	auth := authIDs(t, s, roomID, &gomatrixserverlib.ProtoEvent{SenderID: alice, RoomID: roomID, Type: "m.room.message"})
	// bob is no member: his message is rejected.
	bad := remote.build(roomID, "@bob:remote.test", "m.room.message", nil, map[string]string{"body": "bad"}, ext, 99, auth[:1])
	var rej *RejectedError
	if _, err := s.IngestRemote(ctx, "remote.test", bad, false); !errors.As(err, &rej) {
		t.Fatalf("an unauthorised event: got %v, want a rejection", err)
	}
	jsonLen := func() int {
		var n int
		if err := db.QueryRowContext(ctx, `SELECT LENGTH(json) FROM rejected_events WHERE event_id = $1`, bad.EventID()).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if jsonLen() == 0 {
		t.Fatal("the rejected event's JSON is not stored")
	}
	p := s.RejectedPruner()
	if n, err := p.Prune(ctx, time.Now().Add(29*24*time.Hour)); err != nil || n != 0 {
		t.Errorf("prune within the month: %d, %v", n, err)
	}
	if n, err := p.Prune(ctx, time.Now().Add(31*24*time.Hour)); err != nil || n != 1 {
		t.Errorf("prune after a month: %d, %v; want 1", n, err)
	}
	if jsonLen() != 0 {
		t.Error("the JSON of a month-old rejected event is kept")
	}
	if ok, _ := s.IsRejected(ctx, bad.EventID()); !ok {
		t.Error("the pruned rejected event is no longer known as rejected")
	}
	if _, err := s.IngestRemote(ctx, "remote.test", bad, false); !errors.As(err, &rej) {
		t.Errorf("the pruned rejected event sent again: %v, want a rejection", err)
	}
}
