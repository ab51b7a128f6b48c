package federation_test

import (
	"context"
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

// waitForMessage syncs c until a message with body appears in room, and
// returns its event.
func waitForMessage(t *testing.T, c *mautrix.Client, roomID id.RoomID, body string) *event.Event {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Second)
	since := ""
	for time.Now().Before(deadline) {
		resp, err := c.SyncRequest(ctx, 2000, since, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatalf("%s: sync: %v", c.UserID, err)
		}
		since = resp.NextBatch
		if jr, ok := resp.Rooms.Join[roomID]; ok {
			for _, ev := range jr.Timeline.Events {
				if ev.Type == event.EventMessage {
					if b, _ := ev.Content.Raw["body"].(string); b == body {
						return ev
					}
				}
			}
		}
	}
	t.Fatalf("%s never saw %q in %s", c.UserID, body, roomID)
	return nil
}

func sendText(t *testing.T, c *mautrix.Client, roomID id.RoomID, body string) id.EventID {
	t.Helper()
	resp, err := c.SendText(context.Background(), roomID, body)
	if err != nil {
		t.Fatalf("%s: send %q: %v", c.UserID, body, err)
	}
	return resp.EventID
}

// TestJoinAndTalkAcrossServers: a user of server B joins a public room of
// server A through A, and the two talk both ways; each side's view of the
// room's members agrees.
func TestJoinAndTalkAcrossServers(t *testing.T) {
	ctx := context.Background()
	a := testserver.Start(t, testserver.Federation("127.0.0.1"))
	b := testserver.Start(t, testserver.Federation("127.0.0.2"))
	alice := a.Register("alice", "password-alice")
	bob := b.Register("bob", "password-bob")

	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Across"})
	if err != nil {
		t.Fatal(err)
	}
	roomID := created.RoomID
	if _, err := bob.JoinRoom(ctx, roomID.String(), &mautrix.ReqJoinRoom{Via: []string{a.Config.ServerName}}); err != nil {
		t.Fatalf("bob joins through A: %v", err)
	}

	// Bob's first sync has the room with its state, which came with the
	// join (outliers, without stream positions).
	first, err := bob.SyncRequest(ctx, 0, "", "", true, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	name := ""
	for _, ev := range append(first.Rooms.Join[roomID].State.Events, first.Rooms.Join[roomID].Timeline.Events...) {
		if ev.Type == event.StateRoomName {
			name, _ = ev.Content.Raw["name"].(string)
		}
	}
	if name != "Across" {
		t.Fatalf("bob's initial sync of the joined room lacks its name: %+v", first.Rooms.Join[roomID].State.Events)
	}

	for i := range 3 {
		sendText(t, alice, roomID, fmt.Sprintf("hello bob %d", i))
		waitForMessage(t, bob, roomID, fmt.Sprintf("hello bob %d", i))
		sendText(t, bob, roomID, fmt.Sprintf("hello alice %d", i))
		waitForMessage(t, alice, roomID, fmt.Sprintf("hello alice %d", i))
	}

	for _, c := range []*mautrix.Client{alice, bob} {
		members, err := c.JoinedMembers(ctx, roomID)
		if err != nil {
			t.Fatalf("%s: joined members: %v", c.UserID, err)
		}
		if len(members.Joined) != 2 {
			t.Fatalf("%s sees members %v, want alice and bob", c.UserID, members.Joined)
		}
		if _, ok := members.Joined[alice.UserID]; !ok {
			t.Fatalf("%s does not see alice joined", c.UserID)
		}
		if _, ok := members.Joined[bob.UserID]; !ok {
			t.Fatalf("%s does not see bob joined", c.UserID)
		}
	}
}

// syncUntil syncs c until cond holds for a response, or fails.
func syncUntil(t *testing.T, c *mautrix.Client, what string, cond func(*mautrix.RespSync) bool) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Second)
	since := ""
	for time.Now().Before(deadline) {
		resp, err := c.SyncRequest(ctx, 2000, since, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatalf("%s: sync: %v", c.UserID, err)
		}
		if cond(resp) {
			return
		}
		since = resp.NextBatch
	}
	t.Fatalf("%s: never saw %s", c.UserID, what)
}

func membership(t *testing.T, c *mautrix.Client, roomID id.RoomID, userID id.UserID) event.Membership {
	t.Helper()
	var mc event.MemberEventContent
	if err := c.StateEvent(context.Background(), roomID, event.StateMember, userID.String(), &mc); err != nil {
		return ""
	}
	return mc.Membership
}

func waitMembership(t *testing.T, c *mautrix.Client, roomID id.RoomID, userID id.UserID, want event.Membership) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if membership(t, c, roomID, userID) == want {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s never saw %s's membership become %s (is %q)", c.UserID, userID, want, membership(t, c, roomID, userID))
}

// TestInviteLeaveBanAcrossServers: alice on A invites bob on B to a
// private room; bob sees the invite (with the room's name) in his sync,
// joins through it without naming a server, leaves, is invited again and
// joins, and is banned: each server sees each membership.
func TestInviteLeaveBanAcrossServers(t *testing.T) {
	ctx := context.Background()
	a := testserver.Start(t, testserver.Federation("127.0.0.1"))
	b := testserver.Start(t, testserver.Federation("127.0.0.2"))
	alice := a.Register("alice", "password-alice")
	bob := b.Register("bob", "password-bob")

	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Secret plans"})
	if err != nil {
		t.Fatal(err)
	}
	roomID := created.RoomID
	if _, err := alice.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatalf("invite bob: %v", err)
	}
	syncUntil(t, bob, "the invite", func(r *mautrix.RespSync) bool {
		ir, ok := r.Rooms.Invite[roomID]
		if !ok {
			return false
		}
		var name, inviter string
		for _, ev := range ir.State.Events {
			if ev.Type == event.StateRoomName {
				name, _ = ev.Content.Raw["name"].(string)
			}
			if ev.Type == event.StateMember && ev.GetStateKey() == bob.UserID.String() {
				inviter = ev.Sender.String()
			}
		}
		if name != "Secret plans" || inviter != alice.UserID.String() {
			t.Fatalf("invite state: name %q, inviter %q", name, inviter)
		}
		return true
	})
	if _, err := bob.JoinRoomByID(ctx, roomID); err != nil {
		t.Fatalf("bob joins through the invite: %v", err)
	}
	waitMembership(t, alice, roomID, bob.UserID, event.MembershipJoin)
	sendText(t, bob, roomID, "thanks for the invite")
	waitForMessage(t, alice, roomID, "thanks for the invite")

	if _, err := bob.LeaveRoom(ctx, roomID); err != nil {
		t.Fatalf("bob leaves: %v", err)
	}
	waitMembership(t, alice, roomID, bob.UserID, event.MembershipLeave)

	if _, err := alice.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatalf("invite bob again: %v", err)
	}
	waitMembership(t, alice, roomID, bob.UserID, event.MembershipInvite)
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := bob.JoinRoomByID(ctx, roomID)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob rejoins: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitMembership(t, alice, roomID, bob.UserID, event.MembershipJoin)
	sendText(t, alice, roomID, "welcome back")
	waitForMessage(t, bob, roomID, "welcome back")

	if _, err := alice.BanUser(ctx, roomID, &mautrix.ReqBanUser{UserID: bob.UserID, Reason: "test"}); err != nil {
		t.Fatalf("ban bob: %v", err)
	}
	waitMembership(t, bob, roomID, bob.UserID, event.MembershipBan)
	// Bob's server no longer has anyone in the room: his messages cannot
	// be sent, and alice's do not reach him.
	if _, err := bob.SendText(ctx, roomID, "let me back"); err == nil {
		t.Fatal("a banned user could send")
	}
}

// TestProfileAndAliasAcrossServers: bob on B reads alice's profile on A,
// resolves an alias of A and joins the room by it.
func TestProfileAndAliasAcrossServers(t *testing.T) {
	ctx := context.Background()
	a := testserver.Start(t, testserver.Federation("127.0.0.1"))
	b := testserver.Start(t, testserver.Federation("127.0.0.2"))
	alice := a.Register("alice", "password-alice")
	bob := b.Register("bob", "password-bob")
	if err := alice.SetDisplayName(ctx, "Alice of A"); err != nil {
		t.Fatal(err)
	}
	prof, err := bob.GetProfile(ctx, alice.UserID)
	if err != nil {
		t.Fatalf("bob reads alice's profile: %v", err)
	}
	if prof.DisplayName != "Alice of A" {
		t.Fatalf("alice's display name through B: %q", prof.DisplayName)
	}
	_, err = bob.GetProfile(ctx, id.NewUserID("nobody", a.Config.ServerName))
	if herr, ok := err.(mautrix.HTTPError); !ok || herr.RespError == nil || herr.RespError.ErrCode != "M_NOT_FOUND" {
		t.Fatalf("an unknown remote user's profile: %v", err)
	}

	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "lobby"})
	if err != nil {
		t.Fatal(err)
	}
	alias := id.NewRoomAlias("lobby", a.Config.ServerName)
	res, err := bob.ResolveAlias(ctx, alias)
	if err != nil {
		t.Fatalf("bob resolves %s: %v", alias, err)
	}
	if res.RoomID != created.RoomID || len(res.Servers) == 0 {
		t.Fatalf("%s resolved to %s %v, want %s", alias, res.RoomID, res.Servers, created.RoomID)
	}
	joined, err := bob.JoinRoom(ctx, alias.String(), nil)
	if err != nil {
		t.Fatalf("bob joins by alias: %v", err)
	}
	if joined.RoomID != created.RoomID {
		t.Fatalf("joined %s, want %s", joined.RoomID, created.RoomID)
	}
	waitMembership(t, alice, created.RoomID, bob.UserID, event.MembershipJoin)
}

// TestOpenIDAcrossServers: bob's OpenID token from B is checked by asking
// B's federation API, as a third party (an SFU's token service) does; a
// wrong token is refused.
func TestOpenIDAcrossServers(t *testing.T) {
	ctx := context.Background()
	b := testserver.Start(t, testserver.Federation("127.0.0.2"))
	bob := b.Register("bob", "password-bob")
	var tok struct {
		AccessToken      string `json:"access_token"`
		TokenType        string `json:"token_type"`
		MatrixServerName string `json:"matrix_server_name"`
		ExpiresIn        int    `json:"expires_in"`
	}
	if _, err := bob.MakeRequest(ctx, http.MethodPost, bob.BuildClientURL("v3", "user", bob.UserID, "openid", "request_token"), struct{}{}, &tok); err != nil {
		t.Fatal(err)
	}
	if tok.TokenType != "Bearer" || tok.MatrixServerName != b.Config.ServerName || tok.ExpiresIn != 3600 || tok.AccessToken == "" {
		t.Fatalf("token %+v", tok)
	}
	// Someone else's token: 403.
	_, err := bob.MakeRequest(ctx, http.MethodPost, bob.BuildClientURL("v3", "user", "@alice:"+b.Config.ServerName, "openid", "request_token"), struct{}{}, nil)
	if herr, ok := err.(mautrix.HTTPError); !ok || herr.RespError == nil || herr.RespError.ErrCode != "M_FORBIDDEN" {
		t.Fatalf("a token for another user: %v", err)
	}
	tests := []struct {
		token   string
		status  int
		errcode string
	}{
		{url.QueryEscape(tok.AccessToken), 200, ""},
		{"wrong", 401, "M_UNKNOWN_TOKEN"},
		{"", 401, "M_MISSING_TOKEN"},
	}
	for _, tt := range tests {
		r := request(t, http.MethodGet, b.FederationURL+"/_matrix/federation/v1/openid/userinfo?access_token="+tt.token, nil)
		if r.status != tt.status || r.errcode() != tt.errcode {
			t.Fatalf("userinfo with %q: %d %s", tt.token, r.status, r.errcode())
		}
		if tt.status == 200 && r.body["sub"] != bob.UserID.String() {
			t.Fatalf("userinfo sub = %v", r.body["sub"])
		}
	}
}

// TestPublicRoomsOfAnotherServer: bob on B lists A's room directory, and
// searches it.
func TestPublicRoomsOfAnotherServer(t *testing.T) {
	ctx := context.Background()
	a := testserver.Start(t, testserver.Federation("127.0.0.1"))
	b := testserver.Start(t, testserver.Federation("127.0.0.2"))
	alice := a.Register("alice", "password-alice")
	bob := b.Register("bob", "password-bob")
	for _, name := range []string{"Gardening", "Cycling"} {
		if _, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: name, Visibility: "public"}); err != nil {
			t.Fatal(err)
		}
	}
	all, err := bob.PublicRooms(ctx, &mautrix.ReqPublicRooms{Server: a.Config.ServerName})
	if err != nil {
		t.Fatalf("A's directory through B: %v", err)
	}
	if len(all.Chunk) != 2 {
		t.Fatalf("A's directory through B has %d rooms, want 2", len(all.Chunk))
	}
	var found mautrix.RespPublicRooms
	u := bob.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "publicRooms"}, map[string]string{"server": a.Config.ServerName})
	if _, err := bob.MakeRequest(ctx, http.MethodPost, u, map[string]any{"filter": map[string]any{"generic_search_term": "cycl"}}, &found); err != nil {
		t.Fatal(err)
	}
	if len(found.Chunk) != 1 || found.Chunk[0].Name != "Cycling" {
		t.Fatalf("searching A's directory for cycl: %+v", found.Chunk)
	}
}
