package federation_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/signingkey"
)

// TestLongPartitionKeepsTheGap: while A and B are apart, bob of B sends
// 60 messages; then the last reaches A. get_missing_events brings the 50
// before it, the oldest of which still lacks its prev_events: it starts
// from the state B gives at it, and the 50 are kept (they were dropped,
// leaving a hole in A's history that /messages and /backfill could not
// cross).
func TestLongPartitionKeepsTheGap(t *testing.T) {
	p := joinedPair(t)
	ctx := context.Background()
	bKey, err := signingkey.Load(p.b.Config.SigningKeyPath)
	if err != nil {
		t.Fatal(err)
	}
	bob := p.bob.UserID.String()
	first := p.buildAs(t, p.b, bKey, bob, "m.room.message", nil, map[string]string{"msgtype": "m.text", "body": "p0"})
	chain := []gomatrixserverlib.PDU{first}
	for i := 1; i < 60; i++ {
		prev := chain[i-1]
		proto := &gomatrixserverlib.ProtoEvent{SenderID: bob, RoomID: p.roomID.String(), Type: "m.room.message",
			PrevEvents: []string{prev.EventID()}, AuthEvents: first.AuthEventIDs(), Depth: prev.Depth() + 1}
		if err := proto.SetContent(map[string]string{"msgtype": "m.text", "body": fmt.Sprintf("p%d", i)}); err != nil {
			t.Fatal(err)
		}
		ev, err := gomatrixserverlib.MustGetRoomVersion(first.Version()).NewEventBuilderFromProtoEvent(proto).
			Build(time.Now(), p.b.ServerName(), bKey.ID, bKey.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, ev)
	}
	// B holds them all; A gets none but the last.
	for _, ev := range chain {
		if _, err := p.b.Server().Rooms.IngestRemote(ctx, p.b.ServerName(), ev, false); err != nil {
			t.Fatalf("B stores %s: %v", ev.EventID(), err)
		}
	}
	res, err := p.sendTxn(t, chain[59].JSON())
	if err != nil {
		t.Fatal(err)
	}
	if r := res.PDUs[chain[59].EventID()]; r.Error != "" {
		t.Fatalf("the last event of the partition: %q", r.Error)
	}
	waitForMessage(t, p.alice, p.roomID, "p59")
	// The 50 that get_missing_events brought are in A's history.
	for _, i := range []int{10, 30, 58} {
		ev, err := p.alice.GetEvent(ctx, p.roomID, id.EventID(chain[i].EventID()))
		if err != nil {
			t.Fatalf("event p%d of the partition is not in A's history: %v", i, err)
		}
		if body, _ := ev.Content.Raw["body"].(string); body != fmt.Sprintf("p%d", i) {
			t.Fatalf("event p%d has body %q", i, body)
		}
	}
}
