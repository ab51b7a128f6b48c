package federation_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"maunium.net/go/mautrix"
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
	before, err := p.alice.SyncRequest(ctx, 0, "", `{"room":{"timeline":{"limit":1}}}`, false, "")
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.sendTxn(t, chain[59].JSON())
	if err != nil {
		t.Fatal(err)
	}
	if r := res.PDUs[chain[59].EventID()]; r.Error != "" {
		t.Fatalf("the last event of the partition: %q", r.Error)
	}
	waitForMessage(t, p.alice, p.roomID, "p59")
	// alice's next sync has fewer events than her limit, but not all of
	// them: the hole before the fetched ones makes the timeline limited.
	after, err := p.alice.SyncRequest(ctx, 0, before.NextBatch, `{"room":{"timeline":{"limit":100}}}`, false, "")
	if err != nil {
		t.Fatal(err)
	}
	tl := after.Rooms.Join[p.roomID].Timeline
	if len(tl.Events) == 0 || len(tl.Events) >= 60 || !tl.Limited || tl.PrevBatch == "" {
		t.Fatalf("timeline after the partition: %d events, limited %v, prev_batch %q; want fewer than 60, limited, a prev_batch",
			len(tl.Events), tl.Limited, tl.PrevBatch)
	}
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

// TestInviteRoomStateChecked: for a v12 room, an invite whose
// invite_room_state lacks the room's create event as a full PDU (empty,
// stripped, or another room's) is refused with 400 M_MISSING_PARAM; with
// it, the invite is signed.
func TestInviteRoomStateChecked(t *testing.T) {
	ctx := context.Background()
	a, b := startPair(t)
	bob := b.Register("bob", "password-bob")
	rooms := b.Server().Rooms
	newRoom := func() (string, []json.RawMessage) {
		created, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "12", Name: "Come in"})
		if err != nil {
			t.Fatal(err)
		}
		roomID := created.RoomID.String()
		var state []json.RawMessage
		for _, typ := range []string{"m.room.create", "m.room.join_rules", "m.room.name"} {
			ev, err := rooms.StateEvent(ctx, roomID, bob.UserID.String(), typ, "")
			if err != nil {
				t.Fatal(err)
			}
			state = append(state, ev.JSON())
		}
		return roomID, state
	}
	roomID, state := newRoom()
	_, otherState := newRoom()
	key := signingKey(t, b)
	alice := "@alice:" + string(a.ServerName())
	a.Register("alice", "password-alice")
	// bob's invite of alice, as B builds it.
	ext, err := rooms.Extremities(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	var auth []string
	var depth int64
	for _, want := range [][2]string{{"m.room.power_levels", ""}, {"m.room.member", bob.UserID.String()}, {"m.room.join_rules", ""}} {
		ev, err := rooms.StateEvent(ctx, roomID, bob.UserID.String(), want[0], want[1])
		if err != nil {
			t.Fatal(err)
		}
		auth = append(auth, ev.EventID())
		depth = max(depth, ev.Depth())
	}
	proto := &gomatrixserverlib.ProtoEvent{SenderID: bob.UserID.String(), RoomID: roomID, Type: "m.room.member", StateKey: &alice,
		PrevEvents: ext, AuthEvents: auth, Depth: depth + 10}
	if err := proto.SetContent(map[string]string{"membership": "invite"}); err != nil {
		t.Fatal(err)
	}
	invite, err := gomatrixserverlib.MustGetRoomVersion("12").NewEventBuilderFromProtoEvent(proto).Build(time.Now(), b.ServerName(), key.ID, key.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	var stripped []json.RawMessage
	for _, raw := range state {
		var full map[string]any
		_ = json.Unmarshal(raw, &full)
		s, _ := json.Marshal(map[string]any{"type": full["type"], "state_key": full["state_key"], "content": full["content"], "sender": full["sender"]})
		stripped = append(stripped, s)
	}
	uri := "/_matrix/federation/v2/invite/" + url.PathEscape(roomID) + "/" + url.PathEscape(invite.EventID())
	for _, tc := range []struct {
		name      string
		roomState []json.RawMessage
		status    int
		errcode   string
	}{
		{"none", []json.RawMessage{}, 400, "M_MISSING_PARAM"},
		{"stripped", stripped, 400, "M_MISSING_PARAM"},
		{"another room's", otherState, 400, "M_MISSING_PARAM"},
		{"full PDUs", state, 200, ""},
	} {
		body := map[string]any{"event": json.RawMessage(invite.JSON()), "room_version": "12", "invite_room_state": tc.roomState}
		res := do(t, signedRequest(t, b.ServerName(), a.ServerName(), gomatrixserverlib.KeyID(key.ID), key.PrivateKey, "PUT", uri, body))
		if res.status != tc.status || res.errcode() != tc.errcode {
			t.Fatalf("%s invite_room_state: %d %s, want %d %q: %s", tc.name, res.status, res.errcode(), tc.status, tc.errcode, res.raw)
		}
	}
}
