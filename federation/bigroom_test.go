package federation_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestJoinRoomWith1000StateEvents: joining over federation a room whose
// state holds 1,000 events brings all of them, verified, and the room
// works afterwards.
func TestJoinRoomWith1000StateEvents(t *testing.T) {
	ctx := context.Background()
	a := testserver.Start(t, testserver.Federation("127.0.0.1"))
	b := testserver.Start(t, testserver.Federation("127.0.0.2"))
	alice := a.Register("alice", "password-alice")
	bob := b.Register("bob", "password-bob")
	const n = 1000
	initial := make([]*event.Event, 0, n)
	typ := event.Type{Type: "org.tessera.test.item", Class: event.StateEventType}
	for i := range n {
		key := fmt.Sprintf("item%04d", i)
		initial = append(initial, &event.Event{Type: typ, StateKey: &key, Content: event.Content{Raw: map[string]any{"n": i}}})
	}
	// Creating a room with 1,000 state events takes seconds under -race and
	// more on a loaded machine: more than the test client's 30 s (CI saw it).
	alice.Client.Timeout = 3 * time.Minute
	bob.Client.Timeout = 3 * time.Minute
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: initial})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := bob.JoinRoom(ctx, created.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{a.Config.ServerName}}); err != nil {
		t.Fatalf("join: %v", err)
	}
	t.Logf("joined a room of %d state events over federation in %v", n+6, time.Since(start))
	state, err := bob.State(ctx, created.RoomID)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(state[typ]); got != n {
		t.Fatalf("bob's server has %d of the %d state events", got, n)
	}
	var content map[string]any
	if err := bob.StateEvent(ctx, created.RoomID, typ, "item0500", &content); err != nil || content["n"] != float64(500) {
		t.Fatalf("item0500 through B: %v %v", content, err)
	}
	sendText(t, alice, created.RoomID, "big room works")
	waitForMessage(t, bob, created.RoomID, "big room works")
}
