package federation_test

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestRejectInviteAndKnockAcrossServers: bob on B rejects an invite to a
// room of A that B holds no copy of (make_leave and send_leave through A),
// then knocks on another room of A (make_knock and send_knock), sees the
// knock in his sync, is let in by alice and joins.
func TestRejectInviteAndKnockAcrossServers(t *testing.T) {
	ctx := context.Background()
	a := testserver.Start(t, testserver.Federation("127.0.0.1"))
	b := testserver.Start(t, testserver.Federation("127.0.0.2"))
	alice := a.Register("alice", "password-alice")
	bob := b.Register("bob", "password-bob")

	private, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Not for bob"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.InviteUser(ctx, private.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	syncUntil(t, bob, "the invite", func(r *mautrix.RespSync) bool { _, ok := r.Rooms.Invite[private.RoomID]; return ok })
	if _, err := bob.LeaveRoom(ctx, private.RoomID); err != nil {
		t.Fatalf("bob rejects the invite: %v", err)
	}
	waitMembership(t, alice, private.RoomID, bob.UserID, event.MembershipLeave)
	syncUntil(t, bob, "the rejected invite gone", func(r *mautrix.RespSync) bool {
		_, invited := r.Rooms.Invite[private.RoomID]
		return !invited
	})

	knockable, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset: "private_chat", Name: "Knock first",
		InitialState: []*event.Event{{Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{"join_rule": "knock"}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.KnockRoom(ctx, knockable.RoomID.String(), &mautrix.ReqKnockRoom{Via: []string{a.Config.ServerName}, Reason: "let me in"}); err != nil {
		t.Fatalf("bob knocks: %v", err)
	}
	waitMembership(t, alice, knockable.RoomID, bob.UserID, event.MembershipKnock)
	syncUntil(t, bob, "the knock", func(r *mautrix.RespSync) bool {
		kr, ok := r.Rooms.Knock[knockable.RoomID]
		if !ok {
			return false
		}
		for _, ev := range kr.State.Events {
			if ev.Type == event.StateRoomName {
				return ev.Content.Raw["name"] == "Knock first"
			}
		}
		t.Fatalf("the knock's stripped state lacks the room name: %v", kr.State.Events)
		return false
	})
	if _, err := alice.InviteUser(ctx, knockable.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatalf("alice lets bob in: %v", err)
	}
	if _, err := bob.JoinRoomByID(ctx, knockable.RoomID); err != nil {
		t.Fatalf("bob joins after his knock: %v", err)
	}
	waitMembership(t, alice, knockable.RoomID, bob.UserID, event.MembershipJoin)
}
