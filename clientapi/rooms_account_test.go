package clientapi_test

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestProfileChangeUpdatesMemberEvents: a new display name reaches the
// user's member event in each joined room, as clients read names there.
func TestProfileChangeUpdatesMemberEvents(t *testing.T) {
	t.Parallel()
	bg := context.Background()
	srv := testserver.Start(t)
	alice := srv.Register("alice", "correct horse")
	var rooms []*mautrix.RespCreateRoom
	for i := 0; i < 2; i++ {
		r, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		rooms = append(rooms, r)
	}
	if err := alice.SetDisplayName(bg, "Alice Liddell"); err != nil {
		t.Fatal(err)
	}
	for _, r := range rooms {
		var m event.MemberEventContent
		if err := alice.StateEvent(bg, r.RoomID, event.StateMember, alice.UserID.String(), &m); err != nil {
			t.Fatal(err)
		}
		if m.Displayname != "Alice Liddell" || m.Membership != event.MembershipJoin {
			t.Fatalf("member event in %s: %+v", r.RoomID, m)
		}
	}
	// Setting the same name again sends no new event.
	before, err := alice.Messages(bg, rooms[0].RoomID, "", "", mautrix.DirectionBackward, nil, 50)
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.SetDisplayName(bg, "Alice Liddell"); err != nil {
		t.Fatal(err)
	}
	after, err := alice.Messages(bg, rooms[0].RoomID, "", "", mautrix.DirectionBackward, nil, 50)
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Chunk) != len(before.Chunk) {
		t.Fatalf("an unchanged name sent %d new events", len(after.Chunk)-len(before.Chunk))
	}
}

// TestDeactivationLeavesRooms: a deactivated user leaves their rooms and
// their invites are rejected.
func TestDeactivationLeavesRooms(t *testing.T) {
	t.Parallel()
	bg := context.Background()
	srv := testserver.Start(t)
	alice := srv.Register("alice", "correct horse")
	bob := srv.Register("bob", "correct horse")
	joined, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoom(bg, joined.RoomID.String(), nil); err != nil {
		t.Fatal(err)
	}
	invited, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = bob.MakeRequest(bg, "POST", bob.BuildClientURL("v3", "account", "deactivate"), map[string]any{
		"auth": map[string]any{"type": "m.login.password", "password": "correct horse",
			"identifier": map[string]string{"type": "m.id.user", "user": "bob"}},
	}, nil)
	if err != nil {
		t.Fatalf("deactivate: %v", err)
	}
	for _, room := range []id.RoomID{joined.RoomID, invited.RoomID} {
		var m event.MemberEventContent
		if err := alice.StateEvent(bg, room, event.StateMember, bob.UserID.String(), &m); err != nil {
			t.Fatal(err)
		}
		if m.Membership != event.MembershipLeave {
			t.Fatalf("bob's membership in %s after deactivation: %s, want leave", room, m.Membership)
		}
	}
}
