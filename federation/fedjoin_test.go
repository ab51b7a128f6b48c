package federation_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestCreateRoomInvitesRemoteUser: alice on A starts a DM with bob on B
// the way every client does (createRoom with invite and is_direct); bob
// gets the invite, marked direct, and joins through it.
func TestCreateRoomInvitesRemoteUser(t *testing.T) {
	ctx := context.Background()
	a := testserver.Start(t, testserver.Federation("127.0.0.1"))
	b := testserver.Start(t, testserver.Federation("127.0.0.2"))
	alice := a.Register("alice", "password-alice")
	bob := b.Register("bob", "password-bob")

	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset: "trusted_private_chat", Invite: []id.UserID{bob.UserID}, IsDirect: true,
	})
	if err != nil {
		t.Fatalf("createRoom inviting a user of another server: %v", err)
	}
	roomID := created.RoomID
	syncUntil(t, bob, "the direct invite", func(r *mautrix.RespSync) bool {
		ir, ok := r.Rooms.Invite[roomID]
		if !ok {
			return false
		}
		for _, ev := range ir.State.Events {
			if ev.Type == event.StateMember && ev.GetStateKey() == bob.UserID.String() {
				if ev.Sender != alice.UserID || ev.Content.Raw["is_direct"] != true {
					t.Fatalf("bob's invite: sender %s, content %v; want alice's, with is_direct", ev.Sender, ev.Content.Raw)
				}
				return true
			}
		}
		t.Fatalf("the invite's state lacks bob's member event: %v", ir.State.Events)
		return false
	})
	if _, err := bob.JoinRoomByID(ctx, roomID); err != nil {
		t.Fatalf("bob joins the DM: %v", err)
	}
	waitMembership(t, alice, roomID, bob.UserID, event.MembershipJoin)
	sendText(t, alice, roomID, "hi bob")
	waitForMessage(t, bob, roomID, "hi bob")
}

// TestRejectInviteNobodyCanTake: bob on B is invited by alice on A, who
// then leaves, so no server is left in the room to take bob's rejection.
// Bob still rejects: the invite leaves his sync's invites and shows in
// its leaves (an out-of-band leave, as Synapse does).
func TestRejectInviteNobodyCanTake(t *testing.T) {
	ctx := context.Background()
	a := testserver.Start(t, testserver.Federation("127.0.0.1"))
	b := testserver.Start(t, testserver.Federation("127.0.0.2"))
	alice := a.Register("alice", "password-alice")
	bob := b.Register("bob", "password-bob")

	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Abandoned"})
	if err != nil {
		t.Fatal(err)
	}
	roomID := created.RoomID
	if _, err := alice.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	syncUntil(t, bob, "the invite", func(r *mautrix.RespSync) bool { _, ok := r.Rooms.Invite[roomID]; return ok })
	if _, err := alice.LeaveRoom(ctx, roomID); err != nil {
		t.Fatal(err)
	}
	before, err := bob.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.LeaveRoom(ctx, roomID); err != nil {
		t.Fatalf("bob rejects an invite to a room nobody is in: %v", err)
	}
	after, err := bob.SyncRequest(ctx, 0, before.NextBatch, "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	lr, ok := after.Rooms.Leave[roomID]
	if !ok {
		t.Fatalf("the rejected invite is not in bob's sync leaves: %+v", after.Rooms)
	}
	found := false
	for _, ev := range lr.Timeline.Events {
		if ev.Type == event.StateMember && ev.GetStateKey() == bob.UserID.String() && ev.Content.Raw["membership"] == "leave" {
			found = true
		}
	}
	if !found {
		t.Fatalf("bob's leave is not in the left room's timeline: %+v", lr.Timeline.Events)
	}
	full, err := bob.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := full.Rooms.Invite[roomID]; ok {
		t.Fatal("the rejected invite is still in bob's initial sync")
	}
	// The membership is leave for the client API too: a second leave
	// is refused, not another attempt.
	if m := membership(t, bob, roomID, bob.UserID); m != "" && m != event.MembershipLeave {
		t.Fatalf("bob's membership is %q after rejecting", m)
	}
}

// TestRemoteJoinRefusalPassesThrough: bob on B tries to join a knock-only
// room of A; A's refusal (403 M_FORBIDDEN) reaches bob's client as is,
// not as a 502.
func TestRemoteJoinRefusalPassesThrough(t *testing.T) {
	ctx := context.Background()
	a, b := startPair(t)
	alice := a.Register("alice", "password-alice")
	bob := b.Register("bob", "password-bob")
	knockable, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset:       "private_chat",
		InitialState: []*event.Event{{Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{"join_rule": "knock"}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = bob.JoinRoom(ctx, knockable.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{a.Config.ServerName}})
	var herr mautrix.HTTPError
	if !errors.As(err, &herr) || herr.Response == nil || herr.Response.StatusCode != http.StatusForbidden ||
		herr.RespError == nil || herr.RespError.ErrCode != "M_FORBIDDEN" {
		t.Fatalf("joining a knock-only room of another server: %v; want 403 M_FORBIDDEN", err)
	}
}

// TestKnockRescindedAcrossServers: bob on B knocks on a room of A and
// withdraws the knock; then knocks again and alice denies it. Each time
// both servers see bob's membership become leave.
func TestKnockRescindedAcrossServers(t *testing.T) {
	ctx := context.Background()
	a, b := startPair(t)
	alice := a.Register("alice", "password-alice")
	bob := b.Register("bob", "password-bob")
	knockable, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset:       "private_chat",
		InitialState: []*event.Event{{Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{"join_rule": "knock"}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	roomID := knockable.RoomID
	knock := func() {
		t.Helper()
		if _, err := bob.KnockRoom(ctx, roomID.String(), &mautrix.ReqKnockRoom{Via: []string{a.Config.ServerName}}); err != nil {
			t.Fatalf("bob knocks: %v", err)
		}
		waitMembership(t, alice, roomID, bob.UserID, event.MembershipKnock)
		syncUntil(t, bob, "the knock", func(r *mautrix.RespSync) bool { _, ok := r.Rooms.Knock[roomID]; return ok })
	}
	left := func(what string) {
		t.Helper()
		waitMembership(t, alice, roomID, bob.UserID, event.MembershipLeave)
		deadline := time.Now().Add(10 * time.Second)
		for {
			full, err := bob.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := full.Rooms.Knock[roomID]; !ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the knock is still in bob's sync", what)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	knock()
	if _, err := bob.LeaveRoom(ctx, roomID); err != nil {
		t.Fatalf("bob withdraws his knock: %v", err)
	}
	left("after bob withdrew")

	knock()
	if _, err := alice.KickUser(ctx, roomID, &mautrix.ReqKickUser{UserID: bob.UserID, Reason: "not today"}); err != nil {
		t.Fatalf("alice denies the knock: %v", err)
	}
	left("after alice denied")
}

// TestTimestampToEventAcrossServers: bob on B joins alice's room after a
// message was sent; B holds no history before the join, so bob's
// timestamp_to_event asks A (over the federation endpoint, which is also
// checked directly) and finds the message in both directions.
func TestTimestampToEventAcrossServers(t *testing.T) {
	ctx := context.Background()
	a, b := startPair(t)
	alice := a.Register("alice", "password-alice")
	bob := b.Register("bob", "password-bob")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	roomID := created.RoomID
	time.Sleep(5 * time.Millisecond)
	before := time.Now().UnixMilli()
	time.Sleep(5 * time.Millisecond)
	msg := sendText(t, alice, roomID, "before bob")
	time.Sleep(5 * time.Millisecond)
	after := time.Now().UnixMilli()
	time.Sleep(5 * time.Millisecond)
	if _, err := bob.JoinRoom(ctx, roomID.String(), &mautrix.ReqJoinRoom{Via: []string{a.Config.ServerName}}); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		dir string
		ts  int64
	}{{"f", before}, {"b", after}} {
		var out struct {
			EventID string `json:"event_id"`
		}
		u := bob.BuildClientURL("v1", "rooms", roomID, "timestamp_to_event")
		u += fmt.Sprintf("?ts=%d&dir=%s", tc.ts, tc.dir)
		if _, err := bob.MakeRequest(ctx, http.MethodGet, u, nil, &out); err != nil {
			t.Fatalf("dir=%s: bob's timestamp_to_event: %v", tc.dir, err)
		}
		if out.EventID != msg.String() {
			t.Fatalf("dir=%s: bob's timestamp_to_event found %s, want the message %s", tc.dir, out.EventID, msg)
		}
	}

	// The federation endpoint itself, asked by B.
	key := signingKey(t, b)
	uri := fmt.Sprintf("/_matrix/federation/v1/timestamp_to_event/%s?ts=%d&dir=b", url.PathEscape(roomID.String()), after)
	res := do(t, signedRequest(t, b.ServerName(), a.ServerName(), key.ID, key.PrivateKey, http.MethodGet, uri, nil))
	if res.status != http.StatusOK || res.body["event_id"] != msg.String() {
		t.Fatalf("federation timestamp_to_event: %d %s", res.status, res.raw)
	}
	res = do(t, signedRequest(t, b.ServerName(), a.ServerName(), key.ID, key.PrivateKey, http.MethodGet,
		fmt.Sprintf("/_matrix/federation/v1/timestamp_to_event/%s?ts=%d&dir=sideways", url.PathEscape(roomID.String()), after), nil))
	if res.status != http.StatusBadRequest || res.errcode() != "M_INVALID_PARAM" {
		t.Fatalf("bad dir: %d %s", res.status, res.raw)
	}
}

// TestRestrictedJoinAcrossServers: bob on B, a member of alice's public
// room on A, joins alice's room restricted to that room's members,
// through A, which vouches for him (join_authorised_via_users_server);
// then carol on A joins a restricted room of bob's on B the same way.
func TestRestrictedJoinAcrossServers(t *testing.T) {
	ctx := context.Background()
	a, b := startPair(t)
	alice := a.Register("alice", "password-alice")
	bob := b.Register("bob", "password-bob")
	restrictedTo := func(c *mautrix.Client, parent id.RoomID) id.RoomID {
		t.Helper()
		r, err := c.CreateRoom(ctx, &mautrix.ReqCreateRoom{
			Preset: "private_chat", RoomVersion: "10",
			InitialState: []*event.Event{{Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{
				"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": parent.String()}},
			}}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		return r.RoomID
	}
	public, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10"})
	if err != nil {
		t.Fatal(err)
	}
	restricted := restrictedTo(alice, public.RoomID)
	if _, err := bob.JoinRoom(ctx, restricted.String(), &mautrix.ReqJoinRoom{Via: []string{a.Config.ServerName}}); err == nil {
		t.Fatal("bob joined a restricted room without being in the room it is restricted to")
	}
	if _, err := bob.JoinRoom(ctx, public.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{a.Config.ServerName}}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoom(ctx, restricted.String(), &mautrix.ReqJoinRoom{Via: []string{a.Config.ServerName}}); err != nil {
		t.Fatalf("bob joins the restricted room as a member of the public one: %v", err)
	}
	waitMembership(t, alice, restricted, bob.UserID, event.MembershipJoin)
	var mc event.MemberEventContent
	if err := alice.StateEvent(ctx, restricted, event.StateMember, bob.UserID.String(), &mc); err != nil {
		t.Fatal(err)
	}
	if mc.JoinAuthorisedViaUsersServer != alice.UserID {
		t.Fatalf("bob's join is vouched for by %q, want alice", mc.JoinAuthorisedViaUsersServer)
	}
	sendText(t, bob, restricted, "in through the public room")
	waitForMessage(t, alice, restricted, "in through the public room")

	// The other way: B is the resident server.
	carol := a.Register("carol", "password-carol")
	bobsPublic, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10"})
	if err != nil {
		t.Fatal(err)
	}
	bobsRestricted := restrictedTo(bob, bobsPublic.RoomID)
	if _, err := carol.JoinRoom(ctx, bobsPublic.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{b.Config.ServerName}}); err != nil {
		t.Fatal(err)
	}
	if _, err := carol.JoinRoom(ctx, bobsRestricted.String(), &mautrix.ReqJoinRoom{Via: []string{b.Config.ServerName}}); err != nil {
		t.Fatalf("carol joins bob's restricted room: %v", err)
	}
	waitMembership(t, bob, bobsRestricted, carol.UserID, event.MembershipJoin)
}

// TestRedactionBeforeItsTarget: alice on A redacts an event of bob's that
// A does not have yet (room versions 3+ allow it); the redaction is
// accepted, and the event is stored redacted when it arrives from B.
func TestRedactionBeforeItsTarget(t *testing.T) {
	ctx := context.Background()
	p := joinedPair(t)
	bobKey := signingKey(t, p.b)
	target := p.buildAs(t, p.b, bobKey, p.bob.UserID.String(), "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "secret"})
	resp, err := p.alice.RedactEvent(ctx, p.roomID, id.EventID(target.EventID()), mautrix.ReqRedact{Reason: "spam"})
	if err != nil {
		t.Fatalf("redacting an event A does not have yet: %v", err)
	}
	if _, err := p.sendTxn(t, target.JSON()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ev, err := p.alice.GetEvent(ctx, p.roomID, id.EventID(target.EventID()))
		if err == nil {
			if len(ev.Content.Raw) != 0 || ev.Unsigned.RedactedBecause == nil || ev.Unsigned.RedactedBecause.ID != resp.EventID {
				t.Fatalf("the event arrived unredacted: content %v, redacted_because %v", ev.Content.Raw, ev.Unsigned.RedactedBecause)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the event never arrived: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
